using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <c>backup --direct-io</c> reads the source with O_DIRECT (aligned pinned buffers, rounded-up tail reads):
/// the result must be the same recovery point content as buffered reads, including an unaligned tail.
/// </summary>
public sealed class DirectIoTests
{
    [Theory]
    [InlineData(5L * 1024 * 1024 + 12345)]   // tail not a multiple of 4096: O_DIRECT reads past EOF come back short
    [InlineData(12L * 1024 * 1024)]
    public void DirectIoBackup_RestoresByteForByte_AndDetectsExactlyTheChangedChunks(long size)
    {
        using var t = new TempDir("br-direct");
        string image = t.File("disk.img");
        DiskImages.Mixed(image, size, seed: 11);
        string repo = t.File("repo"), state = t.File("state");

        var full = Cli.Backup(image, repo, state, "--direct-io");
        Assert.Equal("FULL", full.Str("mode"));
        File.Copy(image, t.File("v1.img"));

        long[] written = WriteLoad.ScatteredWrites(image, count: 5, blockSize: 65536, seed: 3);
        var incr = Cli.Backup(image, repo, state, "--direct-io");
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(written.Length * 65536L, incr.Long("changedBytes"));

        Cli.Restore(full.Str("id"), repo, t.File("r1.img"));
        Cli.Restore(incr.Str("id"), repo, t.File("r2.img"));
        Assert.True(Files.ContentEquals(t.File("v1.img"), t.File("r1.img")), "full point differs");
        Assert.True(Files.ContentEquals(image, t.File("r2.img")), "incremental point differs");
    }

    [Fact]
    public void DirectIoAndBufferedBackupsOfTheSameImage_ProduceTheSameTree()
    {
        using var t = new TempDir("br-direct");
        string image = t.File("disk.img");
        DiskImages.Mixed(image, 9L * 1024 * 1024 + 4103, seed: 5);
        var buffered = Cli.Backup(image, t.File("repo1"), t.File("state1"));
        var direct = Cli.Backup(image, t.File("repo2"), t.File("state2"), "--direct-io");
        Assert.Equal(buffered.Long("newChunks"), direct.Long("newChunks"));
        Assert.Equal(buffered.Long("zeroBytes"), direct.Long("zeroBytes"));
        Assert.Equal(RootOf(t.File("repo1"), buffered.Str("id")), RootOf(t.File("repo2"), direct.Str("id")));
    }

    /// <summary>The manifest's JSON payload sits between the 24-byte envelope header and the 8-byte checksum.</summary>
    private static string RootOf(string repo, string id)
    {
        byte[] file = File.ReadAllBytes(Path.Combine(repo, "snapshots", id + ".snap"));
        return Cli.Json(System.Text.Encoding.UTF8.GetString(file.AsSpan(24, file.Length - 32))).Str("root");
    }
}
