using System.Text.Json;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.TestKit;
using Serilog.Core;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Issue #6 item 3: point-in-time views of plain image files. A reflink clone on XFS (reflink=1) fixes the instant
/// read, so the recovery point is consistent; without reflink the read is fuzzy, said once in the log and always in
/// the status; a filesystem frozen around the clone is always thawed (after the view, by the watchdog, or at the next
/// start after a kill); clones a kill left behind are removed.
/// </summary>
public sealed class PointInTimeTests : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-pit");
    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_reflink_view_holds_the_image_as_it_was_when_cloned_whatever_is_written_after()
    {
        using var xfs = MountedFilesystem.XfsWithReflink(_dir.File("xfs.img"), _dir.File("xfs"));
        string image = xfs.File("disk.img");
        DiskImages.Mixed(image, 16L << 20, seed: 11);
        File.Copy(image, _dir.File("at-clone.img"));
        string repo = _dir.File("repo"), state = _dir.File("state");
        string id;
        using (var view = PointInTime.Open(image, PointInTimeMode.Auto, freeze: null, state, Logger.None))
        {
            Assert.Equal(ViewKinds.Reflink, view.View);
            Assert.True(view.Consistent);
            Assert.Equal(image, view.Source.Path); // the clone is read under the image's name
            Assert.Single(Directory.GetFiles(PointInTime.CloneDirectory(image)));

            // The application writes after the view was taken: the recovery point must not contain it.
            WriteAt(image, 1L << 20, seed: 1);
            var (r, _) = await RepositoryLocator.OpenOrInitAsync(repo, 64 * 1024);
            await using (r)
            {
                var (backup, _) = await ReplicationRun.RunAsync(view.Source, r, new BackupOptions { StateDir = state, Workers = 2 }, null,
                    _ => null, Logger.None, CancellationToken.None);
                id = backup!.Manifest.Id;
                Assert.Equal(image, backup.Manifest.Source);
            }
        }
        Assert.False(Directory.Exists(PointInTime.CloneDirectory(image)), "the clone (and its hidden directory) outlived the run");
        Cli.Restore(id, repo, _dir.File("restored.img"));
        Assert.True(Files.ContentEquals(_dir.File("at-clone.img"), _dir.File("restored.img")), "the recovery point is not the image at clone time");
        Assert.False(Files.ContentEquals(image, _dir.File("restored.img")));

        // The change map is keyed by the image, not by the clone's name: the next backup (auto: a clone again) is an
        // incremental that finds exactly the write made after the first view.
        var next = Cli.Backup(image, repo, state);
        Assert.Equal("INCREMENTAL", next.Str("mode"));
        Assert.Equal("reflink", next.Str("view"));
        Assert.Equal(64 * 1024, next.Long("changedBytes"));
        Cli.Restore(next.Str("id"), repo, _dir.File("restored2.img"));
        Assert.True(Files.ContentEquals(image, _dir.File("restored2.img")));
        Assert.False(Directory.Exists(PointInTime.CloneDirectory(image)));
    }

    [Fact]
    public async Task A_daemon_cycle_on_an_image_on_xfs_commits_a_consistent_point_from_a_clone()
    {
        using var xfs = MountedFilesystem.XfsWithReflink(_dir.File("xfs.img"), _dir.File("xfs"));
        string image = xfs.File("vm.img");
        DiskImages.Mixed(image, 8L << 20, seed: 12);
        string repo = _dir.File("repo");
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = _dir.File("state"), repository = repo, interval = "1h", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "vm", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1, "the first cycle");
        var v = DaemonProcess.Volume(s);
        Assert.Equal("reflink", v.GetProperty("view").GetString());
        Assert.True(v.GetProperty("lastPointConsistent").GetBoolean());
        Assert.Equal(JsonValueKind.Null, v.GetProperty("viewNote").ValueKind);
        Assert.Equal(0, daemon.Terminate());

        string serverId = s.GetProperty("serverId").GetString()!;
        var point = Cli.Json(File.ReadAllText(Directory.GetFiles(Path.Combine(repo, "points", serverId)).Single()));
        Assert.True(point.GetProperty("consistent").GetBoolean());
        Assert.Equal("reflink", point.GetProperty("volumes")[0].GetProperty("view").GetString());
        var snapshot = Assert.Single(Cli.Snapshots(repo));
        Assert.DoesNotContain(snapshot.GetProperty("tags").EnumerateArray(), t => t.GetString() == "fuzzy");
        Assert.Equal(image, snapshot.Str("source"));
        Assert.False(Directory.Exists(PointInTime.CloneDirectory(image)));
    }

    [Fact]
    public async Task Without_reflink_the_daemon_reads_fuzzy_warns_once_and_says_why_in_its_status()
    {
        using var tmpfs = MountedFilesystem.Tmpfs(_dir.File("tmpfs"), 64L << 20);
        string image = tmpfs.File("disk.img");
        DiskImages.Mixed(image, 4L << 20, seed: 13);
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = _dir.File("state"), repository = _dir.File("repo"), interval = "100ms", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "disk", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 3, "three cycles");
        var v = DaemonProcess.Volume(s);
        Assert.Equal("none", v.GetProperty("view").GetString());
        Assert.False(v.GetProperty("lastPointConsistent").GetBoolean());
        Assert.Contains("EOPNOTSUPP", v.GetProperty("viewNote").GetString());
        var table = CliRunner.Run("status", "--url", daemon.Url.ToString());
        Assert.Contains("fuzzy: the filesystem of", table.Stdout);
        Assert.Equal(0, daemon.Terminate());
        int warnings = daemon.Output.Split('\n').Count(l => l.Contains("no point-in-time view", StringComparison.Ordinal));
        Assert.True(warnings == 1, $"expected one warning over {DaemonProcess.Cycles(s)} cycles:\n{daemon.Output}");
        Assert.False(Directory.Exists(PointInTime.CloneDirectory(image)), "a failed clone left its hidden directory");

        // Asked for explicitly, a reflink clone that cannot be made is an error, not a silent fuzzy read.
        var r = CliRunner.Run("backup", image, "--repo", _dir.File("repo2"), "--state-dir", _dir.File("state2"), "--point-in-time", "reflink");
        Cli.AssertOneLineError(r, 3, mentions: "no reflink clone");
        Cli.AssertOneLineError(CliRunner.Run("backup", image, "--repo", _dir.File("repo2"), "--point-in-time", "always"), 2, mentions: "auto, reflink or none");
        Assert.Equal("none", Cli.Backup(image, _dir.File("repo2"), _dir.File("state2"), "--point-in-time", "none").Str("view"));
    }

    [Fact]
    public async Task A_filesystem_frozen_around_the_clone_is_thawed_after_the_view()
    {
        using var xfs = MountedFilesystem.XfsWithReflink(_dir.File("xfs.img"), _dir.File("xfs"));
        // The application's filesystem lives inside the image: freezing it makes the clone application-consistent.
        using var inner = MountedFilesystem.Ext4(xfs.File("data.img"), 32L << 20, _dir.File("data"));
        File.WriteAllText(inner.File("before.txt"), "written before the view");
        string state = _dir.File("state");
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = state, repository = _dir.File("repo"), interval = "1h", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "data", source = xfs.File("data.img"), freeze = inner.MountPoint } } };
        using (var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port))
        {
            var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1, "the first cycle");
            Assert.Equal("reflink+fsfreeze", DaemonProcess.Volume(s).GetProperty("view").GetString());
            await AssertWritable(inner.File("after.txt"));
            Assert.Empty(Directory.GetFiles(state, "frozen-*"));
            Assert.Equal(0, daemon.Terminate());
        }
    }

    [Fact]
    public async Task The_watchdog_thaws_a_freeze_that_outlasts_its_bound_and_the_record_goes_with_the_thaw()
    {
        using var fs = MountedFilesystem.Ext4(_dir.File("ext4.img"), 32L << 20, _dir.File("data"));
        string state = _dir.File("state");

        using (var freeze = FilesystemFreeze.Begin(fs.MountPoint, state, Logger.None))
        {
            Assert.True(File.Exists(FilesystemFreeze.RecordPath(state, fs.MountPoint)));
            // Frozen now: a second freeze is refused (EBUSY).
            Assert.NotEqual(0, Processes.Run("fsfreeze", $"-f {Processes.Quote(fs.MountPoint)}", check: false).ExitCode);
            Assert.True(freeze.End());
        }
        Assert.False(File.Exists(FilesystemFreeze.RecordPath(state, fs.MountPoint)));
        await AssertWritable(fs.File("a.txt"));

        // A view that takes longer than the bound: the watchdog thaws, so a blocked writer goes on; End says so.
        using (var freeze = FilesystemFreeze.Begin(fs.MountPoint, state, Logger.None, limit: TimeSpan.FromMilliseconds(1)))
        {
            await AssertWritable(fs.File("b.txt"));
            Assert.False(freeze.End());
        }
        Assert.False(File.Exists(FilesystemFreeze.RecordPath(state, fs.MountPoint)));
    }

    [Fact]
    public async Task After_a_kill_the_next_start_thaws_what_was_left_frozen_and_removes_the_stale_clone()
    {
        using var xfs = MountedFilesystem.XfsWithReflink(_dir.File("xfs.img"), _dir.File("xfs"));
        using var inner = MountedFilesystem.Ext4(_dir.File("inner.img"), 32L << 20, _dir.File("inner"));
        string image = xfs.File("disk.img");
        DiskImages.Random(image, 32L << 20, seed: 14);
        string state = _dir.File("state");

        // A backup killed while it reads its clone leaves the clone behind (slowed down so that it is still reading).
        var backup = CliRunner.Start(["backup", image, "--repo", _dir.File("repo"), "--state-dir", state, "--bwlimit", "1Mbps", "--no-progress"]);
        string cloneDir = PointInTime.CloneDirectory(image);
        while (!(Directory.Exists(cloneDir) && Directory.GetFiles(cloneDir).Length == 1))
        {
            Assert.False(backup.HasExited, "the backup ended before its clone was seen");
            await Task.Delay(20);
        }
        backup.Kill();
        backup.WaitForExit();
        Assert.Single(Directory.GetFiles(cloneDir));

        // A daemon killed while a filesystem was frozen leaves the filesystem frozen and its record.
        Processes.Run("fsfreeze", $"-f {Processes.Quote(inner.MountPoint)}");
        Directory.CreateDirectory(state);
        File.WriteAllText(FilesystemFreeze.RecordPath(state, inner.MountPoint),
            JsonSerializer.Serialize(new { version = 1, mountPoint = inner.MountPoint, pid = 1, frozenAt = DateTimeOffset.UtcNow }));

        int port = DaemonProcess.FreePort();
        var config = new { stateDir = state, repository = _dir.File("repo"), interval = "1h", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "disk", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1, "the first cycle");
        await AssertWritable(inner.File("after-restart.txt"));
        Assert.Empty(Directory.GetFiles(state, "frozen-*"));
        Assert.Contains("left frozen by an interrupted run", daemon.Output);
        Assert.Contains("Removed the stale clone", daemon.Output);
        Assert.False(Directory.Exists(cloneDir));
        Assert.Equal(0, daemon.Terminate());
    }

    [Fact]
    public void Bad_point_in_time_settings_are_refused_in_one_line()
    {
        string image = _dir.File("disk.img");
        DiskImages.Zeros(image, 1L << 20, sparse: true);
        Directory.CreateDirectory(_dir.File("plain-dir"));
        string path = _dir.File("bad.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            repository = _dir.File("repo"),
            stateDir = _dir.File("state"),
            volumes = new object[]
            {
                new { name = "a", source = image, pointInTime = "sometimes" },
                new { name = "b", source = image, freeze = "relative/dir" },
                new { name = "c", source = image, freeze = _dir.File("plain-dir") },
                new { name = "d", source = image, freeze = "/" },
                new { name = "e", source = "qcow2:" + image, pointInTime = "reflink" },
                new { name = "f", source = image, snapshot = "lvm" },
            },
        }));
        var r = CliRunner.Run("daemon", "--config", path);
        Cli.AssertOneLineError(r, 2);
        foreach (var part in new[] { "volumes[0].pointInTime 'sometimes': auto, reflink or none", "volumes[1].freeze 'relative/dir': give the absolute mount point",
                     "is not a mount point", "volumes[3].freeze '/'", "volumes[4].pointInTime reflink", "volumes[5]: unknown setting 'snapshot'" })
            Assert.Contains(part, r.Stderr);
    }

    private static void WriteAt(string path, long offset, int seed)
    {
        var block = new byte[64 * 1024];
        new Random(seed).NextBytes(block);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        fs.Position = offset;
        fs.Write(block);
        fs.Flush(flushToDisk: true);
    }

    /// <summary>
    /// A durable write to the filesystem completes: it is not frozen. A frozen filesystem blocks the writer until it
    /// is thawed, so the bound only keeps a broken build from hanging the suite; it measures nothing.
    /// </summary>
    private static async Task AssertWritable(string path)
    {
        var write = Task.Run(() =>
        {
            using var fs = new FileStream(path, FileMode.Create, FileAccess.Write);
            fs.Write("thawed"u8);
            fs.Flush(flushToDisk: true);
        });
        try { await write.WaitAsync(TimeSpan.FromMinutes(2)); }
        catch (TimeoutException)
        {
            Processes.Run("fsfreeze", $"-u {Processes.Quote(Path.GetDirectoryName(path)!)}", check: false);
            Assert.Fail($"writing {path} blocked: its filesystem stayed frozen");
        }
    }
}
