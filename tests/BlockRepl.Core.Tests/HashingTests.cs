using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Core.Tests;

public class HashingTests
{
    [Fact]
    public void BlockHashOfEmptyInputIsTheXxh3_128KnownAnswer()
    {
        // XXH3-128, seed 0, of the empty input (xxhsum -H2 of an empty file).
        var h = BlockHash.Compute(ReadOnlySpan<byte>.Empty);
        Assert.Equal(0x99aa06d3014798d8UL, h.High);
        Assert.Equal(0x6001c324468d497fUL, h.Low);
    }

    [Fact]
    public void ChecksumOfEmptyInputIsTheXxh3_64KnownAnswer()
    {
        Assert.Equal(0x2d06800538d394c2UL, Checksum.Compute(ReadOnlySpan<byte>.Empty));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(128)]
    [InlineData(129)]
    [InlineData(240)]
    [InlineData(241)]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void BlockHashEqualsSystemIoHashingXxHash128(int length)
    {
        var data = TestData.Random(length, (ulong)length);
        var h = BlockHash.Compute(data);
        UInt128 expected = XxHash128.HashToUInt128(data);
        Assert.Equal(expected, new UInt128(h.High, h.Low));
        Assert.Equal(XxHash3.HashToUInt64(data), Checksum.Compute(data));
    }

    [Fact]
    public void BlockHashIsStableForKnownContent()
    {
        // Pins the stored change-map fingerprint: a different value here means every existing map is invalid.
        var h = BlockHash.Compute("abc"u8);
        Assert.Equal(XxHash128.HashToUInt128("abc"u8), new UInt128(h.High, h.Low));
        Assert.Equal(h, BlockHash.Compute(Encoding.ASCII.GetBytes("abc")));
        Assert.NotEqual(h, BlockHash.Compute("abd"u8));
    }

    [Fact]
    public void BlockHashWriteReadRoundTripsInLittleEndian()
    {
        var h = BlockHash.Compute(TestData.Random(4096, 7));
        var bytes = new byte[BlockHash.Size];
        h.Write(bytes);
        Assert.Equal(h, BlockHash.Read(bytes));
        Assert.Equal(h.Low, BitConverter.ToUInt64(bytes, 0));
        Assert.Equal(h.High, BitConverter.ToUInt64(bytes, 8));
    }

    [Fact]
    public void DefaultBlockHashIsZeroAndComputedOnesAreNot()
    {
        Assert.True(default(BlockHash).IsZero);
        Assert.False(BlockHash.Compute(new byte[65536]).IsZero);
    }

    [Fact]
    public void ChunkIdOfAbcIsTheSha256KnownVector()
    {
        var id = ChunkId.Compute("abc"u8);
        Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", id.ToString());
    }

    [Fact]
    public void ChunkIdOfEmptyInputIsTheSha256KnownVector()
    {
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", ChunkId.Compute([]).ToString());
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void ChunkIdEqualsSha256OfTheContent(int length)
    {
        var data = TestData.Random(length, 3);
        var id = ChunkId.Compute(data);
        var bytes = new byte[ChunkId.Size];
        id.Write(bytes);
        Assert.Equal(SHA256.HashData(data), bytes);
    }

    [Fact]
    public void ChunkIdParseAndToStringRoundTrip()
    {
        for (int i = 0; i < 100; i++)
        {
            var id = TestData.Id(i);
            string hex = id.ToString();
            Assert.Equal(64, hex.Length);
            Assert.Equal(hex.ToLowerInvariant(), hex);
            Assert.Equal(id, ChunkId.Parse(hex));
            Assert.Equal(id, ChunkId.Parse(hex.ToUpperInvariant()));
            Assert.Equal(id.GetHashCode(), ChunkId.Parse(hex).GetHashCode());
        }
    }

    [Fact]
    public void ChunkIdWriteReadRoundTrips()
    {
        var id = TestData.Id(42);
        var bytes = new byte[ChunkId.Size + 5];
        id.Write(bytes.AsSpan(5));
        Assert.Equal(id, ChunkId.Read(bytes.AsSpan(5)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("abc")]
    [InlineData("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a")]
    [InlineData("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0")]
    [InlineData("zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")]
    public void ChunkIdParseRejectsMalformedHex(string hex)
    {
        Assert.Throws<FormatException>(() => ChunkId.Parse(hex));
    }

    [Fact]
    public void ChunkIdReadAndWriteRejectShortBuffers()
    {
        Assert.Throws<ArgumentException>(() => ChunkId.Read(new byte[31]));
        Assert.Throws<ArgumentException>(() => TestData.Id(1).Write(new byte[31]));
    }

    [Fact]
    public void ZeroChunkIdIsTheReservedAllZeroValueNotTheHashOfZeros()
    {
        Assert.True(ChunkId.Zero.IsZero);
        Assert.Equal(default, ChunkId.Zero);
        Assert.Equal(new string('0', 64), ChunkId.Zero.ToString());
        Assert.Equal(ChunkId.Zero, ChunkId.Parse(new string('0', 64)));
        Assert.Equal(ChunkId.Zero, ChunkId.Read(new byte[32]));
        // Zero content is never hashed in the pipeline; its SHA-256 is an ordinary id.
        Assert.False(ChunkId.Compute(new byte[65536]).IsZero);
        Assert.False(TestData.Id(1).IsZero);
    }

    [Fact]
    public void ChunkIdEqualityComparesAllBytes()
    {
        var a = new byte[32];
        var b = new byte[32];
        b[31] = 1;
        Assert.NotEqual(ChunkId.Read(a), ChunkId.Read(b));
        Assert.True(ChunkId.Read(a) != ChunkId.Read(b));
        Assert.False(ChunkId.Read(b).IsZero);
        Assert.True(ChunkId.Read(b) == ChunkId.Read((byte[])b.Clone()));
        Assert.True(ChunkId.Read(b).Equals((object)ChunkId.Read(b)));
    }
}
