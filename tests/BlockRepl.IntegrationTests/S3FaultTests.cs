using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// The real CLI against RGW through <see cref="FaultProxy"/>: throttling (503 SlowDown), connection
/// resets and slow responses are survived by the retries (byte-identical restores, clean
/// <c>verify --read-data</c> run without the proxy); a store that keeps failing ends the run with a
/// one-line error and no manifest; an unreachable endpoint gives a one-line error.
/// </summary>
[Collection("rgw")]
public sealed class S3FaultTests(RgwServer server)
{
    private static readonly TimeSpan CliTimeout = TimeSpan.FromSeconds(50);

    private Dictionary<string, string> Env(string endpoint) =>
        new(server.ClientEnvironment) { ["AWS_ENDPOINT_URL_S3"] = endpoint };

    [Fact]
    public Task SurvivesThirtyPercentSlowDown() =>
        RoundTripThroughProxyAsync("s3f-503", p => p.SlowDownFraction = 0.3, p => Assert.True(p.SlowDowns > 0, "no 503 injected"));

    [Fact]
    public Task SurvivesConnectionResets() =>
        RoundTripThroughProxyAsync("s3f-reset", p => p.ResetEvery(7, ResetPoint.BeforeForwarding),
            p => Assert.True(p.Resets >= 3, $"only {p.Resets} resets injected"));

    // Regression: a reset after the store took a PUT makes the SDK's own retry meet 412; the upload must
    // recognise its own object by content instead of reporting "object already exists".
    [Fact]
    public Task SurvivesConnectionResetsAfterTheStoreTookTheRequest() =>
        RoundTripThroughProxyAsync("s3f-reset-after", p =>
        {
            foreach (long n in new long[] { 3, 5, 12, 20, 30 }) p.ResetRequest(n, ResetPoint.AfterForwarding);
        }, p => Assert.True(p.Resets >= 5, $"only {p.Resets} resets injected"));

    [Fact]
    public Task SurvivesSlowResponses() =>
        RoundTripThroughProxyAsync("s3f-slow", p => p.Delay(TimeSpan.FromMilliseconds(200), TimeSpan.FromMilliseconds(500)),
            p => Assert.True(p.Delayed > 0, "no response delayed"), imageMiB: 10);

    [Fact]
    public async Task AStoreThatAlwaysFails_EndsTheBackupWithAOneLineErrorAndNoManifest()
    {
        string bucket = await server.CreateBucketAsync("s3f-fail");
        string repo = $"s3://{bucket}/p";
        using var t = new TempDir("br-s3f-fail");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 4L << 20, seed: 21);
        using var proxy = new FaultProxy(new Uri(server.Endpoint), seed: 4) { FailAll = true };

