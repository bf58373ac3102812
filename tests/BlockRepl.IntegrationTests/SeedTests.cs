using System.Diagnostics;
using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Issue #6 item 7: <c>blockrepl seed export/import</c> through the real CLI. A seed written to a directory (the
/// removable disk) is imported into the target repository; the first network run afterwards is an incremental of what
/// changed since the export (the seed's change map adopted), never a rescan or a re-upload; an interrupted or partial
/// import resumes; a seed whose point is not in the target leads to a RESCAN that says why.
/// </summary>
public sealed class SeedTests : IDisposable
{
    private const int Chunk = 64 * 1024;
    private readonly TempDir _dir = new("br-seed");
    public void Dispose() => _dir.Dispose();

    private static JsonElement Export(string source, string seed, string state, params string[] extra) =>
        Cli.Json(CliRunner.Ok(["seed", "export", source, "--to", seed, "--state-dir", state, "--json", "--no-progress", .. extra]));

    private static JsonElement Import(string seed, string target) =>
        Cli.Json(CliRunner.Ok("seed", "import", "--from", seed, "--repo", target, "--json", "--no-progress"));

    private static long PackBytes(string repo) => RepoFiles.Packs(repo).Sum(p => new FileInfo(p).Length);

    private static string[] PendingSeedRecords(string state) => Directory.GetFiles(state, "seed-*.json");

