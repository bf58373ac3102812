using System.Diagnostics;
using System.Text.Json;
using BlockRepl.Core.Formats;
using BlockRepl.TestKit;
using Xunit.Sdk;

namespace BlockRepl.IntegrationTests;

/// <summary>The pristine volume every crash test starts from, generated once per class.</summary>
public sealed class CrashImageFixture : IDisposable
{
    /// <summary>Big enough that a run writes many 32 MiB packs, small enough to keep the class under a minute or two.</summary>
    public const long ImageSize = 384L << 20;

    private readonly TempDir _dir = new("blockrepl-crash-image");

    public CrashImageFixture()
    {
        PristinePath = _dir.File("pristine.img");
        // Mixed: zeros, incompressible, compressible and recurring blocks, so the run does real SHA-256 and LZ4 work.
        DiskImages.Mixed(PristinePath, ImageSize, seed: 20240611);
    }

    /// <summary>The content of recovery point A; never modified.</summary>
    public string PristinePath { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// kill -9 during a backup, at points found by watching the repository (never by sleeping): earlier
/// recovery points stay intact and <c>verify --read-data</c> clean, and the next run completes while
/// reusing every pack that was durable before the kill (issue #2, "Crash safety").
/// </summary>
public sealed class CrashTests(CrashImageFixture image) : IClassFixture<CrashImageFixture>
{
    /// <summary>64 KiB blocks of fresh random data written between A and B: 192 MiB, six 32 MiB packs.</summary>
    private const int ChangedBlocks = 3072;
    private const int ChangeBlockSize = 64 << 10;
    private const long ChangedBytes = (long)ChangedBlocks * ChangeBlockSize;
    private static readonly TimeSpan s_pollTimeout = TimeSpan.FromMinutes(2);

    [Fact]
    public void KilledOnceItsFirstPackUploadHasStarted_KeepsEarlierPointsAndLeavesAHarmlessTempFile()
    {
        using var s = new Scenario(image.PristinePath);
        var a = s.BackupA();
        s.ChangeImage();

        using var b = s.StartBackup(workers: 1);
        b.KillWhen(() => s.TempFilesOf(b.Pid) > 0, "its first upload appears in tmp/");
        b.AssertWasKilled();
        Assert.True(s.TempFilesOf(b.Pid) > 0, "kill -9 mid-upload should leave the partial pack in tmp/");

        s.AssertIntactAfterKill(expectedPoints: [a.Id], a.Id);

        var resumed = s.BackupJson();
        Assert.Equal("INCREMENTAL", resumed.Mode);
        Assert.Equal(ChangedBytes, resumed.ChangedBytes);
        s.AssertNothingStoredTwice(resumed, rawReusedBeforeKill: 0, expectedNew: ChangedBytes);
        s.AssertLatestRestoresToImage(expectedPoints: [a.Id, resumed.Id]);
    }

    [Fact]
    public void KilledRightAfterItsFirstPackIsIndexed_NextRunReusesThatPack()
    {
        using var s = new Scenario(image.PristinePath);
        var a = s.BackupA();
        s.ChangeImage();

        using var b = s.StartBackup(workers: 1);
        b.KillWhen(() => s.NewIndexFiles().Count >= 1, "its first index file appears");
        b.AssertWasKilled();

        s.AssertIntactAfterKill(expectedPoints: [a.Id], a.Id);

        long reused = s.RawDataBytesIn(s.NewIndexFiles());
        Assert.True(reused > 0);
        var resumed = s.BackupJson();
        Assert.Equal("INCREMENTAL", resumed.Mode);
        Assert.Equal(ChangedBytes, resumed.ChangedBytes);
        s.AssertNothingStoredTwice(resumed, reused, expectedNew: ChangedBytes - reused);
        s.AssertLatestRestoresToImage(expectedPoints: [a.Id, resumed.Id]);
    }

    [Fact]
    public void KilledAfterSeveralPacks_NextRunReusesAllOfThem()
    {
        using var s = new Scenario(image.PristinePath);
        var a = s.BackupA();
        s.ChangeImage();

        using var b = s.StartBackup(workers: 1);
        b.KillWhen(() => s.NewIndexFiles().Count >= 3, "three index files of the run appear");
        b.AssertWasKilled();

        s.AssertIntactAfterKill(expectedPoints: [a.Id], a.Id);

        var before = s.NewIndexFiles();
        Assert.True(before.Count >= 3);
        long reused = s.RawDataBytesIn(before);
        var resumed = s.BackupJson();
        Assert.Equal(ChangedBytes, resumed.ChangedBytes);
        s.AssertNothingStoredTwice(resumed, reused, expectedNew: ChangedBytes - reused);
        Assert.True(resumed.NewBytes <= ChangedBytes - (3 * (30L << 20)),
            $"the resumed run stored {resumed.NewBytes} new bytes of {ChangedBytes} changed: it should have reused at least three packs");
        s.AssertLatestRestoresToImage(expectedPoints: [a.Id, resumed.Id]);
    }

    [Fact]
    public void KilledTheMomentItsManifestIsPublished_BeforeTheChangeMapIsSealed()
    {
        using var s = new Scenario(image.PristinePath);
        var a = s.BackupA();
        s.ChangeImage();

        // All cores: nothing to catch before the end, so no reason to slow this run down.
        using var b = s.StartBackup(workers: Environment.ProcessorCount);
        b.KillWhen(() => s.SnapshotCount() >= 2, "its manifest appears in snapshots/");
        string bId = s.SnapshotIds().Single(id => id != a.Id);

        // The recovery point was published before the kill, so it is complete and listed; A is untouched.
        s.AssertIntactAfterKill(expectedPoints: [a.Id, bId], a.Id);
        s.AssertRestores(bId, s.DiskPath);

        // Whether the change map still names A (kill before the rename) or B, everything is already stored.
        var resumed = s.BackupJson();
        Assert.Equal(0, resumed.NewBytes);
        s.AssertNothingStoredTwice(resumed, rawReusedBeforeKill: 0, expectedNew: 0);
        s.AssertLatestRestoresToImage(expectedPoints: [a.Id, bId, resumed.Id]);
    }

    [Fact]
    public void KilledDuringTheFirstFullBackup_LeavesAnEmptyValidRepositoryAndTheRerunReusesItsPacks()
    {
        using var s = new Scenario(image.PristinePath);

        using var first = s.StartBackup(workers: 1);
        first.KillWhen(() => s.NewIndexFiles().Count >= 1, "its first index file appears");
        first.AssertWasKilled();

        Assert.Empty(s.SnapshotIds());
        s.AssertVerifyClean();

        var before = s.NewIndexFiles();
        long reused = s.RawDataBytesIn(before);
        Assert.True(reused > 0);
        var rerun = s.BackupJson();
        Assert.Equal("FULL", rerun.Mode);
        s.AssertNothingStoredTwice(rerun, reused, expectedNew: s.RawDataBytesIn(s.AllIndexFiles()) - reused);
        s.AssertLatestRestoresToImage(expectedPoints: [rerun.Id]);
    }

    [Fact]
    public void LeftoverTempFilesFromAKilledWriterBreakNothing()
    {
        using var dir = new TempDir("blockrepl-crash-tmp");
        string disk = dir.File("disk.img");
        string repo = dir.File("repo");
        string state = dir.File("state");
        DiskImages.Random(disk, 8L << 20, seed: 7);
        CliRunner.Ok("backup", disk, "--repo", repo, "--state-dir", state, "--no-progress");

        // What a writer killed mid-upload leaves: a partial pack and an empty file, named as the backend names them.
        string tmp = Path.Combine(repo, "tmp");
        Directory.CreateDirectory(tmp);
        File.WriteAllBytes(Path.Combine(tmp, $"999999-{Guid.NewGuid():N}.tmp"), "BRPACK\0\0garbage from a killed writer"u8.ToArray());
        File.WriteAllBytes(Path.Combine(tmp, $"999999-{Guid.NewGuid():N}.tmp"), []);

        CliRunner.Ok("verify", "--repo", repo, "--read-data", "--no-progress");
        WriteLoad.ScatteredWrites(disk, 16, ChangeBlockSize, seed: 8);
        CliRunner.Ok("backup", disk, "--repo", repo, "--state-dir", state, "--no-progress");
        var verify = CliRunner.Ok("verify", "--repo", repo, "--read-data", "--no-progress");
        Assert.DoesNotContain("error:", verify, StringComparison.Ordinal);
        Assert.Equal(2, JsonDocument.Parse(CliRunner.Ok("snapshots", "--repo", repo, "--json")).RootElement.GetArrayLength());
        string restored = dir.File("restored.img");
        CliRunner.Ok("restore", "latest", "--repo", repo, "--to", restored, "--no-progress");
        Assert.True(Files.ContentEquals(disk, restored), "restore of the latest recovery point differs from the image");
    }

    private sealed record BackupSummary(string Id, string Mode, long ChangedBytes, long NewBytes, long ScannedBytes, long ZeroBytes);

    /// <summary>One volume, one repository, one state directory; the helpers every crash test shares.</summary>
    private sealed class Scenario : IDisposable
    {
        private readonly TempDir _dir = new("blockrepl-crash");
        private HashSet<string> _baselineIndex = new(StringComparer.Ordinal);

        public Scenario(string pristine)
        {
            Pristine = pristine;
            DiskPath = _dir.File("disk.img");
            RepoPath = _dir.File("repo");
            StatePath = _dir.File("state");
            File.Copy(pristine, DiskPath);
        }

        public string Pristine { get; }
        public string DiskPath { get; }
        public string RepoPath { get; }
        public string StatePath { get; }

        private string[] BackupArgs(params string[] extra) =>
            ["backup", DiskPath, "--repo", RepoPath, "--state-dir", StatePath, "--no-progress", .. extra];

        /// <summary>Full backup of the pristine image: recovery point A. Index files from now on belong to later runs.</summary>
        public BackupSummary BackupA()
        {
            var a = BackupJson();
            Assert.Equal("FULL", a.Mode);
            _baselineIndex = [.. AllIndexFiles()];
            return a;
        }

        public void ChangeImage() => WriteLoad.ScatteredWrites(DiskPath, ChangedBlocks, ChangeBlockSize, seed: 99);

        public BackupSummary BackupJson()
        {
            var json = CliRunner.Ok(BackupArgs("--json"));
            var root = JsonDocument.Parse(json).RootElement;
            return new BackupSummary(
                root.GetProperty("id").GetString()!,
                root.GetProperty("mode").GetString()!,
                root.GetProperty("changedBytes").GetInt64(),
                root.GetProperty("newBytes").GetInt64(),
                root.GetProperty("scannedBytes").GetInt64(),
                root.GetProperty("zeroBytes").GetInt64());
        }

        public RunningBackup StartBackup(int workers) => new(CliRunner.Start(BackupArgs("--workers", workers.ToString(System.Globalization.CultureInfo.InvariantCulture))));

        public int TempFilesOf(int pid) => SafeCount(Path.Combine(RepoPath, "tmp"), $"{pid}-*");

        public int SnapshotCount() => SafeCount(Path.Combine(RepoPath, "snapshots"), "*.snap");

        /// <summary>Index files (relative paths) that were not there after A; a published .idx is complete (temp + link).</summary>
        public List<string> NewIndexFiles() => [.. AllIndexFiles().Where(f => !_baselineIndex.Contains(f))];

        public List<string> AllIndexFiles()
        {
            string dir = Path.Combine(RepoPath, "index");
            try
            {
                return Directory.Exists(dir)
                    ? [.. Directory.EnumerateFiles(dir, "*.idx", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(RepoPath, f))]
                    : [];
            }
            catch (IOException)
            {
                return []; // a directory being created under us: the next poll sees it
            }
        }

        private static int SafeCount(string dir, string pattern)
        {
            try { return Directory.Exists(dir) ? Directory.EnumerateFiles(dir, pattern, SearchOption.AllDirectories).Count() : 0; }
            catch (IOException) { return 0; }
        }

        public List<string> SnapshotIds() =>
            [.. JsonDocument.Parse(CliRunner.Ok("snapshots", "--repo", RepoPath, "--json")).RootElement
                .EnumerateArray().Select(e => e.GetProperty("id").GetString()!)];

        private List<BlobEntry> DataBlobsIn(IEnumerable<string> indexFiles) =>
            [.. indexFiles
                .SelectMany(f => IndexFile.Deserialize(File.ReadAllBytes(Path.Combine(RepoPath, f)), f))
                .SelectMany(p => p.Entries)
                .Where(e => e.Type == BlobType.Data)];

        public long RawDataBytesIn(IEnumerable<string> indexFiles) => DataBlobsIn(indexFiles).Sum(e => (long)e.RawLength);

        public void AssertVerifyClean()
        {
            var r = CliRunner.Run("verify", "--repo", RepoPath, "--read-data", "--no-progress");
            Assert.True(r.ExitCode == 0, $"verify --read-data after the kill: {r}");
            Assert.DoesNotContain("error:", r.Stdout, StringComparison.Ordinal);
        }

        public void AssertRestores(string id, string expectedContent)
        {
            string target = _dir.File($"restore-{Guid.NewGuid():N}.img");
            CliRunner.Ok("restore", id, "--repo", RepoPath, "--to", target, "--no-progress");
            try
            {
                Assert.True(Files.ContentEquals(expectedContent, target), $"restore of {id} differs from {expectedContent}");
            }
            finally
            {
                File.Delete(target);
            }
        }

        /// <summary>verify is clean, only <paramref name="expectedPoints"/> are listed, and A restores byte for byte.</summary>
        public void AssertIntactAfterKill(string[] expectedPoints, string aId)
        {
            AssertVerifyClean();
            Assert.Equal(expectedPoints.Order(), SnapshotIds().Order());
            AssertRestores(aId, Pristine);
        }

        /// <summary>
        /// The resumed run added exactly the data the killed one had not made durable: no blob is in two
        /// index files (nothing uploaded twice), and its new bytes are what the new index files hold.
        /// </summary>
        public void AssertNothingStoredTwice(BackupSummary resumed, long rawReusedBeforeKill, long expectedNew)
        {
            var all = DataBlobsIn(AllIndexFiles());
            var duplicates = all.GroupBy(e => e.Id).Where(g => g.Count() > 1).Select(g => g.Key.ToString()).ToList();
            Assert.True(duplicates.Count == 0, $"{duplicates.Count} chunk(s) stored twice, e.g. {duplicates.FirstOrDefault()}");
            Assert.Equal(expectedNew, resumed.NewBytes);
            if (rawReusedBeforeKill > 0)
                Assert.True(resumed.NewBytes + rawReusedBeforeKill <= resumed.ScannedBytes - resumed.ZeroBytes);
        }

        /// <summary>The listing is exactly <paramref name="expectedPoints"/>, latest restores to the image, verify is clean.</summary>
        public void AssertLatestRestoresToImage(string[] expectedPoints)
        {
            Assert.Equal(expectedPoints.Order(), SnapshotIds().Order());
            AssertRestores("latest", DiskPath);
            var r = CliRunner.Run("verify", "--repo", RepoPath, "--no-progress");
            Assert.True(r.ExitCode == 0, $"verify after the resumed run: {r}");
        }

        public void Dispose() => _dir.Dispose();
    }

    /// <summary>A backup run we are about to kill; its output is drained so that it never blocks on a full pipe.</summary>
    private sealed class RunningBackup : IDisposable
    {
        private readonly Process _process;
        private readonly Task<string> _stdout;
        private readonly Task<string> _stderr;

        public RunningBackup(Process process)
        {
            _process = process;
            _stdout = process.StandardOutput.ReadToEndAsync();
            _stderr = process.StandardError.ReadToEndAsync();
        }

        public int Pid => _process.Id;

        private string Output()
        {
            _process.WaitForExit();
            return $"exit {_process.ExitCode}\n--- stdout\n{_stdout.Result}\n--- stderr\n{_stderr.Result}";
        }

        /// <summary>Polls <paramref name="condition"/> and sends SIGKILL the moment it holds.</summary>
        public void KillWhen(Func<bool> condition, string what)
        {
            var sw = Stopwatch.StartNew();
            while (!condition())
            {
                if (_process.HasExited)
                {
                    throw new XunitException($"backup ended before {what}: {Output()}");
                }
                if (sw.Elapsed > s_pollTimeout)
                {
                    _process.Kill();
                    throw new XunitException($"no sign that {what} within {s_pollTimeout}: {Output()}");
                }
                Thread.Sleep(1);
            }
            try { _process.Kill(); }
            catch (InvalidOperationException) { /* it exited by itself in the meantime */ }
            _process.WaitForExit();
        }

        /// <summary>The run died by SIGKILL (128 + 9), not by finishing before the signal arrived.</summary>
        public void AssertWasKilled() =>
            Assert.True(_process.ExitCode == 137, $"expected the backup to die by SIGKILL: {Output()}");

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                try { _process.Kill(); } catch (InvalidOperationException) { }
                _process.WaitForExit();
            }
            _process.Dispose();
        }
    }
}
