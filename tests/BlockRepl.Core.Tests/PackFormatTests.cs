using System.Buffers.Binary;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Core.Tests;

public class PackFormatTests
{
    /// <summary>A pack built the way PackWriter builds one: header, stored blobs, table + trailer.</summary>
    private static (byte[] Pack, BlobEntry[] Entries, List<byte[]> Contents) BuildPack(int blobCount)
    {
        var stream = new MemoryStream();
        var header = new byte[PackFormat.HeaderSize];
        PackFormat.WriteHeader(header);
        stream.Write(header);
        var entries = new List<BlobEntry>();
        var contents = new List<byte[]>();
        for (int i = 0; i < blobCount; i++)
        {
            var content = i % 2 == 0 ? TestData.Text(4096 + i, (ulong)i) : TestData.Random(4096 + i, (ulong)i);
            var encoded = new byte[Lz4Block.MaxEncodedLength(content.Length)];
            bool lz4 = Lz4Block.TryEncode(content, encoded, out int written);
            var stored = lz4 ? encoded.AsSpan(0, written).ToArray() : content;
            entries.Add(new BlobEntry(ChunkId.Compute(content), stream.Position, stored.Length, content.Length,
                i == blobCount - 1 ? BlobType.Tree : BlobType.Data, lz4 ? BlobCompression.Lz4 : BlobCompression.None, Checksum.Compute(stored)));
            contents.Add(content);
            stream.Write(stored);
        }
        long tableOffset = stream.Position;
        stream.Write(PackFormat.BuildTableAndTrailer(entries.ToArray(), tableOffset));
        return (stream.ToArray(), entries.ToArray(), contents);
    }

    private static BlobEntry[] Parse(byte[] pack)
    {
        PackFormat.CheckHeader(pack, "pack p");
        var (tableOffset, count, checksum) = PackFormat.ReadTrailer(pack.AsSpan(pack.Length - PackFormat.TrailerSize), pack.Length, "pack p");
        return PackFormat.ReadTable(pack.AsSpan((int)tableOffset, pack.Length - PackFormat.TrailerSize - (int)tableOffset), pack.AsSpan(pack.Length - PackFormat.TrailerSize), count, checksum, tableOffset, "pack p");
    }

    [Theory]
    [InlineData(12)] // version
    [InlineData(14)] // reserved
    public void FlipInTrailerVersionOrReservedFieldIsDetected(int offset)
    {
        var (pack, _, _) = BuildPack(3);
        pack[pack.Length - PackFormat.TrailerSize + offset] ^= 0x01;
        Assert.Throws<CorruptDataException>(() => Parse(pack));
    }

    [Fact]
    public void NonZeroHeaderReservedBytesAreDetected()
    {
        var (pack, _, _) = BuildPack(1);
        pack[10] = 1;
        Assert.Throws<CorruptDataException>(() => PackFormat.CheckHeader(pack, "p"));
    }

    [Fact]
    public void PackParsesBackFromItsTrailerAlone()
    {
        var (pack, entries, contents) = BuildPack(7);
        var parsed = Parse(pack);
        Assert.Equal(entries, parsed);
        for (int i = 0; i < parsed.Length; i++)
        {
            var e = parsed[i];
            var stored = pack.AsSpan((int)e.Offset, e.StoredLength);
            Assert.Equal(e.StoredChecksum, Checksum.Compute(stored));
            var content = new byte[e.RawLength];
            if (e.Compression == BlobCompression.Lz4) Lz4Block.Decode(stored, content, "blob");
            else stored.CopyTo(content);
            Assert.Equal(contents[i], content);
            Assert.Equal(e.Id, ChunkId.Compute(content));
        }
        Assert.Contains(parsed, e => e.Compression == BlobCompression.Lz4);
        Assert.Contains(parsed, e => e.Compression == BlobCompression.None);
    }

    [Fact]
    public void EmptyPackParses()
    {
        var (pack, _, _) = BuildPack(0);
        Assert.Equal(PackFormat.HeaderSize + PackFormat.TrailerSize, pack.Length);
        Assert.Empty(Parse(pack));
    }

