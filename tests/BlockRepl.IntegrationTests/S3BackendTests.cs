using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <see cref="S3Backend"/> against a real RADOS Gateway, beyond the shared contract suite
/// (<see cref="RgwBackendConformanceTests"/>): key prefixes, HEAD-then-PUT, multipart, error messages,
/// and a CLI backup → incremental → restore round trip with <c>--repo s3://bucket/prefix</c>.
/// </summary>
[Collection("rgw")]
public sealed class S3BackendTests(RgwServer server)
{
    private S3Backend Backend(string bucket, string prefix = "repo", S3BackendOptions? options = null, string? secret = null) =>
        new(S3Location.Parse($"s3://{bucket}/{prefix}"), (options ?? new S3BackendOptions()) with
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, secret ?? server.SecretKey),
        });

    private static async Task<List<string>> Keys(IBackend backend, string prefix)
    {
        var keys = new List<string>();
        await foreach (var o in backend.ListAsync(prefix)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    // The IBackend contract itself (visibility, abandon, create-only with If-None-Match, ranges,
    // listing past 1000 keys, delete, concurrency, large objects) is BackendConformanceTests, which
    // runs on RGW, moto and the local backend. Here: what is specific to S3.

    [Fact]
    public async Task RepositoriesUnderDifferentPrefixesOfOneBucketDoNotSeeEachOther()
    {
        string bucket = await server.CreateBucketAsync("s3b-prefix");
        await using var backend = Backend(bucket);
        await using var other = Backend(bucket, "other");
        await using var nested = Backend(bucket, "repo/sub");
        await backend.PutAsync("config", new byte[] { 9 });
        await backend.PutAsync("sub/config", new byte[] { 8 });

        Assert.Equal(["config", "sub/config"], await Keys(backend, ""));
        Assert.Empty(await Keys(other, ""));
        Assert.Null(await other.StatAsync("config"));
        Assert.Equal(["config"], await Keys(nested, ""));
        Assert.Equal(new byte[] { 8 }, await nested.ReadAllAsync("config"));
        await other.PutAsync("config", new byte[] { 7 });   // same key, other prefix: no conflict
        Assert.Equal(new byte[] { 9 }, await backend.ReadAllAsync("config"));
    }

    [Fact]
    public async Task HeadThenPutDetectsExistingObjects_OnAVersionedBucketThatIgnoresIfNoneMatch()
    {
        string bucket = await server.CreateBucketAsync("s3b-head", versioning: true);
        await using var backend = Backend(bucket, options: new S3BackendOptions { CreateOnly = CreateOnlyMode.HeadThenPut });
        await backend.PutAsync("snapshots/s1", new byte[] { 1 });
        await Assert.ThrowsAsync<ObjectExistsException>(() => backend.PutAsync("snapshots/s1", new byte[] { 2 }).AsTask());
        Assert.Equal(new byte[] { 1 }, await backend.ReadAllAsync("snapshots/s1"));
    }

    [Fact]
    public async Task LargeObjectsGoMultipartAndLeaveNoIncompleteUpload()
    {
        string bucket = await server.CreateBucketAsync("s3b-multi");
        var options = new S3BackendOptions { MultipartThreshold = 6L << 20, PartSize = 5L << 20 };
        await using var backend = Backend(bucket, options: options);
        var content = RandomBytes((12 << 20) + 777, 2);

        await backend.PutAsync("data/big.pack", content);

        Assert.Equal(content.Length, (await backend.StatAsync("data/big.pack"))?.Length);
        Assert.Equal(content, await backend.ReadAllAsync("data/big.pack"));
        var range = new byte[10_000];
        Assert.Equal(range.Length, await backend.ReadAtAsync("data/big.pack", (5L << 20) - 5_000, range));
        Assert.Equal(content.AsSpan((5 << 20) - 5_000, 10_000).ToArray(), range);
        var uploads = await S3TestServers.S3ApiAsync(server, ["list-multipart-uploads", "--bucket", bucket]);
        Assert.DoesNotContain("UploadId", uploads.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MissingBucketAndBadCredentialsGivePermanentClearErrorsWithoutSecrets()
    {
        await using (var backend = Backend("no-such-bucket-" + Guid.NewGuid().ToString("N")[..8]))
        {
            var e = await Assert.ThrowsAsync<StorageException>(() => backend.ReadAllAsync("config").AsTask());
            Assert.False(e.Transient);
            Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
        }

        string bucket = await server.CreateBucketAsync("s3b-auth");
        const string wrongSecret = "wrong-secret-0123456789abcdefghijklmnopq";
        await using (var backend = Backend(bucket, secret: wrongSecret))
        {
            var e = await Assert.ThrowsAsync<StorageException>(() => backend.PutAsync("config", new byte[1]).AsTask());
            Assert.False(e.Transient);
            Assert.Contains("access denied (check credentials", e.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(wrongSecret, e.ToString(), StringComparison.Ordinal);
            Assert.DoesNotContain(server.SecretKey, e.ToString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task CliBackupIncrementalRestore_WithAnS3Repository_RestoresByteForByte()
    {
        string bucket = await server.CreateBucketAsync("s3b-e2e");
        string repo = $"s3://{bucket}/hosts/a";
        using var t = new TempDir("br-s3-e2e");
        string src = t.File("volume.img"), state = t.File("state");
        DiskImages.Mixed(src, 24L << 20, seed: 5);
        File.Copy(src, t.File("v0"));
        var env = new Dictionary<string, string>(server.ClientEnvironment);
        var timeout = TimeSpan.FromMinutes(3);

        var full = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("FULL", full.Str("mode"));

        WriteLoad.ScatteredWrites(src, 10, 65536, seed: 9);
        File.Copy(src, t.File("v1"));
        var incr = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(10L * 65536, incr.Long("changedBytes"));

        Run(["restore", full.Str("id"), "--repo", repo, "--to", t.File("r0"), "--json", "--no-progress"]);
        Run(["restore", incr.Str("id"), "--repo", repo, "--to", t.File("r1"), "--json", "--no-progress"]);
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("r0")), "full restore differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental restore differs");

        System.Text.Json.JsonElement Run(string[] args)
        {
            var r = CliRunner.Run(args, env, timeout);
            if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
            return Cli.Json(r.Stdout);
        }
    }

    [Fact]
    public async Task CliEndpointUrlOption_ReachesTheStoreWithoutEndpointVariables()
    {
        string bucket = await server.CreateBucketAsync("s3b-endpoint");
        string repo = $"s3://{bucket}/p";
        using var t = new TempDir("br-s3-endpoint");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 3L << 20, seed: 8);
        var env = server.ClientEnvironment.Where(kv => kv.Key != "AWS_ENDPOINT_URL_S3").ToDictionary(kv => kv.Key, kv => kv.Value);
        var timeout = TimeSpan.FromMinutes(2);

        var backup = CliRunner.Run(["backup", src, "--repo", repo, "--endpoint-url", server.Endpoint, "--state-dir", t.File("state"), "--json", "--no-progress"], env, timeout);
        Assert.True(backup.ExitCode == 0, backup.ToString());
        var list = CliRunner.Run(["snapshots", "--repo", repo, "--endpoint-url", server.Endpoint, "--json"], env, timeout);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Equal(Cli.Json(backup.Stdout).Str("id"), Cli.Json(list.Stdout)[0].Str("id"));
        var verify = CliRunner.Run(["verify", "--repo", repo, "--endpoint-url", server.Endpoint, "--read-data", "--no-progress"], env, timeout);
        Assert.True(verify.ExitCode == 0, verify.ToString());
    }

    [Fact]
    public async Task CliReportsAMissingBucketClearly()
    {
        var r = await Task.Run(() => CliRunner.Run(["snapshots", "--repo", "s3://no-such-bucket-cli/x", "--json"],
            new Dictionary<string, string>(server.ClientEnvironment), TimeSpan.FromMinutes(1)));
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("bucket 'no-such-bucket-cli' does not exist", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain(server.SecretKey, r.Stderr + r.Stdout, StringComparison.Ordinal);
    }

    private static byte[] RandomBytes(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}
