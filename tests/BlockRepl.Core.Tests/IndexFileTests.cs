using System.Buffers.Binary;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;

namespace BlockRepl.Core.Tests;

public class IndexFileTests
{
    private static PackIndex Pack(int seed, int entries)
    {
        var list = new BlobEntry[entries];
        long offset = PackFormat.HeaderSize;
        for (int i = 0; i < entries; i++)
        {
            int stored = 1000 + i;
            list[i] = new BlobEntry(TestData.Id(seed * 1000 + i), offset, stored, i % 2 == 0 ? stored : 65536,
                i % 5 == 4 ? BlobType.Tree : BlobType.Data, i % 2 == 0 ? BlobCompression.None : BlobCompression.Lz4, (ulong)(seed * 31 + i));
            offset += stored;
        }
        return new PackIndex(new PackId((ulong)seed, ~(ulong)seed), offset + entries * BlobEntry.Size + PackFormat.TrailerSize, list);
    }

    private static void AssertSame(IReadOnlyList<PackIndex> expected, IReadOnlyList<PackIndex> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Pack, actual[i].Pack);
            Assert.Equal(expected[i].PackLength, actual[i].PackLength);
            Assert.Equal(expected[i].Entries, actual[i].Entries);
        }
    }

    [Fact]
    public void IndexRoundTrips()
    {
        var packs = new[] { Pack(1, 10), Pack(2, 0), Pack(3, 1) };
        var file = IndexFile.Serialize(packs);
        AssertSame(packs, IndexFile.Deserialize(file, "index i"));
    }

    [Fact]
    public void EmptyIndexRoundTrips()
    {
        Assert.Empty(IndexFile.Deserialize(IndexFile.Serialize([]), "index i"));
    }

    [Fact]
    public void LargeIndexRoundTrips()
    {
        var packs = new[] { Pack(7, 5000) };
        AssertSame(packs, IndexFile.Deserialize(IndexFile.Serialize(packs), "index i"));
    }

    [Fact]
    public void EveryBitFlipIsDetected()
    {
        var file = IndexFile.Serialize([Pack(1, 2)]);
        for (int bit = 0; bit < file.Length * 8; bit++)
        {
            var copy = (byte[])file.Clone();
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => IndexFile.Deserialize(copy, "index i"));
            Assert.True(ex is CorruptDataException, $"flip of bit {bit % 8} in byte {bit / 8}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Fact]
    public void TruncationIsDetected()
    {
        var file = IndexFile.Serialize([Pack(1, 2)]);
        for (int length = 0; length < file.Length; length++)
        {
            int n = length;
            Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(file.AsSpan(0, n), "index i"));
        }
    }

    [Fact]
    public void OtherEnvelopeKindIsRejected()
    {
        var file = Envelope.Wrap("BRSNAP\0\0"u8, IndexFile.Version, new byte[4]);
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(file, "index i"));
    }

    [Fact]
    public void NewerVersionIsUnsupported()
    {
        var file = Envelope.Wrap(IndexFile.Magic, IndexFile.Version + 1, new byte[4]);
        Assert.Throws<UnsupportedFormatException>(() => IndexFile.Deserialize(file, "index i"));
    }

    // The payload checks behind the checksum: a buggy or hostile writer with a valid envelope.
    private static byte[] Payload(PackIndex pack)
    {
        var file = IndexFile.Serialize([pack]);
        return file.AsSpan(Envelope.HeaderSize, file.Length - Envelope.HeaderSize - Envelope.TrailerSize).ToArray();
    }

    [Fact]
    public void EntryCountBeyondThePayloadIsCorrupt()
    {
        var payload = Payload(Pack(1, 2));
        BinaryPrimitives.WriteInt32LittleEndian(payload.AsSpan(4 + 24), 3);
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(Envelope.Wrap(IndexFile.Magic, 1, payload), "index i"));
        BinaryPrimitives.WriteInt32LittleEndian(payload.AsSpan(4 + 24), -1);
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(Envelope.Wrap(IndexFile.Magic, 1, payload), "index i"));
    }

    [Fact]
    public void PackCountBeyondThePayloadIsCorrupt()
    {
        var payload = Payload(Pack(1, 2));
        BinaryPrimitives.WriteInt32LittleEndian(payload, 2);
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(Envelope.Wrap(IndexFile.Magic, 1, payload), "index i"));
    }

    [Fact]
    public void TrailingBytesAreCorrupt()
    {
        var payload = Payload(Pack(1, 2)).Concat(new byte[1]).ToArray();
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(Envelope.Wrap(IndexFile.Magic, 1, payload), "index i"));
    }

    [Fact]
    public void InvalidEntryIsCorrupt()
    {
        var payload = Payload(Pack(1, 1));
        payload[4 + 32 + 48] = 9; // blob type
        Assert.Throws<CorruptDataException>(() => IndexFile.Deserialize(Envelope.Wrap(IndexFile.Magic, 1, payload), "index i"));
    }

    [Fact]
    public void PackIdFormatsAsThirtyTwoHexDigitsAndParsesBack()
    {
        var id = PackId.NewRandom();
        string s = id.ToString();
        Assert.Equal(32, s.Length);
        Assert.Equal(id, PackId.Parse(s));
        Assert.NotEqual(id, PackId.NewRandom());
        Assert.Throws<FormatException>(() => PackId.Parse("abcd"));
    }
}
