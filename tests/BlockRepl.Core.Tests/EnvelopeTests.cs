using System.Buffers.Binary;
using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Core.Tests;

public class EnvelopeTests
{
    private static ReadOnlySpan<byte> TestMagic => "BRTEST\0\0"u8;

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(100)]
    [InlineData(70000)]
    public void PayloadRoundTrips(int length)
    {
        var payload = TestData.Random(length, 1);
        var file = Envelope.Wrap(TestMagic, 1, payload);
        Assert.Equal(Envelope.HeaderSize + length + Envelope.TrailerSize, file.Length);
        var back = Envelope.Unwrap(file, TestMagic, 1, "test file", out ushort version);
        Assert.Equal(1, version);
        Assert.Equal(payload, back.ToArray());
    }

    [Fact]
    public void LayoutMatchesTheSpec()
    {
        var file = Envelope.Wrap(TestMagic, 1, "hello"u8);
        Assert.Equal(TestMagic.ToArray(), file[..8]);
        Assert.Equal(1, BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(8)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan(10)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(12)));
        Assert.Equal(5UL, BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(16)));
        Assert.Equal("hello"u8.ToArray(), file[24..29]);
        Assert.Equal(Checksum.Compute(file.AsSpan(0, 29)), BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(29)));
    }

    [Fact]
    public void EverySingleBitFlipIsDetected()
    {
        var file = Envelope.Wrap(TestMagic, 1, "a small payload"u8);
        for (int bit = 0; bit < file.Length * 8; bit++)
        {
            var copy = (byte[])file.Clone();
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => Envelope.Unwrap(copy, TestMagic, 1, "test file", out _));
            Assert.True(ex is CorruptDataException, $"flip of bit {bit % 8} in byte {bit / 8}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Fact]
    public void EveryTruncationIsDetected()
    {
        var file = Envelope.Wrap(TestMagic, 1, "a small payload"u8);
        for (int length = 0; length < file.Length; length++)
        {
            int n = length;
            Assert.Throws<CorruptDataException>(() => Envelope.Unwrap(file.AsSpan(0, n), TestMagic, 1, "test file", out _));
        }
    }

    [Fact]
    public void AppendedBytesAreDetected()
    {
        var file = Envelope.Wrap(TestMagic, 1, "payload"u8);
        var longer = new byte[file.Length + 1];
        file.CopyTo(longer, 0);
        Assert.Throws<CorruptDataException>(() => Envelope.Unwrap(longer, TestMagic, 1, "test file", out _));
    }

    [Fact]
    public void NewerVersionIsUnsupportedNotCorrupt()
    {
        var file = Envelope.Wrap(TestMagic, 2, "from the future"u8);
        var ex = Assert.Throws<UnsupportedFormatException>(() => Envelope.Unwrap(file, TestMagic, 1, "test file", out _));
        Assert.Equal(2, ex.Version);
        Assert.Contains("test file", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OlderVersionIsAcceptedAndReported()
    {
        var file = Envelope.Wrap(TestMagic, 1, "old"u8);
        Envelope.Unwrap(file, TestMagic, 3, "test file", out ushort version);
        Assert.Equal(1, version);
    }

    [Fact]
    public void WrongMagicIsCorruptAndNamesTheFile()
    {
        var file = Envelope.Wrap("BROTHER\0"u8, 1, "x"u8);
        var ex = Assert.Throws<CorruptDataException>(() => Envelope.Unwrap(file, TestMagic, 1, "config of /repo", out _));
        Assert.Equal("config of /repo", ex.What);
        Assert.Contains("magic", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MagicMustBeEightBytes()
    {
        Assert.Throws<ArgumentException>(() => Envelope.Wrap("SHORT"u8, 1, "x"u8));
    }

    [Fact]
    public void MagicHelperPadsWithNul()
    {
        Assert.Equal("BRSNAP\0\0"u8.ToArray(), Envelope.Magic("BRSNAP").ToArray());
    }
}
