using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;
using BlockRepl.Engine.Repository;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Core.Tests;

public sealed class ChangeMapTests : IDisposable
{
    private const int ChunkSize = 65536;
    private const long VolumeSize = 40L * ChunkSize + 1234; // a partial last chunk
    private const string RepoId = "00112233445566778899aabbccddeeff";
    private const string SnapshotId = "0123456789abcdef0123456789abcdef";
    private static readonly long ChunkCount = ChunkGeometry.ChunkCount(VolumeSize, ChunkSize);

    private readonly TempDirectory _dir = new();
    private readonly string _path;

    public ChangeMapTests() => _path = _dir.File(ChangeMap.FileName(RepoId, "/dev/sdb"));

    public void Dispose() => _dir.Dispose();

    private static byte[] Entry(long chunk)
    {
        var e = new byte[ChangeMap.EntrySize];
        if (chunk % 4 == 3) return e; // zero chunks keep an all-zero entry
        BlockHash.Compute(BitConverter.GetBytes(chunk)).Write(e);
        TestData.Id((int)chunk).Write(e.AsSpan(BlockHash.Size));
        return e;
    }

    private void WriteSealedMap()
    {
        using var h = ChangeMap.CreateWorking(_path, ChunkCount);
        // Workers write entries positionally and out of order.
        for (long c = ChunkCount - 1; c >= 0; c--) RandomAccess.Write(h, Entry(c), ChangeMap.EntryOffset(c));
        ChangeMap.Seal(h, _path, ChunkCount, new ChangeMap.Header(ChunkSize, VolumeSize, RepoId, SnapshotId, 0));
    }

    private SafeFileHandle? Open(out ChangeMap.Header? header, out string? reason, int chunkSize = ChunkSize, long volumeSize = VolumeSize, string repoId = RepoId) =>
        ChangeMap.TryOpen(_path, chunkSize, volumeSize, repoId, out header, out reason);

    private void FlipByte(long offset)
    {
        using var h = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite);
        var b = new byte[1];
        RandomAccess.Read(h, b, offset);
        b[0] ^= 0x10;
        RandomAccess.Write(h, b, offset);
    }

    [Fact]
    public void SealedMapOpensWithItsHeaderAndEntries()
    {
        WriteSealedMap();
        using var h = Open(out var header, out string? reason);
        Assert.NotNull(h);
        Assert.Null(reason);
        Assert.NotNull(header);
        Assert.Equal(ChunkSize, header.ChunkSize);
        Assert.Equal(VolumeSize, header.VolumeSize);
        Assert.Equal(RepoId, header.RepoId);
        Assert.Equal(SnapshotId, header.SnapshotId);
        Assert.Equal(ChangeMap.EntryOffset(ChunkCount), RandomAccess.GetLength(h));

        var e = new byte[ChangeMap.EntrySize];
        for (long c = 0; c < ChunkCount; c++)
        {
            Assert.Equal(ChangeMap.EntrySize, RandomAccess.Read(h, e, ChangeMap.EntryOffset(c)));
            Assert.Equal(Entry(c), e);
        }
    }

    [Fact]
    public void EntriesStartPageAligned()
    {
        Assert.Equal(48, ChangeMap.EntrySize);
        Assert.Equal(4096, ChangeMap.EntryOffset(0));
        Assert.Equal(4096 + 48 * 10, ChangeMap.EntryOffset(10));
    }

    [Fact]
    public void FileNameIsStablePerRepositoryAndSource()
    {
        Assert.Equal(ChangeMap.FileName(RepoId, "/dev/sdb"), ChangeMap.FileName(RepoId, "/dev/sdb"));
        Assert.NotEqual(ChangeMap.FileName(RepoId, "/dev/sdb"), ChangeMap.FileName(RepoId, "/dev/sdc"));
        Assert.NotEqual(ChangeMap.FileName(RepoId, "/dev/sdb"), ChangeMap.FileName("ffeeddccbbaa99887766554433221100", "/dev/sdb"));
        Assert.EndsWith(".map", ChangeMap.FileName(RepoId, "/dev/sdb"), StringComparison.Ordinal);
    }

    [Fact]
    public void MissingMapIsRejected()
    {
        Assert.Null(Open(out var header, out string? reason));
        Assert.Null(header);
        Assert.Equal("no change map yet", reason);
    }

    [Fact]
    public void UnsealedWorkingMapIsRejected()
    {
        using (ChangeMap.CreateWorking(_path, ChunkCount)) { }
        Assert.Null(Open(out _, out string? reason));
        Assert.Contains("torn or corrupt", reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0L)]          // an entry of the first chunk
    [InlineData(20L * 48 + 17)]
    [InlineData(41L * 48 - 1)] // last byte of the last entry
    public void CorruptedEntryByteIsRejected(long entryByte)
    {
        WriteSealedMap();
        FlipByte(ChangeMap.HeaderSize + entryByte);
        Assert.Null(Open(out _, out string? reason));
        Assert.Equal("change map entries are corrupt", reason);
    }

    [Theory]
    [InlineData(0)]   // magic
    [InlineData(8)]   // version
    [InlineData(12)]  // chunk size
    [InlineData(16)]  // volume size
    [InlineData(30)]  // repository id
    [InlineData(45)]  // recovery point id
    [InlineData(56)]  // entries checksum
    [InlineData(64)]  // chunk count
    [InlineData(72)]  // header checksum
    public void CorruptedHeaderIsRejected(int headerByte)
    {
        WriteSealedMap();
        FlipByte(headerByte);
        Assert.Null(Open(out var header, out string? reason));
        Assert.Null(header);
        Assert.Contains("torn or corrupt", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void MapOfAnotherRepositoryIsRejected()
    {
        WriteSealedMap();
        Assert.Null(Open(out _, out string? reason, repoId: "ffeeddccbbaa99887766554433221100"));
        Assert.Equal("change map belongs to another repository", reason);
    }

    [Fact]
    public void MapOfAnotherVolumeSizeIsRejected()
    {
        WriteSealedMap();
        Assert.Null(Open(out _, out string? reason, volumeSize: VolumeSize + 1));
        Assert.Contains("volume size changed", reason, StringComparison.Ordinal);
        // Same chunk count, different size: still a different volume.
        Assert.Null(Open(out _, out reason, volumeSize: VolumeSize - 1));
        Assert.Contains("volume size changed", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void MapOfAnotherChunkSizeIsRejected()
    {
        WriteSealedMap();
        Assert.Null(Open(out _, out string? reason, chunkSize: ChunkSize * 2));
        Assert.Equal("change map has another chunk size", reason);
    }

    [Theory]
    [InlineData(48L)]
    [InlineData(1L)]
    [InlineData(41L * 48)] // every entry gone, header intact
    public void TruncatedMapIsRejected(long bytesCut)
    {
        WriteSealedMap();
        using (var h = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(h, RandomAccess.GetLength(h) - bytesCut);
        Assert.Null(Open(out _, out string? reason));
        Assert.Equal("change map is truncated", reason);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(40L)]
    public void MapTruncatedInsideItsHeaderIsRejected(long length)
    {
        WriteSealedMap();
        using (var h = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(h, length);
        Assert.Null(Open(out _, out string? reason));
        Assert.Contains("torn or corrupt", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void ExtendedMapIsRejected()
    {
        WriteSealedMap();
        using (var h = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.SetLength(h, RandomAccess.GetLength(h) + 48);
        Assert.Null(Open(out _, out string? reason));
        Assert.NotNull(reason);
    }
}