    [Fact]
    public void After_an_import_the_first_backup_is_an_incremental_of_the_writes_since_the_export_and_restores_byte_for_byte()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), target = _dir.File("target"), state = _dir.File("state");
        DiskImages.Mixed(img, 32L << 20, seed: 71);
        var atExport = ChunkScan.Of(img);

        var export = Export(img, seed, state, "--repo", target);
        Assert.Equal("FULL", export.Str("mode"));
        Assert.True(File.Exists(Path.Combine(seed, "seed")), "the seed descriptor is written");
        Assert.Equal(Chunk, export.GetProperty("seedExport").Long("chunkSize"));
        Assert.False(Directory.Exists(target), "export only reads the target");
        Assert.Single(PendingSeedRecords(state));

        var import = Import(seed, target);
        Assert.True(import.GetProperty("created").GetBoolean());
        Assert.False(import.GetProperty("alreadyImported").GetBoolean());
        Assert.Equal([export.Str("id")], import.GetProperty("copied").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal(export.Long("newChunks"), import.Long("blobsCopied"));
        long packsBefore = PackBytes(target);

        WriteLoad.ScatteredWrites(img, 6, Chunk, seed: 72);
        var now = ChunkScan.Of(img);
        long changed = now.ChangedBytesSince(atExport);
        Assert.Equal(6L * Chunk, changed);

        var backup = Cli.Backup(img, target, state);
        Assert.Equal("INCREMENTAL", backup.Str("mode"));
        Assert.Equal(export.Str("id"), backup.Str("parent"));
        Assert.Contains("adopted", backup.Str("seed"), StringComparison.Ordinal);
        Assert.Equal(changed, backup.Long("changedBytes"));
        Assert.Equal(now.BytesNotIn(atExport), backup.Long("newBytes"));
        Assert.True(backup.Long("putRequests") <= 3, $"one pack, its index and the manifest: {backup}");
        long added = PackBytes(target) - packsBefore;
        Assert.True(added < changed + (256 << 10), $"the target grew by {added} bytes for {changed} changed: not a re-upload");
        Assert.Empty(PendingSeedRecords(state));

        Cli.Restore("latest", target, _dir.File("restored.img"));
        Assert.True(Files.ContentEquals(img, _dir.File("restored.img")), "the latest point restored from the target differs from the source");

        // The next run continues from the target's own map; importing the seed again is a no-op.
        var next = Cli.Backup(img, target, state);
        Assert.Equal("INCREMENTAL", next.Str("mode"));
        Assert.Equal(0, next.Long("changedBytes"));
        var again = Import(seed, target);
        Assert.True(again.GetProperty("alreadyImported").GetBoolean());
        Assert.Equal(0, again.Long("blobsCopied"));
        var text = CliRunner.Run("seed", "import", "--from", seed, "--repo", target, "--no-progress");
        Assert.True(text.ExitCode == 0, text.ToString());
        Assert.Contains("already imported", text.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_daemon_starts_from_an_imported_seed_with_an_incremental_cycle()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), target = _dir.File("target"), state = _dir.File("state");
        DiskImages.Mixed(img, 16L << 20, seed: 81);
        var atExport = ChunkScan.Of(img);
        Export(img, seed, state);
        Import(seed, target);
        WriteLoad.ScatteredWrites(img, 4, Chunk, seed: 82);
        long changed = ChunkScan.Of(img).ChangedBytesSince(atExport);

        int port = DaemonProcess.FreePort();
        var config = new { name = "db-1", stateDir = state, repository = target, interval = "1h", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "disk", source = img } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1, "the first cycle");
        var v = DaemonProcess.Volume(s);
        Assert.True(v.GetProperty("lastMode").GetString() == "INCREMENTAL", $"first cycle after the seed: {v}\n{daemon.Output}");
        Assert.Equal(changed, v.Long("changedBytesLastCycle"));
        Assert.Contains("Adopted the change map of seed", daemon.Output, StringComparison.Ordinal);
        Assert.Equal(0, daemon.Terminate());

        Cli.Restore(v.Str("lastRecoveryPoint"), target, _dir.File("restored.img"));
        Assert.True(Files.ContentEquals(img, _dir.File("restored.img")), "the daemon's point differs from the source");
    }

    [Fact]
    public async Task An_import_killed_midway_resumes_and_copies_nothing_twice()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), target = _dir.File("target"), state = _dir.File("state");
        DiskImages.Random(img, 160L << 20, seed: 91);
        var export = Export(img, seed, state);

        using (var p = CliRunner.Start(["seed", "import", "--from", seed, "--repo", target, "--no-progress"]))
        {
            var output = Task.WhenAll(p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync());
            var sw = Stopwatch.StartNew();
            while (RepoFiles.Indexes(target).Length < 1)
            {
                if (p.HasExited) Assert.Fail($"the import ended before its first pack was indexed: {string.Concat(await output)}");
                Assert.True(sw.Elapsed < TimeSpan.FromMinutes(2), "no index file appeared in the target");
                await Task.Delay(1);
            }
            p.Kill();
            await p.WaitForExitAsync();
            Assert.True(p.ExitCode == 137, $"expected the import to die by SIGKILL: exit {p.ExitCode} {string.Concat(await output)}");
        }
        Assert.Empty(Cli.Snapshots(target));
        long before = RepoFiles.AllEntries(target).Count(e => e.Type == PackEntry.Data);
        Assert.True(before > 0);

        var resumed = Import(seed, target);
        Assert.Equal([export.Str("id")], resumed.GetProperty("copied").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal(export.Long("newChunks") - before, resumed.Long("blobsCopied"));
        var dupes = RepoFiles.AllEntries(target).GroupBy(e => e.Id).Where(g => g.Count() > 1).ToList();
        Assert.True(dupes.Count == 0, $"{dupes.Count} blob(s) stored twice");
        var (verify, _) = Cli.Verify(target, readData: true);
        Assert.True(verify.ExitCode == 0, $"verify --read-data after the resumed import: {verify}");
        Cli.Restore("latest", target, _dir.File("restored.img"));
        Assert.True(Files.ContentEquals(img, _dir.File("restored.img")));
    }

    [Fact]
    public void An_import_into_a_target_that_already_has_an_older_export_moves_only_the_rest()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), target = _dir.File("target"), state = _dir.File("state");
        DiskImages.Mixed(img, 16L << 20, seed: 101);
        var first = Export(img, seed, state);
        CliRunner.Ok("copy", "--from", Path.Combine(seed, "repo"), "--to", target, first.Str("id"), "--no-progress");

        WriteLoad.ScatteredWrites(img, 5, Chunk, seed: 102);
        var second = Export(img, seed, state);   // refreshes the seed incrementally before it is shipped
        Assert.Equal("INCREMENTAL", second.Str("mode"));

        var import = Import(seed, target);
        Assert.Equal([second.Str("id")], import.GetProperty("copied").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal(second.Long("newChunks"), import.Long("blobsCopied"));

        WriteLoad.ScatteredWrites(img, 2, Chunk, seed: 103);
        var backup = Cli.Backup(img, target, state);
        Assert.Equal("INCREMENTAL", backup.Str("mode"));
        Assert.Equal(second.Str("id"), backup.Str("parent"));
        Assert.Equal(2L * Chunk, backup.Long("changedBytes"));
    }

    [Fact]
    public void A_seed_whose_point_is_not_in_the_target_leads_to_a_rescan_that_names_the_reason()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), target = _dir.File("target");
        string state = _dir.File("state"), other = _dir.File("other-state");
        DiskImages.Mixed(img, 16L << 20, seed: 111);
        var older = Cli.Backup(img, target, other);   // the target has an older point of this source, made elsewhere
        Export(img, seed, state, "--repo", target);
        WriteLoad.ScatteredWrites(img, 3, Chunk, seed: 112);

        var backup = Cli.Backup(img, target, state);   // the seed was never imported
        Assert.Equal("RESCAN", backup.Str("mode"));
        Assert.Equal(older.Str("id"), backup.Str("parent"));
        Assert.Contains("seed not adopted", backup.Str("rescanReason"), StringComparison.Ordinal);
        Assert.Contains("is not in", backup.Str("seed"), StringComparison.Ordinal);
        Assert.Equal(3L * Chunk, backup.Long("changedBytes"));
        Assert.Equal(3L * Chunk, backup.Long("newBytes"));   // dedup: the rescan stores only what changed
    }

    [Fact]
    public void Bad_seeds_and_targets_are_one_line_errors_with_documented_codes()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), state = _dir.File("state");
        DiskImages.Mixed(img, 4L << 20, seed: 121);
        Directory.CreateDirectory(_dir.File("empty"));
        File.WriteAllText(_dir.File("notes.txt"), "x");
        Directory.CreateDirectory(_dir.File("busy"));
        File.WriteAllText(Path.Combine(_dir.File("busy"), "holiday.jpg"), "x");

        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", _dir.File("empty"), "--repo", _dir.File("t")), 4, mentions: "is not a seed");
        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", _dir.File("nowhere"), "--repo", _dir.File("t")), 4, mentions: "does not exist");
        Cli.AssertOneLineError(CliRunner.Run("seed", "export", img, "--to", _dir.File("busy"), "--state-dir", state), 4, mentions: "not a seed");
        Cli.AssertOneLineError(CliRunner.Run("seed", "export", img, "--to", _dir.File("notes.txt"), "--state-dir", state), 4, mentions: "is a file");
        Cli.AssertOneLineError(CliRunner.Run("seed", "export", _dir.File("missing.img"), "--to", seed, "--state-dir", state), 3);
        Cli.AssertOneLineError(CliRunner.Run("seed", "frobnicate"), 2, mentions: "unknown seed subcommand");
        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", seed), 2, mentions: "missing --repo");
        Assert.False(Directory.Exists(_dir.File("t")), "a failed import created its target");
        Assert.False(Directory.Exists(seed), "a failed export created its seed directory");

        Export(img, seed, state);
        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", seed, "--to", "ebs://us-east-1"), 2, mentions: "not supported yet");
        CliRunner.Ok("init", "--repo", _dir.File("t128"), "--chunk-size", "128K");
        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", seed, "--repo", _dir.File("t128"), "--no-progress"), 4, mentions: "chunk size");
        Cli.AssertOneLineError(CliRunner.Run("seed", "export", img, "--to", _dir.File("seed2"), "--repo", _dir.File("t128"), "--chunk-size", "64K", "--state-dir", state), 2, mentions: "--chunk-size");

        RepoFiles.FlipByte(Path.Combine(seed, "seed"), 30);
        Cli.AssertOneLineError(CliRunner.Run("seed", "import", "--from", seed, "--repo", _dir.File("t")), 7, mentions: "seed descriptor");
    }

    [Fact]
    public void An_export_takes_the_chunk_size_of_a_reachable_target()
    {
        string img = _dir.File("disk.img"), seed = _dir.File("seed"), state = _dir.File("state"), target = _dir.File("t128");
        DiskImages.Mixed(img, 8L << 20, seed: 131);
        CliRunner.Ok("init", "--repo", target, "--chunk-size", "128K");
        var export = Export(img, seed, state, "--repo", target);
        Assert.Equal(128 * 1024, export.GetProperty("seedExport").Long("chunkSize"));
        Import(seed, target);
        WriteLoad.ScatteredWrites(img, 1, 128 * 1024, seed: 132);
        var backup = Cli.Backup(img, target, state);
        Assert.Equal("INCREMENTAL", backup.Str("mode"));
        Assert.Equal(128L * 1024, backup.Long("changedBytes"));
    }
}
