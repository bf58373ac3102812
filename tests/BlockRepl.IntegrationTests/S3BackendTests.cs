using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <see cref="S3Backend"/> against a real RADOS Gateway: the backend contract on a fresh bucket, the
/// create-only modes, multipart, error messages, and a CLI backup → incremental → restore round trip
/// with <c>--repo s3://bucket/prefix</c>.
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

    [Fact]
    public async Task PutStatReadListDelete_OnAFreshBucket()
    {
        string bucket = await server.CreateBucketAsync("s3b-basic");
        await using var backend = Backend(bucket);
        var content = RandomBytes(200_000, 1);

        await using (var upload = await backend.CreateAsync("data/ab/ab01.pack"))
        {
            await upload.Stream.WriteAsync(content.AsMemory(0, 50_000));
            await upload.Stream.WriteAsync(content.AsMemory(50_000));
            Assert.Null(await backend.StatAsync("data/ab/ab01.pack"));
            await upload.CommitAsync();
        }
        await backend.PutAsync("index/i1", new byte[] { 1, 2, 3 });
        await backend.PutAsync("config", new byte[] { 9 });

        Assert.Equal(new ObjectInfo("data/ab/ab01.pack", content.Length), await backend.StatAsync("data/ab/ab01.pack"));
        Assert.Null(await backend.StatAsync("data/ab/missing"));
        Assert.Equal(content, await backend.ReadAllAsync("data/ab/ab01.pack"));

        var range = new byte[4096];
        Assert.Equal(4096, await backend.ReadAtAsync("data/ab/ab01.pack", 12_345, range));
        Assert.Equal(content.AsSpan(12_345, 4096).ToArray(), range);
        Assert.Equal(100, await backend.ReadAtAsync("data/ab/ab01.pack", content.Length - 100, range));   // short at the end
        Assert.Equal(0, await backend.ReadAtAsync("data/ab/ab01.pack", content.Length + 10, range));
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => backend.ReadAtAsync("data/ab/missing", 0, range).AsTask());
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => backend.ReadAllAsync("nope").AsTask());

        Assert.Equal(["config", "data/ab/ab01.pack", "index/i1"], await Keys(backend, ""));
        Assert.Equal(["data/ab/ab01.pack"], await Keys(backend, "data/"));
        Assert.Empty(await Keys(backend, "snapshots/"));
        await using (var other = Backend(bucket, "other")) Assert.Empty(await Keys(other, ""));

        await backend.DeleteAsync("index/i1");
        await backend.DeleteAsync("index/i1");   // already gone: fine
        Assert.Null(await backend.StatAsync("index/i1"));
        Assert.Equal(["config", "data/ab/ab01.pack"], await Keys(backend, ""));
    }

    [Fact]
    public async Task AbandonedUploadLeavesNothing()
    {
        string bucket = await server.CreateBucketAsync("s3b-abandon");
        await using var backend = Backend(bucket);
        await using (var upload = await backend.CreateAsync("snapshots/x"))
            await upload.Stream.WriteAsync(new byte[3_000_000]);   // spooled to a file
        Assert.Empty(await Keys(backend, ""));
    }

    [Fact]
    public async Task SecondCreateOfAKeyFailsAndKeepsTheFirstContent_Conditional()
    {
        string bucket = await server.CreateBucketAsync("s3b-cond");
        await using var backend = Backend(bucket);
        await backend.PutAsync("snapshots/s1", new byte[] { 1 });
        await Assert.ThrowsAsync<ObjectExistsException>(() => backend.PutAsync("snapshots/s1", new byte[] { 2 }).AsTask());
        Assert.Equal(new byte[] { 1 }, await backend.ReadAllAsync("snapshots/s1"));
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
    public async Task ListingPagesPast1000Keys()
    {
        string bucket = await server.CreateBucketAsync("s3b-list");
        await using var backend = Backend(bucket);
        await Parallel.ForEachAsync(Enumerable.Range(0, 1100), new ParallelOptions { MaxDegreeOfParallelism = 32 },
            async (i, ct) => await backend.PutAsync($"index/{i:D5}", new byte[] { (byte)i }, ct));
        var keys = await Keys(backend, "index/");
        Assert.Equal(1100, keys.Count);
        Assert.Equal(Enumerable.Range(0, 1100).Select(i => $"index/{i:D5}"), keys);
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