    [Fact]
    public void BlobEntryRoundTripsWithReservedBytesZero()
    {
        var e = new BlobEntry(TestData.Id(3), 1234567890123, 1000, 4096, BlobType.Data, BlobCompression.Lz4, 0xDEADBEEFCAFEF00DUL);
        var bytes = new byte[BlobEntry.Size];
        bytes.AsSpan().Fill(0xFF);
        e.Write(bytes);
        Assert.Equal(e, BlobEntry.Read(bytes, "entry"));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(50)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(60)));
    }

    public static TheoryData<string, BlobEntry> InvalidEntries => new()
    {
        { "unknown type", new BlobEntry(TestData.Id(1), 16, 10, 10, (BlobType)3, BlobCompression.None, 0) },
        { "unknown compression", new BlobEntry(TestData.Id(1), 16, 10, 20, BlobType.Data, (BlobCompression)2, 0) },
        { "offset inside the header", new BlobEntry(TestData.Id(1), 15, 10, 10, BlobType.Data, BlobCompression.None, 0) },
        { "zero stored length", new BlobEntry(TestData.Id(1), 16, 0, 10, BlobType.Data, BlobCompression.Lz4, 0) },
        { "negative raw length", new BlobEntry(TestData.Id(1), 16, 10, -1, BlobType.Data, BlobCompression.Lz4, 0) },
        { "raw blob with two lengths", new BlobEntry(TestData.Id(1), 16, 10, 11, BlobType.Data, BlobCompression.None, 0) },
    };

    [Theory]
    [MemberData(nameof(InvalidEntries))]
    public void InvalidBlobEntryIsCorrupt(string why, BlobEntry entry)
    {
        var bytes = new byte[BlobEntry.Size];
        entry.Write(bytes);
        var ex = Record.Exception(() => BlobEntry.Read(bytes, "entry"));
        Assert.True(ex is CorruptDataException, why);
    }

    [Fact]
    public void EveryBitFlipInTheTableIsDetected()
    {
        var (pack, _, _) = BuildPack(3);
        int tableStart = pack.Length - PackFormat.TrailerSize - 3 * BlobEntry.Size;
        for (int bit = tableStart * 8; bit < (pack.Length - PackFormat.TrailerSize) * 8; bit++)
        {
            var copy = (byte[])pack.Clone();
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => Parse(copy));
            Assert.True(ex is CorruptDataException, $"flip in table byte {bit / 8 - tableStart}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Theory]
    [InlineData(0, 8, "table offset")]
    [InlineData(8, 4, "entry count")]
    [InlineData(16, 8, "table checksum")]
    [InlineData(24, 8, "trailer magic")]
    public void EveryBitFlipInATrailerFieldIsDetected(int fieldOffset, int fieldLength, string field)
    {
        var (pack, _, _) = BuildPack(3);
        int trailer = pack.Length - PackFormat.TrailerSize;
        for (int bit = 0; bit < fieldLength * 8; bit++)
        {
            var copy = (byte[])pack.Clone();
            copy[trailer + fieldOffset + bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => Parse(copy));
            Assert.True(ex is CorruptDataException, $"flip of bit {bit} of the {field}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Fact]
    public void NewerTrailerVersionIsUnsupported()
    {
        var (pack, _, _) = BuildPack(1);
        int trailer = pack.Length - PackFormat.TrailerSize;
        BinaryPrimitives.WriteUInt16LittleEndian(pack.AsSpan(trailer + 12), 2);
        // A genuine newer pack: its checksum covers the table and the trailer head with the new version.
        long tableOffset = BinaryPrimitives.ReadInt64LittleEndian(pack.AsSpan(trailer));
        var hasher = new System.IO.Hashing.XxHash3();
        hasher.Append(pack.AsSpan((int)tableOffset, trailer - (int)tableOffset));
        hasher.Append(pack.AsSpan(trailer, 16));
        BinaryPrimitives.WriteUInt64LittleEndian(pack.AsSpan(trailer + 16), hasher.GetCurrentHashAsUInt64());
        Assert.Throws<UnsupportedFormatException>(() => Parse(pack));
    }

    [Fact]
    public void BadHeaderIsCorruptAndNewerHeaderVersionUnsupported()
    {
        var (pack, _, _) = BuildPack(1);
        var copy = (byte[])pack.Clone();
        copy[0] ^= 1;
        Assert.Throws<CorruptDataException>(() => PackFormat.CheckHeader(copy, "pack p"));
        Assert.Throws<CorruptDataException>(() => PackFormat.CheckHeader(pack.AsSpan(0, 10), "pack p"));
        copy = (byte[])pack.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(copy.AsSpan(6), 9);
        Assert.Throws<UnsupportedFormatException>(() => PackFormat.CheckHeader(copy, "pack p"));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1)]
    [InlineData(64)]
    [InlineData(-64)]
    public void TrailerNotMatchingThePackLengthIsDetected(int delta)
    {
        var (pack, _, _) = BuildPack(2);
        var trailer = pack.AsSpan(pack.Length - PackFormat.TrailerSize).ToArray();
        var ex = Assert.Throws<CorruptDataException>(() => PackFormat.ReadTrailer(trailer, pack.Length + delta, "pack p"));
        Assert.Contains("length", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TruncatedPackIsDetected()
    {
        var (pack, _, _) = BuildPack(2);
        // A pack cut anywhere: its last 32 bytes are no longer a valid trailer for that length.
        for (int cut = 1; pack.Length - cut >= PackFormat.TrailerSize; cut += 7)
        {
            var shorter = pack.AsSpan(0, pack.Length - cut).ToArray();
            Assert.Throws<CorruptDataException>(() => PackFormat.ReadTrailer(
                shorter.AsSpan(shorter.Length - PackFormat.TrailerSize), shorter.Length, "pack p"));
        }
    }

    [Fact]
    public void BlobOutsideTheDataAreaIsDetectedEvenWithAValidTableChecksum()
    {
        var (pack, entries, _) = BuildPack(2);
        long tableOffset = pack.Length - PackFormat.TrailerSize - 2 * BlobEntry.Size;
        entries[1] = entries[1] with { Offset = tableOffset - entries[1].StoredLength + 1 };
        var tail = PackFormat.BuildTableAndTrailer(entries, tableOffset);
        var forged = pack.AsSpan(0, (int)tableOffset).ToArray().Concat(tail).ToArray();
        var ex = Assert.Throws<CorruptDataException>(() => Parse(forged));
        Assert.Contains("outside", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TableOfTheWrongLengthIsDetected()
    {
        var (pack, _, _) = BuildPack(2);
        var (tableOffset, count, checksum) = PackFormat.ReadTrailer(pack.AsSpan(pack.Length - PackFormat.TrailerSize), pack.Length, "p");
        var table = pack.AsSpan((int)tableOffset, count * BlobEntry.Size).ToArray();
        var trailer = pack.AsSpan(pack.Length - PackFormat.TrailerSize).ToArray();
        Assert.Throws<CorruptDataException>(() => PackFormat.ReadTable(table.AsSpan(0, table.Length - 1), trailer, count, checksum, tableOffset, "p"));
        Assert.Throws<CorruptDataException>(() => PackFormat.ReadTable(table, trailer, count + 1, checksum, tableOffset, "p"));
    }
}
