using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// The same round trip on real Linux block devices (<c>losetup</c>; the suite runs as root): the size comes
/// from the BLKGETSIZE64 ioctl, writes go through the device, and restores update a device in place.
/// </summary>
public sealed class LoopDeviceTests
{
    private const int Chunk = ChunkScan.ChunkSize;
    private const long Size = 32L << 20;

    [Fact]
    public void LoopDevice_FullThenIncrementalAfterDeviceWrites_RestoresToFileAndInPlaceOntoAnotherDevice()
    {
        using var t = new TempDir("br-loop");
        string repo = t.File("repo"), state = t.File("state");
        DiskImages.Mixed(t.File("disk.img"), Size, seed: 21);
        using var dev = LoopDevice.Attach(t.File("disk.img"));
        Volumes.CopyContent(dev.DevicePath, t.File("v0"));

        var full = Cli.Backup(dev.DevicePath, repo, state);
        Assert.Equal("FULL", full.Str("mode"));
        Assert.Equal(dev.DevicePath, full.Str("source"));
        Assert.Equal(Size, full.Long("size"));
        Assert.Equal(Size, full.Long("scannedBytes"));
        Assert.Equal(ChunkScan.Of(t.File("v0")).DistinctBytes, full.Long("newBytes"));

        // Ten 64 KiB writes at chunk-aligned offsets and one 4 KiB write inside another chunk, all
        // through the device node: eleven chunks change.
        var rng = new Random(22);
        long[] chunks = [.. Enumerable.Range(0, (int)(Size / Chunk)).OrderBy(_ => rng.Next()).Take(11).Select(i => (long)i)];
        for (int i = 0; i < 10; i++) Volumes.WriteRandom(dev.DevicePath, chunks[i] * Chunk, Chunk, seed: 100 + i);
        Volumes.WriteRandom(dev.DevicePath, (chunks[10] * Chunk) + (3 * 4096), 4096, seed: 110);
        Volumes.CopyContent(dev.DevicePath, t.File("v1"));
        Assert.Equal(11L * Chunk, ChunkScan.Of(t.File("v1")).ChangedBytesSince(ChunkScan.Of(t.File("v0"))));

        var incr = Cli.Backup(dev.DevicePath, repo, state);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(full.Str("id"), incr.Str("parent"));
        Assert.Equal(11L * Chunk, incr.Long("changedBytes"));
        Assert.Equal(11, incr.Long("changedChunks"));
        Assert.True(incr.Long("newBytes") <= 11L * Chunk, $"stored more than what changed: {incr}");

        Cli.Restore(full.Str("id")[..8], repo, t.File("restored0"));
        Cli.Restore("latest", repo, t.File("restored1"));
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("restored0")), "full point of the device differs");
        Assert.True(Files.ContentEquals(dev.DevicePath, t.File("restored1")), "incremental point differs from the device");

        // A second device holding the older state: restoring the newer point writes only what differs.
        File.Copy(t.File("v0"), t.File("second.img"));
        using var second = LoopDevice.Attach(t.File("second.img"));
        var inPlace = Cli.Restore(incr.Str("id"), repo, second.DevicePath);
        Assert.True(inPlace.GetProperty("inPlace").GetBoolean());
        Assert.Equal(11L * Chunk, inPlace.Long("writtenBytes"));
        Assert.True(Files.ContentEquals(dev.DevicePath, second.DevicePath), "in-place restore onto a device differs from the source device");

        // Restoring the older point back onto it rewrites exactly those chunks, and a repeat writes nothing.
        var back = Cli.Restore(full.Str("id"), repo, second.DevicePath);
        Assert.Equal(11L * Chunk, back.Long("writtenBytes"));
        var again = Cli.Restore(full.Str("id"), repo, second.DevicePath);
        Assert.Equal(0, again.Long("writtenBytes"));
        Assert.True(Files.ContentEquals(t.File("v0"), second.DevicePath), "device restored back to the full point differs");
    }

    [Fact]
    public void RestoreOntoDevice_OverwritesEveryDifferingChunk_IncludingZeroChunks()
    {
        using var t = new TempDir("br-loop-zero");
        string repo = t.File("repo"), state = t.File("state");
        DiskImages.Mixed(t.File("src.img"), 16L << 20, seed: 23);
        var scan = ChunkScan.Of(t.File("src.img"));
        Assert.True(scan.Ids.Any(id => id is null), "precondition: the image has all-zero chunks");
        var point = Cli.Backup(t.File("src.img"), repo, state);

        // A device full of random data: zero chunks of the recovery point must be written as zeros
        // (no hole punching on a device), so every chunk differs and is written.
        DiskImages.Random(t.File("target.img"), 16L << 20, seed: 24);
        using var dev = LoopDevice.Attach(t.File("target.img"));
        var r = Cli.Restore(point.Str("id"), repo, dev.DevicePath);
        Assert.True(r.GetProperty("inPlace").GetBoolean());
        Assert.Equal(16L << 20, r.Long("writtenBytes"));
        Assert.True(Files.ContentEquals(t.File("src.img"), dev.DevicePath), "device differs from the recovery point");
    }

    [Fact]
    public void RestoreOntoTooSmallDevice_IsRefusedWithExit6_AndLeavesTheDeviceUnchanged()
    {
        using var t = new TempDir("br-loop-small");
        string repo = t.File("repo"), state = t.File("state");
        DiskImages.Random(t.File("big.img"), 24L << 20, seed: 25);
        Cli.Backup(t.File("big.img"), repo, state);

        DiskImages.Random(t.File("small.img"), 16L << 20, seed: 26);
        using var dev = LoopDevice.Attach(t.File("small.img"));
        string before = Files.Sha256Hex(dev.DevicePath);

        var r = Cli.TryRestore("latest", repo, dev.DevicePath);
        Cli.AssertOneLineError(r, 6, "too small");
        Assert.Equal(string.Empty, r.Stdout.Trim());
        Assert.Equal(before, Files.Sha256Hex(dev.DevicePath));
    }
}
