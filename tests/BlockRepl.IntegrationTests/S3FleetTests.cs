using System.Diagnostics;
using System.Text.Json;
using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Issue #3 item 7 and the S3 crash case, against RGW: a fleet shares one bucket (two servers back up
/// concurrently into one prefix, identical blocks across servers are stored once), and a backup
/// killed with SIGKILL mid-upload leaves a clean repository that the next run completes.
/// </summary>
[Collection("rgw")]
public sealed class S3FleetTests(RgwServer server)
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(5);

    [Fact]
    public async Task TwoServersBackingUpConcurrentlyIntoOneRepository_BothSucceedAndShareBlocks()
    {
        string bucket = await server.CreateBucketAsync("fleet");
        string repo = $"s3://{bucket}/fleet";
        using var t = new TempDir("br-s3-fleet");
        const long size = 64L << 20;
        string a = t.File("server-a.img"), b = t.File("server-b.img");
        DiskImages.Mixed(a, size, seed: 101);
        // B = A's first half + its own second half: ~half the content is shared.
        File.Copy(a, b);
        string other = t.File("other.img");
        DiskImages.Mixed(other, size / 2, seed: 202);
        using (var dst = new FileStream(b, FileMode.Open, FileAccess.Write))
        using (var from = File.OpenRead(other))
        {
            dst.Position = size / 2;
            from.CopyTo(dst);
        }
        Assert.False(Files.ContentEquals(a, b));

        // Both first backups start at once into the same new prefix (so they also race on init).
        using var runA = Start(["backup", a, "--repo", repo, "--state-dir", t.File("state-a"), "--host", "server-a", "--json", "--no-progress"]);
        using var runB = Start(["backup", b, "--repo", repo, "--state-dir", t.File("state-b"), "--host", "server-b", "--json", "--no-progress"]);
        var ra = runA.Wait();
        var rb = runB.Wait();
        Assert.True(ra.ExitCode == 0, "server A: " + ra);
        Assert.True(rb.ExitCode == 0, "server B: " + rb);
        var backupA = Cli.Json(ra.Stdout);
        var backupB = Cli.Json(rb.Stdout);
        Assert.Equal("FULL", backupA.Str("mode"));
        Assert.Equal("FULL", backupB.Str("mode"));
        Assert.Equal(JsonValueKind.Number, backupA.GetProperty("putRequestsPerGiBChanged").ValueKind);

        var verify = Run(["verify", "--repo", repo, "--read-data", "--json", "--no-progress"]);
        Assert.True(verify.GetProperty("ok").GetBoolean(), verify.ToString());
        Assert.Equal(2, verify.Long("snapshots"));

        Run(["restore", backupA.Str("id"), "--repo", repo, "--to", t.File("ra.img"), "--json", "--no-progress"]);
        Run(["restore", backupB.Str("id"), "--repo", repo, "--to", t.File("rb.img"), "--json", "--no-progress"]);
        Assert.True(Files.ContentEquals(a, t.File("ra.img")), "server A's restore differs");
        Assert.True(Files.ContentEquals(b, t.File("rb.img")), "server B's restore differs");

        // A third server with a copy of A's volume: every block is already in the bucket.
        string c = t.File("server-c.img");
        File.Copy(a, c);
        var backupC = Run(["backup", c, "--repo", repo, "--state-dir", t.File("state-c"), "--host", "server-c", "--json", "--no-progress"]);
        Assert.Equal("FULL", backupC.Str("mode"));
        Assert.True(backupC.Long("changedBytes") > 0);
        Assert.Equal(0, backupC.Long("newBytes"));
        Assert.Equal(0, backupC.Long("packsWritten"));

        var list = Cli.Json(RunRaw(["snapshots", "--repo", repo, "--json"]).Stdout).EnumerateArray().ToList();
        Assert.Equal(3, list.Count);
        var byHost = list.ToDictionary(m => m.Str("host"), StringComparer.Ordinal);
        Assert.Equal(["server-a", "server-b", "server-c"], byHost.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(backupA.Str("id"), byHost["server-a"].Str("id"));
        Assert.Equal(backupB.Str("id"), byHost["server-b"].Str("id"));
        Assert.Equal(backupA.Str("source"), byHost["server-a"].Str("source"));
        Assert.Equal(backupB.Str("source"), byHost["server-b"].Str("source"));
        Assert.NotEqual(byHost["server-a"].Str("source"), byHost["server-b"].Str("source"));
    }

    [Fact]
    public async Task KilledMidUpload_LeavesACleanRepositoryAndTheNextRunCompletes()
    {
        string bucket = await server.CreateBucketAsync("kill9");
        string repo = $"s3://{bucket}/r";
        using var t = new TempDir("br-s3-kill9");
        string src = t.File("volume.img"), state = t.File("state");
        // Large enough (about 8 packs) that, with several pack uploads in flight, the first index object
        // appears long before the manifest: the kill always lands mid-upload.
        DiskImages.Mixed(src, 512L << 20, seed: 909);
        await using var backend = new S3Backend(S3Location.Parse(repo), new S3BackendOptions
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
        });

        using (var run = Start(["backup", src, "--repo", repo, "--state-dir", state, "--workers", "1", "--json", "--no-progress"]))
        {
            var sw = Stopwatch.StartNew();
            while (!await AnyAsync(backend, "index/"))
            {
                if (run.Process.HasExited) throw new Xunit.Sdk.XunitException("backup ended before its first index object appeared: " + run.Wait());
                if (sw.Elapsed > TimeSpan.FromMinutes(3)) throw new Xunit.Sdk.XunitException("no index object within 3 minutes");
                await Task.Delay(5);
            }
            run.Process.Kill();   // SIGKILL
            var killed = run.Wait();
            Assert.True(killed.ExitCode == 137, "expected the backup to die by SIGKILL: " + killed);
        }
        Assert.True(await AnyAsync(backend, "data/"), "the killed run should have left at least one pack");

        var verify = RunRaw(["verify", "--repo", repo, "--read-data", "--no-progress"]);
        Assert.True(verify.ExitCode == 0, "verify after kill -9: " + verify);
        Assert.Empty(Cli.Json(RunRaw(["snapshots", "--repo", repo, "--json"]).Stdout).EnumerateArray());

        var resumed = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.True(resumed.Long("newBytes") < resumed.Long("changedBytes"), "the resumed run should reuse the packs indexed before the kill: " + resumed);
        Assert.Single(Cli.Json(RunRaw(["snapshots", "--repo", repo, "--json"]).Stdout).EnumerateArray());
        Run(["restore", resumed.Str("id"), "--repo", repo, "--to", t.File("restored.img"), "--json", "--no-progress"]);
        Assert.True(Files.ContentEquals(src, t.File("restored.img")), "restore after resume differs");
        var verify2 = RunRaw(["verify", "--repo", repo, "--read-data", "--no-progress"]);
        Assert.True(verify2.ExitCode == 0, "verify after the resumed run: " + verify2);

        var uploads = await S3TestServers.S3ApiAsync(server, ["list-multipart-uploads", "--bucket", bucket]);
        Assert.DoesNotContain("UploadId", uploads.Stdout, StringComparison.Ordinal);
    }

    private static async Task<bool> AnyAsync(S3Backend backend, string prefix)
    {
        await foreach (var _ in backend.ListAsync(prefix)) return true;
        return false;
    }

    private Dictionary<string, string> Env() => new(server.ClientEnvironment);

    private RunningCli Start(string[] args) => new(CliRunner.Start(args, Env()), args);

    private CliRunner.Result RunRaw(string[] args) => CliRunner.Run(args, Env(), s_timeout);

    private JsonElement Run(string[] args)
    {
        var r = RunRaw(args);
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
        return Cli.Json(r.Stdout);
    }

    /// <summary>A blockrepl child whose output is drained while it runs.</summary>
    private sealed class RunningCli : IDisposable
    {
        private readonly Task<string> _stdout;
        private readonly Task<string> _stderr;
        private readonly string[] _args;

        public RunningCli(Process process, string[] args)
        {
            Process = process;
            _args = args;
            _stdout = process.StandardOutput.ReadToEndAsync();
            _stderr = process.StandardError.ReadToEndAsync();
        }

        public Process Process { get; }

        public CliRunner.Result Wait()
        {
            if (!Process.WaitForExit(s_timeout))
            {
                Process.Kill(entireProcessTree: true);
                throw new TimeoutException($"blockrepl {string.Join(' ', _args)} did not finish in {s_timeout}");
            }
            Process.WaitForExit();
            return new CliRunner.Result(Process.ExitCode, _stdout.Result, _stderr.Result);
        }

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                try { Process.Kill(); } catch (InvalidOperationException) { }
                Process.WaitForExit();
            }
            Process.Dispose();
        }
    }
}