        var sw = Stopwatch.StartNew();
        var r = await Task.Run(() => CliRunner.Run(
            ["backup", src, "--repo", repo, "--state-dir", t.File("state"), "--json", "--no-progress"], Env(proxy.Url), CliTimeout));
        sw.Stop();

        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(45), $"gave up only after {sw.Elapsed}");
        AssertOneLineError(r);
        Assert.Contains("gave up after", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("503", r.Stderr, StringComparison.Ordinal);
        Assert.True(proxy.SlowDowns > 1, $"{proxy.SlowDowns} 503s: no retries");
        Assert.Equal(0, proxy.Forwarded);
        Assert.Empty(await KeysAsync(bucket, "p", "snapshots/"));
    }

    [Fact]
    public async Task AManifestUploadThatKeepsFailing_LeavesNoManifestAndARepositoryThatVerifies()
    {
        string bucket = await server.CreateBucketAsync("s3f-manifest");
        string repo = $"s3://{bucket}/p";
        using var t = new TempDir("br-s3f-manifest");
        string src = t.File("volume.img"), state = t.File("state");
        DiskImages.Mixed(src, 8L << 20, seed: 22);
        var direct = Env(server.Endpoint);

        var full = CliRunner.Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"], direct, CliTimeout);
        Assert.True(full.ExitCode == 0, full.ToString());
        var before = await KeysAsync(bucket, "p", "snapshots/");
        Assert.Single(before);

        // Packs and indexes of the incremental go through; every upload under snapshots/ gets 503.
        WriteLoad.ScatteredWrites(src, 8, 65536, seed: 23);
        using var proxy = new FaultProxy(new Uri(server.Endpoint), seed: 5);
        proxy.SlowDownWhere(line => line.StartsWith("PUT ", StringComparison.Ordinal) && line.Contains("/snapshots/", StringComparison.Ordinal));
        var incr = await Task.Run(() => CliRunner.Run(
            ["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"], Env(proxy.Url), CliTimeout));

        Assert.True(incr.ExitCode != 0, incr.ToString());
        AssertOneLineError(incr);
        Assert.Contains("gave up after", incr.Stderr, StringComparison.Ordinal);
        Assert.True(proxy.SlowDowns > 1, $"{proxy.SlowDowns} 503s");
        Assert.Equal(before, await KeysAsync(bucket, "p", "snapshots/"));

        var verify = CliRunner.Run(["verify", "--repo", repo, "--read-data", "--no-progress"], direct, CliTimeout);
        Assert.True(verify.ExitCode == 0, verify.ToString());
    }

    [Fact]
    public async Task AnUnreachableEndpoint_GivesAOneLineError()
    {
        int port;
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop(); // nothing listens there now: connection refused
        using var t = new TempDir("br-s3f-unreach");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 1L << 20, seed: 24);

        var sw = Stopwatch.StartNew();
        var r = await Task.Run(() => CliRunner.Run(
            ["backup", src, "--repo", "s3://unreachable/p", "--state-dir", t.File("state"), "--json", "--no-progress"],
            Env($"http://127.0.0.1:{port}"), CliTimeout));
        sw.Stop();

        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(45), $"gave up only after {sw.Elapsed}");
        AssertOneLineError(r);
        Assert.Contains($"127.0.0.1:{port}", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(server.SecretKey, r.Stderr + r.Stdout, StringComparison.Ordinal);
    }

    /// <summary>backup → incremental → restore both → byte compare, all through the proxy; then verify --read-data directly.</summary>
    private async Task RoundTripThroughProxyAsync(string name, Action<FaultProxy> faults, Action<FaultProxy> check, int imageMiB = 16)
    {
        string bucket = await server.CreateBucketAsync(name);
        string repo = $"s3://{bucket}/hosts/a";
        using var t = new TempDir("br-" + name);
        string src = t.File("volume.img"), state = t.File("state");
        DiskImages.Mixed(src, (long)imageMiB << 20, seed: 31);
        using var proxy = new FaultProxy(new Uri(server.Endpoint), seed: 7);
        faults(proxy);
        var env = Env(proxy.Url);

        var full = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("FULL", full.Str("mode"));
        WriteLoad.ScatteredWrites(src, 10, 65536, seed: 32);
        File.Copy(src, t.File("v1"));
        var incr = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));

        Run(["restore", incr.Str("id"), "--repo", repo, "--to", t.File("r1"), "--json", "--no-progress"]);
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental restore differs");
        check(proxy);

        var verify = await Task.Run(() => CliRunner.Run(["verify", "--repo", repo, "--read-data", "--no-progress"], Env(server.Endpoint), CliTimeout));
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Assert.Equal(2, (await KeysAsync(bucket, "hosts/a", "snapshots/")).Count);

        System.Text.Json.JsonElement Run(string[] args)
        {
            var sw = Stopwatch.StartNew();
            var r = CliRunner.Run(args, env, CliTimeout);
            Console.WriteLine($"{name}: {args[0]} {sw.Elapsed.TotalSeconds:0.0} s, {proxy.Requests} requests so far, {proxy.FaultsInjected} faults");
            if (r.ExitCode != 0)
                throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed ({proxy.Requests} requests, {proxy.FaultsInjected} faults): {r}");
            return Cli.Json(r.Stdout);
        }
    }

    private static void AssertOneLineError(CliRunner.Result r)
    {
        string err = r.Stderr.Trim();
        Assert.False(string.IsNullOrEmpty(err), r.ToString());
        Assert.DoesNotContain('\n', err);
        Assert.StartsWith("blockrepl: ", err, StringComparison.Ordinal);
        Assert.DoesNotContain(" at ", err, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", err, StringComparison.Ordinal);
    }

    private async Task<List<string>> KeysAsync(string bucket, string prefix, string under)
    {
        await using var backend = new S3Backend(S3Location.Parse($"s3://{bucket}/{prefix}"), new S3BackendOptions
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
        });
        var keys = new List<string>();
        await foreach (var o in backend.ListAsync(under)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }
}
