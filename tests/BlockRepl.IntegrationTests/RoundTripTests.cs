using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// full → change → incremental → restore every recovery point → byte compare, through the real CLI on
/// generated images. Expected figures (changed, new, zero bytes) are computed from the images by
/// <see cref="ChunkScan"/>, not taken from the product.
/// </summary>
public sealed class RoundTripTests
{
    private const int Chunk = ChunkScan.ChunkSize;
    private const int Block = 512 * 1024;

    public static TheoryData<string, long> Images => new()
    {
        { "zeros-sparse", 8L << 20 },
        { "zeros-allocated", 8L << 20 },
        { "repeated", 8L << 20 },
        { "mixed", 16L << 20 },
        // Neither a multiple of the 512 KiB block nor of the 64 KiB chunk: a partial last chunk.
        { "random", (5L << 20) + 12345 },
        { "mixed", (9L << 20) + 4096 + 7 },
    };

    private static void Generate(string kind, string path, long size)
    {
        switch (kind)
        {
            case "random": DiskImages.Random(path, size, seed: 1); break;
            case "zeros-sparse": DiskImages.Zeros(path, size, sparse: true); break;
            case "zeros-allocated": DiskImages.Zeros(path, size, sparse: false); break;
            case "repeated": DiskImages.RepeatedBlocks(path, size, seed: 2, distinctBlocks: 6); break;
            case "mixed": DiskImages.Mixed(path, size, seed: 3); break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, null);
        }
    }

    [Theory]
    [MemberData(nameof(Images))]
    public void IncrementalAfterScatteredWrites_CountsExactlyTheChangedChunks_AndEveryPointRestoresByteForByte(string kind, long size)
    {
        using var t = new TempDir("br-roundtrip");
        string src = t.File("volume.img"), repo = t.File("repo"), state = t.File("state");
        Generate(kind, src, size);
        File.Copy(src, t.File("v0"));
        var v0 = ChunkScan.Of(src);

        var full = Cli.Backup(src, repo, state);
        Assert.Equal("FULL", full.Str("mode"));
        Assert.Equal(JsonValueKind.Null, full.GetProperty("parent").ValueKind);
        Assert.Equal(size, full.Long("size"));
        Assert.Equal(size, full.Long("scannedBytes"));
        Assert.Equal(v0.NonZeroBytes, full.Long("changedBytes"));
        Assert.Equal(size - v0.NonZeroBytes, full.Long("zeroBytes"));
        // Dedup: each distinct non-zero chunk is stored once, zero chunks not at all.
        Assert.Equal(v0.Distinct.Count, full.Long("newChunks"));
        Assert.Equal(v0.DistinctBytes, full.Long("newBytes"));
        if (kind == "mixed")
            Assert.True(full.Long("storedBytes") < full.Long("newBytes"), $"LZ4 should shrink a mixed image: {full}");

        // 64 KiB-aligned writes of random data change exactly one chunk each; the partial last chunk,
        // when there is one, is changed too.
        long[] offsets = WriteLoad.ScatteredWrites(src, 12, Chunk, seed: 7);
        long tail = size % Chunk;
        if (tail != 0) Volumes.WriteRandom(src, size - Math.Min(tail, 100), (int)Math.Min(tail, 100), seed: 8);
        long expectedChanged = (offsets.Length * (long)Chunk) + tail;
        long expectedBlocks = offsets.Select(o => o / Block).Concat(tail != 0 ? [(size - 1) / Block] : []).Distinct().Count();
        File.Copy(src, t.File("v1"));
        var v1 = ChunkScan.Of(src);
        Assert.Equal(expectedChanged, v1.ChangedBytesSince(v0));

        var incr = Cli.Backup(src, repo, state);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(full.Str("id"), incr.Str("parent"));
        Assert.Equal(size, incr.Long("scannedBytes"));
        Assert.Equal(expectedChanged, incr.Long("changedBytes"));
        Assert.Equal(offsets.Length + (tail != 0 ? 1 : 0), incr.Long("changedChunks"));
        Assert.Equal(expectedBlocks, incr.Long("changedBlocks"));
        Assert.Equal(v1.BytesNotIn(v0), incr.Long("newBytes"));
        Assert.True(incr.Long("newBytes") <= expectedChanged * 1.05, $"stored more than 1.05× the changed bytes: {incr}");

        // Each recovery point restores to a new file: the first by id prefix, the second as "latest".
        var r0 = Cli.Restore(full.Str("id")[..8], repo, t.File("restored0"));
        Assert.Equal(full.Str("id"), r0.Str("id"));
        Assert.False(r0.GetProperty("inPlace").GetBoolean());
        Assert.Equal(v0.NonZeroBytes, r0.Long("writtenBytes"));
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("restored0")), "the full recovery point did not restore byte for byte");

        var r1 = Cli.Restore("latest", repo, t.File("restored1"));
        Assert.Equal(incr.Str("id"), r1.Str("id"));
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("restored1")), "the incremental recovery point did not restore byte for byte");

        // Onto an existing copy of the older state only the differing chunks are written.
        File.Copy(t.File("v0"), t.File("inplace"));
        var rp = Cli.Restore(incr.Str("id"), repo, t.File("inplace"));
        Assert.True(rp.GetProperty("inPlace").GetBoolean());
        Assert.Equal(incr.Long("changedBytes"), rp.Long("writtenBytes"));
        Assert.Equal(v1.NonZeroBytes - expectedChanged, rp.Long("unchangedBytes"));
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("inplace")), "in-place restore did not produce the recovery point");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4095)]
    public void TinyImage_RoundTrips(int size)
    {
        using var t = new TempDir("br-tiny");
        string src = t.File("tiny.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.Random(src, size, seed: 4);
        File.Copy(src, t.File("v0"));
        var v0 = ChunkScan.Of(src);

        var full = Cli.Backup(src, repo, state);
        Assert.Equal("FULL", full.Str("mode"));
        Assert.Equal(size, full.Long("size"));
        Assert.Equal(v0.NonZeroBytes, full.Long("changedBytes"));

        // Inverting the last byte changes the last (partial) chunk; an empty image has nothing to change.
        if (size > 0)
        {
            byte[] bytes = File.ReadAllBytes(src);
            bytes[^1] = (byte)~bytes[^1];
            File.WriteAllBytes(src, bytes);
        }

        File.Copy(src, t.File("v1"));
        long expectedChanged = size == 0 ? 0 : size % Chunk == 0 ? Chunk : size % Chunk;
        Assert.Equal(expectedChanged, ChunkScan.Of(src).ChangedBytesSince(v0));

        var incr = Cli.Backup(src, repo, state);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(expectedChanged, incr.Long("changedBytes"));

        Cli.Restore(full.Str("id"), repo, t.File("restored0"));
        Cli.Restore("latest", repo, t.File("restored1"));
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("restored0")), "first point differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("restored1")), "second point differs");
    }

    [Fact]
    public void SparseOneGiBImage_ReadsOnlyItsDataExtents_AndRestoresSparse()
    {
        const long size = 1L << 30;
        const int extent = 1 << 20;
        using var t = new TempDir("br-sparse");
        string src = t.File("sparse.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.Sparse(src, size, seed: 5, [0, 300L << 20, (700L << 20) + Chunk, size - extent], extent);
        Assert.True(Volumes.AllocatedBytes(src) < 16L << 20, "precondition: the temp filesystem keeps the image sparse");
        Volumes.CopySparse(src, t.File("v0"));

        var full = Cli.Backup(src, repo, state);
        Assert.Equal("FULL", full.Str("mode"));
        Assert.Equal(size, full.Long("scannedBytes"));
        Assert.Equal(4L * extent, full.Long("changedBytes"));
        Assert.Equal(4L * extent, full.Long("newBytes"));
        Assert.Equal(4L * extent / Chunk, full.Long("newChunks"));
        Assert.Equal(size - (4L * extent), full.Long("zeroBytes"));

        long[] offsets = WriteLoad.ScatteredWrites(src, 16, Chunk, seed: 6);
        Volumes.CopySparse(src, t.File("v1"));

        var incr = Cli.Backup(src, repo, state);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(size, incr.Long("scannedBytes"));
        Assert.Equal(offsets.Length * (long)Chunk, incr.Long("changedBytes"));
        Assert.Equal(offsets.Length * (long)Chunk, incr.Long("newBytes"));

        Cli.Restore(full.Str("id")[..6], repo, t.File("restored0"));
        Cli.Restore("latest", repo, t.File("restored1"));
        // A restored new file is sparse: only data chunks are allocated.
        Assert.True(Volumes.AllocatedBytes(t.File("restored0")) < 16L << 20, "restore of a sparse point allocated its holes");
        Assert.True(Volumes.AllocatedBytes(t.File("restored1")) < 16L << 20, "restore of a sparse point allocated its holes");
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("restored0")), "first point differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("restored1")), "second point differs");
    }

    [Theory]
    [InlineData("deleted")]
    [InlineData("truncated")]
    [InlineData("entry-corrupted")]
    public void UnusableChangeMap_FallsBackToRescan_WithExactChangedBytes(string damage)
    {
        using var t = new TempDir("br-rescan");
        string src = t.File("volume.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.Random(src, 8L << 20, seed: 9);
        var full = Cli.Backup(src, repo, state);

        long[] offsets = WriteLoad.ScatteredWrites(src, 8, Chunk, seed: 10);
        File.Copy(src, t.File("v1"));
        string map = Assert.Single(Directory.GetFiles(state, "*.map"));
        switch (damage)
        {
            case "deleted":
                Directory.Delete(state, recursive: true);
                break;
            case "truncated":
                using (var fs = new FileStream(map, FileMode.Open, FileAccess.Write)) fs.SetLength(fs.Length / 2);
                break;
            case "entry-corrupted":
                RepoFiles.FlipByte(map, 4096 + (48 * 100) + 20);
                break;
        }

        var rescan = Cli.Backup(src, repo, state);
        Assert.Equal("RESCAN", rescan.Str("mode"));
        Assert.Equal(full.Str("id"), rescan.Str("parent"));
        Assert.False(string.IsNullOrEmpty(rescan.GetProperty("rescanReason").GetString()), $"a rescan must say why: {rescan}");
        Assert.Equal(offsets.Length * (long)Chunk, rescan.Long("changedBytes"));
        Assert.Equal(offsets.Length * (long)Chunk, rescan.Long("newBytes"));

        Cli.Restore("latest", repo, t.File("restored1"));
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("restored1")), "the rescan point differs");

        // The rescan wrote a fresh map: the next run is incremental again.
        var next = Cli.Backup(src, repo, state);
        Assert.Equal("INCREMENTAL", next.Str("mode"));
        Assert.Equal(0, next.Long("changedBytes"));
        Assert.Equal(0, next.Long("newBytes"));
    }

    [Fact]
    public void SizeChange_FallsBackToRescan_AndEachSizeRestores()
    {
        using var t = new TempDir("br-resize");
        string src = t.File("volume.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.Random(src, 8L << 20, seed: 11);
        Cli.Backup(src, repo, state);

        // Grown by 1 MiB of new data: exactly the appended chunks are new.
        Volumes.WriteRandom(src, 8L << 20, 1 << 20, seed: 12);
        File.Copy(src, t.File("grown"));
        var grown = Cli.Backup(src, repo, state);
        Assert.Equal("RESCAN", grown.Str("mode"));
        Assert.Equal(9L << 20, grown.Long("size"));
        Assert.Equal(1L << 20, grown.Long("changedBytes"));
        Assert.Equal(1L << 20, grown.Long("newBytes"));

        // Shrunk to a partial last chunk: only that chunk is new content.
        const long shrunkSize = (6L << 20) + 100;
        using (var fs = new FileStream(src, FileMode.Open, FileAccess.Write)) fs.SetLength(shrunkSize);
        File.Copy(src, t.File("shrunk"));
        var shrunk = Cli.Backup(src, repo, state);
        Assert.Equal("RESCAN", shrunk.Str("mode"));
        Assert.Equal(grown.Str("id"), shrunk.Str("parent"));
        Assert.Equal(shrunkSize, shrunk.Long("size"));
        Assert.Equal(100, shrunk.Long("changedBytes"));

        Cli.Restore(grown.Str("id"), repo, t.File("restored-grown"));
        Cli.Restore("latest", repo, t.File("restored-shrunk"));
        Assert.True(Files.ContentEquals(t.File("grown"), t.File("restored-grown")), "grown point differs");
        Assert.True(Files.ContentEquals(t.File("shrunk"), t.File("restored-shrunk")), "shrunk point differs");

        // In place onto the larger copy: the file is cut to the recovery point's size.
        File.Copy(t.File("grown"), t.File("inplace"));
        Cli.Restore("latest", repo, t.File("inplace"));
        Assert.True(Files.ContentEquals(t.File("shrunk"), t.File("inplace")), "in-place restore onto a larger file differs");
    }

    [Fact]
    public void RepeatedBlocks_AreStoredOnce_EvenAcrossSources()
    {
        using var t = new TempDir("br-dedup");
        string src = t.File("a.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.RepeatedBlocks(src, 16L << 20, seed: 13, distinctBlocks: 5);
        var scan = ChunkScan.Of(src);
        Assert.InRange(scan.Distinct.Count, 2, 5);

        var a = Cli.Backup(src, repo, state);
        Assert.Equal(256, a.Long("changedChunks"));
        Assert.Equal(scan.Distinct.Count, a.Long("newChunks"));
        Assert.Equal(scan.Distinct.Count * (long)Chunk, a.Long("newBytes"));
        Assert.True(a.Long("storedBytes") < (scan.Distinct.Count + 1) * (long)Chunk, $"stored more than the distinct blocks: {a}");

        // Another volume with the same content: a full backup of it stores no chunk at all.
        File.Copy(src, t.File("b.img"));
        var b = Cli.Backup(t.File("b.img"), repo, state);
        Assert.Equal("FULL", b.Str("mode"));
        Assert.Equal(16L << 20, b.Long("changedBytes"));
        Assert.Equal(0, b.Long("newChunks"));
        Assert.Equal(0, b.Long("newBytes"));

        Cli.Restore(b.Str("id"), repo, t.File("restored"));
        Assert.True(Files.ContentEquals(src, t.File("restored")), "deduplicated point differs");
    }

    [Fact]
    public void SnapshotsJson_ListsEveryRecoveryPointWithItsFigures_OldestFirst()
    {
        using var t = new TempDir("br-snapshots");
        string src = t.File("volume.img"), repo = t.File("repo"), state = t.File("state");
        DiskImages.Random(src, 8L << 20, seed: 14);
        var full = Cli.Backup(src, repo, state, "--tag", "nightly", "--tag", "db");
        WriteLoad.ScatteredWrites(src, 4, Chunk, seed: 15);
        var incr = Cli.Backup(src, repo, state);

        var list = Cli.Snapshots(repo);
        Assert.Equal(2, list.Length);
        foreach (var (listed, backup) in list.Zip([full, incr]))
        {
            Assert.Equal(backup.Str("id"), listed.Str("id"));
            Assert.Equal(32, listed.Str("id").Length);
            Assert.Equal(backup.GetProperty("time").GetDateTimeOffset(), listed.GetProperty("time").GetDateTimeOffset());
            Assert.Equal(Path.GetFullPath(src), listed.Str("source"));
            Assert.Equal(8L << 20, listed.Long("size"));
            Assert.Equal(backup.Str("mode"), listed.Str("mode"));
            Assert.Equal(backup.GetProperty("parent").GetString(), listed.GetProperty("parent").GetString());
            Assert.Equal(backup.Long("changedBytes"), listed.Long("changedBytes"));
            Assert.Equal(backup.Long("newBytes"), listed.Long("newBytes"));
            Assert.Equal(backup.Long("storedBytes"), listed.Long("storedBytes"));
            Assert.True(listed.Long("storedBytes") >= listed.Long("newBytes"), "random data cannot be stored in fewer bytes than it has");
            Assert.False(string.IsNullOrEmpty(listed.Str("host")));
        }

        Assert.Equal(["nightly", "db"], list[0].GetProperty("tags").EnumerateArray().Select(e => e.GetString()));
        Assert.Empty(list[1].GetProperty("tags").EnumerateArray());
        Assert.True(list[0].GetProperty("time").GetDateTimeOffset() <= list[1].GetProperty("time").GetDateTimeOffset());
        Assert.Equal(4L * Chunk, list[1].Long("changedBytes"));

        // An id that matches nothing is "not found" (5), in one line, and creates nothing.
        var missing = Cli.TryRestore("ffff0000", repo, t.File("none"));
        Cli.AssertOneLineError(missing, 5, "ffff0000");
        Cli.AssertNoRestoreLeftovers(t.File("none"));
    }
}
