using System.Diagnostics;
using System.Text.Json;
using BlockRepl.Core.Formats;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Three recovery points of one volume with overlapping data, built through the real CLI: A is a 48 MiB random
/// volume (its chunks fill pack 1 with the first 32 MiB and pack 2 with the rest and A's tree); B rewrites
/// [4 MiB, 20 MiB) (its own pack); C rewrites the same range again (its own pack). So forgetting B leaves B's pack
/// with no live blob, and forgetting A leaves half of pack 1 dead.
/// </summary>
internal sealed class PruneScenario : IDisposable
{
    public const long Size = 48L << 20;
    private readonly TempDir _t = new("br-prune");

    public PruneScenario(string? repo = null, IDictionary<string, string>? env = null)
    {
        Env = env;
        Repo = repo ?? _t.File("repo");
        Volume = _t.File("volume.img");
        State = _t.File("state");
        DiskImages.Random(Volume, Size, seed: 501);
        A = Backup("a.img");
        PacksAfterA = LocalPacks();
        Overwrite(Volume, 4L << 20, 16 << 20, seed: 502);
        B = Backup("b.img");
        PacksOfB = [.. LocalPacks().Except(PacksAfterA)];
        Overwrite(Volume, 4L << 20, 16 << 20, seed: 503);
        C = Backup("c.img");
    }

    public IDictionary<string, string>? Env { get; }
    public string Repo { get; }
    public string Volume { get; }
    public string State { get; }
    public string A { get; }
    public string B { get; }
    public string C { get; }
    public string[] PacksAfterA { get; }
    public string[] PacksOfB { get; }

    public string File(string name) => _t.File(name);

    private bool IsLocal => !Repo.StartsWith("s3://", StringComparison.Ordinal);

    public string[] LocalPacks() => IsLocal ? [.. RepoFiles.Packs(Repo).Select(p => Path.GetRelativePath(Repo, p))] : [];

    private string Backup(string copyAs)
    {
        var r = Ok(["backup", Volume, "--repo", Repo, "--state-dir", State, "--json", "--no-progress"]);
        System.IO.File.Copy(Volume, _t.File(copyAs));
        return r.Str("id");
    }

    public CliRunner.Result Run(params string[] args) => CliRunner.Run(args, Env, TimeSpan.FromMinutes(5));

    public JsonElement Ok(params string[] args)
    {
        var r = Run(args);
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
        return Cli.Json(r.Stdout);
    }

    public JsonElement Prune(params string[] extra) => Ok(["prune", "--repo", Repo, "--json", "--no-progress", .. extra]);

    public void Forget(params string[] ids) => Ok(["forget", "--repo", Repo, "--json", .. ids]);

    public void AssertVerifiesAndRestores(params (string Id, string Image)[] points)
    {
        var verify = Run("verify", "--repo", Repo, "--read-data", "--json", "--no-progress");
        Assert.True(verify.ExitCode == 0, "verify --read-data: " + verify);
        Assert.Equal(points.Length, Cli.Json(verify.Stdout).Long("snapshots"));
        foreach (var (id, image) in points)
        {
            string target = _t.File($"restored-{id[..8]}-{Guid.NewGuid():N}.img");
            Ok("restore", id, "--repo", Repo, "--to", target, "--json", "--no-progress");
            Assert.True(Files.ContentEquals(_t.File(image), target), $"recovery point {id} restored differs from {image}");
            System.IO.File.Delete(target);
        }
    }

    /// <summary>Writes a lock record into a local repository as another process would (<c>locks/KIND-ID</c>).</summary>
    public string PlantLock(LockKind kind, int pid, DateTimeOffset refreshed, string? host = null)
    {
        string key = $"locks/{kind.ToString().ToLowerInvariant()}-{Guid.NewGuid():N}";
        var record = new LockRecord { Host = host ?? Environment.MachineName, Pid = pid, Kind = kind, Created = refreshed, Refreshed = refreshed };
        Directory.CreateDirectory(Path.Combine(Repo, "locks"));
        System.IO.File.WriteAllBytes(Path.Combine(Repo, key), record.Serialize());
        return key;
    }

