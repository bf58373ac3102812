using BlockRepl.Core.Compression;

namespace BlockRepl.Core.Tests;

public class Lz4BlockTests
{
    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void CompressibleDataRoundTrips(int size)
    {
        var data = TestData.Text(size, 11);
        var encoded = new byte[Lz4Block.MaxEncodedLength(size)];
        Assert.True(Lz4Block.TryEncode(data, encoded, out int written));
        Assert.InRange(written, 1, size - size / 32);

        var decoded = new byte[size];
        Assert.True(Lz4Block.TryDecode(encoded.AsSpan(0, written), decoded));
        Assert.Equal(data, decoded);

        Array.Clear(decoded);
        Lz4Block.Decode(encoded.AsSpan(0, written), decoded, "test blob");
        Assert.Equal(data, decoded);
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void ZerosCompressAndRoundTrip(int size)
    {
        var data = new byte[size];
        var encoded = new byte[Lz4Block.MaxEncodedLength(size)];
        Assert.True(Lz4Block.TryEncode(data, encoded, out int written));
        Assert.True(written < size / 100);
        var decoded = new byte[size];
        decoded.AsSpan().Fill(0xAA);
        Assert.True(Lz4Block.TryDecode(encoded.AsSpan(0, written), decoded));
        Assert.True(ZeroDetector.IsAllZero(decoded));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void IncompressibleDataIsNotEncoded(int size)
    {
        var data = TestData.Random(size, 5);
        var encoded = new byte[Lz4Block.MaxEncodedLength(size)];
        Assert.False(Lz4Block.TryEncode(data, encoded, out int written));
        Assert.Equal(0, written);
    }

    [Fact]
    public void OneByteIsNeverEncoded()
    {
        var encoded = new byte[Lz4Block.MaxEncodedLength(1)];
        Assert.False(Lz4Block.TryEncode([0], encoded, out _));
        Assert.False(Lz4Block.TryEncode([42], encoded, out _));
    }

    [Fact]
    public void EmptyInputIsNotEncoded()
    {
        Assert.False(Lz4Block.TryEncode(ReadOnlySpan<byte>.Empty, new byte[16], out int written));
        Assert.Equal(0, written);
    }

    [Fact]
    public void DataThatSavesLessThanOneThirtySecondIsStoredRaw()
    {
        // 31/32 random + 1/32 text: LZ4 saves a little, but not the 1/32 the format requires.
        const int size = 65536;
        var data = TestData.Random(size, 9);
        TestData.Text(size / 64, 1).CopyTo(data, 0);
        var encoded = new byte[Lz4Block.MaxEncodedLength(size)];
        Assert.False(Lz4Block.TryEncode(data, encoded, out _));
    }

    [Theory]
    [InlineData("0707070707F6070707F6070707")]
    [InlineData("070707070793AD0707E3FAA769")]
    public void TinyInputThatLz4CannotShrinkIsStoredRaw(string hex)
    {
        // Regression: below 32 bytes, "len - len/32" allowed an LZ4 block as long as its input (13 -> 13 bytes).
        var data = Convert.FromHexString(hex);
        Assert.False(Lz4Block.TryEncode(data, new byte[Lz4Block.MaxEncodedLength(data.Length)], out _));
    }

    [Fact]
    public void EncodedOutputSavesAtLeastOneThirtySecondForEveryLength()
    {
        var encoded = new byte[Lz4Block.MaxEncodedLength(600)];
        for (int length = 1; length <= 600; length++)
        {
            foreach (var data in new[] { new byte[length], TestData.Text(length, (ulong)length) })
            {
                if (Lz4Block.TryEncode(data, encoded, out int written))
                    Assert.True(written * 32L <= length * 31L, $"{length} bytes encoded to {written}");
            }
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(100)]
    public void TooSmallDestinationReturnsFalseInsteadOfThrowing(int destinationLength)
    {
        var data = TestData.Text(65536, 3);
        var destination = new byte[destinationLength];
        Assert.False(Lz4Block.TryEncode(data, destination, out int written));
        Assert.Equal(0, written);
    }

    [Fact]
    public void DestinationOfExactlyTheEncodedLengthSucceeds()
    {
        var data = TestData.Text(65536, 3);
        var big = new byte[Lz4Block.MaxEncodedLength(data.Length)];
        Assert.True(Lz4Block.TryEncode(data, big, out int needed));
        var exact = new byte[needed];
        Assert.True(Lz4Block.TryEncode(data, exact, out int written));
        Assert.Equal(needed, written);
        Assert.Equal(big.AsSpan(0, needed).ToArray(), exact);
        Assert.False(Lz4Block.TryEncode(data, new byte[needed - 1], out _));
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(524288)]
    public void GarbageInputDoesNotDecode(int size)
    {
        var garbage = TestData.Random(size / 2, 77);
        var destination = new byte[size];
        Assert.False(Lz4Block.TryDecode(garbage, destination));
        Assert.Throws<CorruptDataException>(() => Lz4Block.Decode(garbage, destination, "blob x"));
    }

    [Fact]
    public void TruncatedInputDoesNotDecode()
    {
        var data = TestData.Text(65536, 4);
        var encoded = new byte[Lz4Block.MaxEncodedLength(data.Length)];
        Assert.True(Lz4Block.TryEncode(data, encoded, out int written));
        var destination = new byte[data.Length];
        foreach (int cut in new[] { 0, 1, written / 2, written - 5, written - 1 })
        {
            Assert.False(Lz4Block.TryDecode(encoded.AsSpan(0, cut), destination), $"truncated to {cut} of {written} bytes");
            var ex = Assert.Throws<CorruptDataException>(() => Lz4Block.Decode(encoded.AsSpan(0, cut), destination, "blob y"));
            Assert.Equal("blob y", ex.What);
        }
    }

    [Fact]
    public void DecodingToAWrongLengthFails()
    {
        var data = TestData.Text(4096, 8);
        var encoded = new byte[Lz4Block.MaxEncodedLength(data.Length)];
        Assert.True(Lz4Block.TryEncode(data, encoded, out int written));
        Assert.False(Lz4Block.TryDecode(encoded.AsSpan(0, written), new byte[data.Length - 1]));
        Assert.False(Lz4Block.TryDecode(encoded.AsSpan(0, written), new byte[data.Length + 1]));
    }

    [Fact]
    public void MaxEncodedLengthCoversIncompressibleInput()
    {
        Assert.True(Lz4Block.MaxEncodedLength(65536) > 65536);
        Assert.True(Lz4Block.MaxEncodedLength(1) >= 2);
    }
}