    /// <summary>Every file of the repository with its length and content hash, for "nothing changed" checks.</summary>
    public SortedDictionary<string, string> Tree() => new(
        Directory.EnumerateFiles(Repo, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(Repo, f), Files.Sha256Hex), StringComparer.Ordinal);

    public static void Overwrite(string path, long offset, int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        using var f = new FileStream(path, FileMode.Open, FileAccess.Write);
        f.Position = offset;
        f.Write(bytes);
    }

    /// <summary>The pid of a process that has exited (a holder that died without releasing its lock).</summary>
    public static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        p.WaitForExit();
        return p.Id;
    }

    public void Dispose() => _t.Dispose();
}

/// <summary>
/// <c>blockrepl forget</c> and <c>prune</c> on a local repository through the real CLI (docs/format.md §8–9):
/// what only forgotten points used is deleted, wasteful packs are repacked, the kept points verify and restore byte
/// for byte, a dry run changes nothing, locks are honoured, and a kill -9 anywhere in prune leaves every point whole.
/// </summary>
public sealed class PruneTests
{
    private static string[] Strings(JsonElement e, string name) => [.. e.GetProperty(name).EnumerateArray().Select(x => x.GetString()!)];

    [Fact]
    public void ForgetB_PruneDeletesThePacksOnlyBUsed_AndAAndCStillRestore()
    {
        using var s = new PruneScenario();
        Assert.NotEmpty(s.PacksOfB);
        s.Forget(s.B);
        var r = s.Prune();

        Assert.Equal(s.PacksOfB.Order(StringComparer.Ordinal), Strings(r, "deletedPacks").Order(StringComparer.Ordinal));
        Assert.Empty(Strings(r, "repackedPacks"));
        Assert.True(r.Long("bytesReclaimed") >= 16L << 20, "B's 16 MiB of unique data should be reclaimed: " + r);
        foreach (var p in s.PacksOfB) Assert.False(File.Exists(Path.Combine(s.Repo, p)), $"{p} should be gone");
        foreach (var p in s.PacksAfterA) Assert.True(File.Exists(Path.Combine(s.Repo, p)), $"{p} (A's) should stay");
        Assert.DoesNotContain(Directory.EnumerateFiles(Path.Combine(s.Repo, "locks")), f => !Path.GetFileName(f).StartsWith("pruned-", StringComparison.Ordinal));
        s.AssertVerifiesAndRestores((s.A, "a.img"), (s.C, "c.img"));

        var again = s.Prune();
        Assert.Empty(Strings(again, "deletedPacks"));
        Assert.Equal(0, again.Long("bytesReclaimed"));
    }

    [Fact]
    public void ForgetA_RepacksThePackHalfOfWhichOnlyAUsed_AndBAndCStillRestore()
    {
        using var s = new PruneScenario();
        s.Forget(s.A);
        // At 60 % allowed waste the half-dead pack stays as it is.
        var lenient = s.Prune("--max-repack-waste", "60%", "--dry-run");
        Assert.Empty(Strings(lenient, "repackedPacks"));

        var r = s.Prune();
        var repacked = Strings(r, "repackedPacks");
        Assert.Single(repacked);
        Assert.Contains(repacked[0], s.PacksAfterA);
        Assert.Equal(1, r.Long("packsWritten"));
        Assert.True(r.Long("blobsRepacked") >= 256, "the live half of the pack (256 chunks) is copied: " + r);
        Assert.True(r.Long("bytesReclaimed") > 8L << 20, "about 16 MiB of A's own chunks are reclaimed: " + r);
        Assert.False(File.Exists(Path.Combine(s.Repo, repacked[0])));
        s.AssertVerifiesAndRestores((s.B, "b.img"), (s.C, "c.img"));
        Assert.Empty(Strings(s.Prune(), "repackedPacks"));
    }

    [Fact]
    public void DryRun_ReportsWhatItWouldDelete_AndChangesNothing()
    {
        using var s = new PruneScenario();
        s.Forget(s.A, s.B);
        var before = s.Tree();
        var r = s.Prune("--dry-run");
        Assert.True(r.GetProperty("dryRun").GetBoolean());
        Assert.Equal(s.PacksOfB, Strings(r, "deletedPacks"));
        Assert.Single(Strings(r, "repackedPacks"));
        Assert.True(r.Long("bytesReclaimed") > 16L << 20, r.ToString());
        Assert.Equal(before, s.Tree());

        var text = s.Run("prune", "--repo", s.Repo, "--dry-run", "--no-progress");
        Assert.Equal(0, text.ExitCode);
        Assert.Contains($"would delete {s.PacksOfB[0]}", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("would reclaim", text.Stdout, StringComparison.Ordinal);
        Assert.Equal(before, s.Tree());
    }

    [Fact]
    public void ALiveSharedLock_MakesPruneFailInOneLine_AndLeavesEverything()
    {
        using var s = new PruneScenario();
        s.Forget(s.B);
        string planted = s.PlantLock(LockKind.Shared, Environment.ProcessId, DateTimeOffset.UtcNow);
        var before = s.Tree();
        var r = s.Run("prune", "--repo", s.Repo, "--no-progress");
        Cli.AssertOneLineError(r, 9, $"repository in use by {Environment.MachineName} pid {Environment.ProcessId} since");
        Assert.Equal(before, s.Tree());

        // Once the writer is done, prune runs.
        File.Delete(Path.Combine(s.Repo, planted));
        Assert.Equal(s.PacksOfB, Strings(s.Prune(), "deletedPacks"));
    }

    [Fact]
    public void ARunningPrune_MakesABackupWithoutPatienceFailInOneLine()
    {
        using var s = new PruneScenario();
        s.PlantLock(LockKind.Exclusive, Environment.ProcessId, DateTimeOffset.UtcNow);
        var r = s.Run("backup", s.Volume, "--repo", s.Repo, "--state-dir", s.State, "--lock-wait", "0s", "--no-progress");
        Cli.AssertOneLineError(r, 9, $"in use by prune on {Environment.MachineName} pid {Environment.ProcessId}");
        Assert.Equal(3, Cli.Snapshots(s.Repo).Length);
    }

    [Fact]
    public void StaleLocks_AreReported_AndRemovedOnlyWithRemoveStaleLocks()
    {
        using var s = new PruneScenario();
        s.Forget(s.B);
        // Not refreshed for two hours (holder alive but hung, or on another host), and one whose process is gone.
        string old = s.PlantLock(LockKind.Shared, Environment.ProcessId, DateTimeOffset.UtcNow.AddHours(-2), host: "other-host");
        string dead = s.PlantLock(LockKind.Shared, PruneScenario.DeadPid(), DateTimeOffset.UtcNow);
        var before = s.Tree();
        var r = s.Run("prune", "--repo", s.Repo, "--no-progress");
        Cli.AssertOneLineError(r, 9, "2 stale lock(s)");
        Assert.Contains("--remove-stale-locks", r.Stderr, StringComparison.Ordinal);
        Assert.Equal(before, s.Tree());

        // A longer staleness makes the two-hour-old lock live again: prune is refused as "in use".
        var patient = s.Run("prune", "--repo", s.Repo, "--stale-lock-age", "3h", "--remove-stale-locks", "--no-progress");
        Cli.AssertOneLineError(patient, 9, "repository in use by other-host");

        var pruned = s.Prune("--remove-stale-locks");
        Assert.Equal(2, pruned.GetProperty("staleLocksRemoved").GetArrayLength());
        Assert.False(File.Exists(Path.Combine(s.Repo, old)));
        Assert.False(File.Exists(Path.Combine(s.Repo, dead)));
        Assert.Equal(s.PacksOfB, Strings(pruned, "deletedPacks"));
        s.AssertVerifiesAndRestores((s.A, "a.img"), (s.C, "c.img"));
    }

    /// <summary>Every step of prune that changes the repository, in order (PruneJob's crash points).</summary>
    public static TheoryData<string> CrashPoints => new()
    {
        "prune-marked", "prune-repacked", "prune-index-written", "prune-index-deleting", "prune-packs-deleting",
    };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public void KilledDuringPrune_EveryPointStillVerifiesAndRestores_AndTheNextPruneFinishes(string crashAt)
    {
        using var s = new PruneScenario();
        s.Forget(s.A, s.B);   // B's pack goes, A's first pack is repacked
        var killed = CliRunner.Run(["prune", "--repo", s.Repo, "--no-progress"], new Dictionary<string, string> { ["BLOCKREPL_TEST_CRASH_AT"] = crashAt }, TimeSpan.FromMinutes(5));
        Assert.True(killed.ExitCode == 137, $"prune should have died by SIGKILL at {crashAt}: {killed}");
        s.AssertVerifiesAndRestores((s.C, "c.img"));

        // The dead prune's exclusive lock is stale (its process is gone): a backup goes ahead, a prune asks first.
        PruneScenario.Overwrite(s.Volume, 30L << 20, 1 << 20, seed: 504);
        var d = s.Ok("backup", s.Volume, "--repo", s.Repo, "--state-dir", s.State, "--json", "--no-progress").Str("id");
        File.Copy(s.Volume, s.File("d.img"));
        Cli.AssertOneLineError(s.Run("prune", "--repo", s.Repo, "--no-progress"), 9, "stale lock");

        var finished = s.Prune("--remove-stale-locks");
        Assert.Single(finished.GetProperty("staleLocksRemoved").EnumerateArray());
        foreach (var p in s.PacksOfB) Assert.False(File.Exists(Path.Combine(s.Repo, p)), $"{p} should be gone after the second prune");
        s.AssertVerifiesAndRestores((s.C, "c.img"), (d, "d.img"));
        var idle = s.Prune();
        Assert.Empty(Strings(idle, "deletedPacks"));
        Assert.Empty(Strings(idle, "repackedPacks"));
        Assert.Empty(Strings(idle, "deletedIndexFiles"));
    }

    [Fact]
    public void BadInput_IsOneLineWithItsExitCode()
    {
        using var t = new TempDir("br-prune-bad");
        Cli.AssertOneLineError(CliRunner.Run("prune", "--repo", t.File("nope")), 4, "does not exist");
        Cli.AssertOneLineError(CliRunner.Run("prune", "--repo", t.Path, "--max-repack-waste", "150%"), 2, "--max-repack-waste");
        Cli.AssertOneLineError(CliRunner.Run("forget", "--repo", t.Path), 4);
        CliRunner.Ok("init", "--repo", t.File("r"));
        Cli.AssertOneLineError(CliRunner.Run("forget", "--repo", t.File("r")), 2, "at least one");
        Cli.AssertOneLineError(CliRunner.Run("forget", "--repo", t.File("r"), "abcd1234"), 5, "not found");
    }
}

/// <summary>The same prune against a real S3 server (Ceph RADOS Gateway): forget B, prune, A and C whole.</summary>
[Collection("rgw")]
public sealed class S3PruneTests(RgwServer server)
{
    [Fact]
    public async Task ForgetB_PruneReclaimsItsData_AndAAndCStillRestore()
    {
        string bucket = await server.CreateBucketAsync("prune");
        using var s = new PruneScenario($"s3://{bucket}/r", new Dictionary<string, string>(server.ClientEnvironment));
        s.Forget(s.B);
        var r = s.Prune();
        Assert.Single(r.GetProperty("deletedPacks").EnumerateArray());
        Assert.True(r.Long("bytesReclaimed") >= 16L << 20, r.ToString());
        s.AssertVerifiesAndRestores((s.A, "a.img"), (s.C, "c.img"));
        Assert.Equal(0, s.Prune().Long("bytesReclaimed"));
    }
}
