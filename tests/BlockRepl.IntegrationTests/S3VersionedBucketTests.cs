using System.Text.Json;
using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Create-only writes on versioned and Object Lock buckets (docs/s3.md, "Create-only writes"), against two
/// independent S3 implementations: RGW 16, which ignores <c>If-None-Match</c> on versioned buckets, and
/// moto, which honours it as AWS does. The backend's default (<see cref="CreateOnlyMode.Auto"/>) must refuse
/// a second create of a key on both without adding a version, and a repository must work there end to end.
/// </summary>
public abstract class S3VersionedBucketTests(IS3TestServer server)
{
    /// <summary>What the store does with <c>If-None-Match: *</c> on a versioning-enabled bucket.</summary>
    protected abstract bool HonoursIfNoneMatchOnVersionedBuckets { get; }

    private S3Backend Backend(string bucket, CreateOnlyMode mode = CreateOnlyMode.Auto) =>
        new(S3Location.Parse($"s3://{bucket}/repo"), new S3BackendOptions
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
            CreateOnly = mode,
        });

    private async Task<List<string>> VersionIdsAsync(string bucket, string key)
    {
        var r = await S3TestServers.S3ApiAsync(server, ["list-object-versions", "--bucket", bucket, "--prefix", "repo/" + key, "--output", "json"]);
        if (string.IsNullOrWhiteSpace(r.Stdout)) return [];
        using var doc = JsonDocument.Parse(r.Stdout);
        return doc.RootElement.TryGetProperty("Versions", out var versions)
            ? versions.EnumerateArray().Where(v => v.GetProperty("Key").GetString() == "repo/" + key).Select(v => v.GetProperty("VersionId").GetString()!).ToList()
            : [];
    }

    [Fact]
    public async Task TheStoresOwnIfNoneMatchOnAVersionedBucket_IsAsDocumented()
    {
        string bucket = await server.CreateBucketAsync("ver-raw", versioning: true);
        await using var forced = Backend(bucket, CreateOnlyMode.Conditional);
        await forced.PutAsync("snapshots/a.snap", "first"u8.ToArray());
        if (HonoursIfNoneMatchOnVersionedBuckets)
        {
            await Assert.ThrowsAsync<ObjectExistsException>(() => forced.PutAsync("snapshots/a.snap", "second"u8.ToArray()).AsTask());
            Assert.Single(await VersionIdsAsync(bucket, "snapshots/a.snap"));
        }
        else
        {
            // RGW 16 (ref/rgw.md §4): the header is ignored, a second version is added and becomes the object.
            await forced.PutAsync("snapshots/a.snap", "second"u8.ToArray());
            Assert.Equal(2, (await VersionIdsAsync(bucket, "snapshots/a.snap")).Count);
            Assert.Equal("second"u8.ToArray(), await forced.ReadAllAsync("snapshots/a.snap"));
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ASecondCreateOfAnExistingManifestKey_IsRefusedAndAddsNoVersion(bool objectLock)
    {
        string bucket = await server.CreateBucketAsync(objectLock ? "ver-lock" : "ver-create", versioning: true, objectLock: objectLock);
        await using var backend = Backend(bucket);
        const string key = "snapshots/0123456789abcdef0123456789abcdef.snap";
        await backend.PutAsync(key, "the manifest"u8.ToArray());
        Assert.Equal("Enabled", backend.BucketVersioning);

        await Assert.ThrowsAsync<ObjectExistsException>(() => backend.PutAsync(key, "another manifest"u8.ToArray()).AsTask());
        // a second writer (its own backend, its own detection) is refused the same way
        await using (var other = Backend(bucket))
            await Assert.ThrowsAsync<ObjectExistsException>(() => other.PutAsync(key, "a third one"u8.ToArray()).AsTask());

        Assert.Equal("the manifest"u8.ToArray(), await backend.ReadAllAsync(key));
        Assert.Single(await VersionIdsAsync(bucket, key));
    }

    [Fact]
    public async Task RacingCreatesOfOneKey_ExactlyOneWinsAndItsContentIsTheObject()
    {
        string bucket = await server.CreateBucketAsync("ver-race", versioning: true);
        const string key = "config";
        var backends = Enumerable.Range(0, 6).Select(_ => Backend(bucket)).ToList();
        try
        {
            using var start = new ManualResetEventSlim();
            var attempts = backends.Select((b, i) => Task.Run(async () =>
            {
                start.Wait();
                try { await b.PutAsync(key, System.Text.Encoding.ASCII.GetBytes($"writer {i}")); return i; }
                catch (ObjectExistsException) { return -1; }
            })).ToList();
            start.Set();
            var results = await Task.WhenAll(attempts);
            int winner = Assert.Single(results, r => r >= 0);
            Assert.Equal(System.Text.Encoding.ASCII.GetBytes($"writer {winner}"), await backends[0].ReadAllAsync(key));
        }
        finally
        {
            foreach (var b in backends) await b.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ARepositoryInAVersionedBucket_BackupIncrementalRestore_RestoresByteForByte(bool objectLock)
    {
        string bucket = await server.CreateBucketAsync(objectLock ? "ver-lock-e2e" : "ver-e2e", versioning: true, objectLock: objectLock);
        string repo = $"s3://{bucket}/hosts/a";
        using var t = new TempDir("br-s3-versioned");
        string src = t.File("volume.img"), state = t.File("state");
        DiskImages.Mixed(src, 12L << 20, seed: 15);
        File.Copy(src, t.File("v0"));
        var env = new Dictionary<string, string>(server.ClientEnvironment);

        var full = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("FULL", full.Str("mode"));
        WriteLoad.ScatteredWrites(src, 8, 65536, seed: 4);
        File.Copy(src, t.File("v1"));
        var incr = Run(["backup", src, "--repo", repo, "--state-dir", state, "--json", "--no-progress"]);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));

        Run(["restore", full.Str("id"), "--repo", repo, "--to", t.File("r0"), "--json", "--no-progress"]);
        // the incremental onto a copy of the full restore: only differing chunks are written
        File.Copy(t.File("r0"), t.File("r1"));
        var inPlace = Run(["restore", incr.Str("id"), "--repo", repo, "--to", t.File("r1"), "--json", "--no-progress"]);
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("r0")), "full restore differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental restore differs");
        Assert.True(inPlace.Long("writtenBytes") <= 8L * 65536, $"wrote {inPlace.Long("writtenBytes")} bytes in place");
        var verify = CliRunner.Run(["verify", "--repo", repo, "--read-data", "--no-progress"], env, TimeSpan.FromMinutes(3));
        Assert.True(verify.ExitCode == 0, verify.ToString());

        // every object of the repository has exactly one version
        var r = await S3TestServers.S3ApiAsync(server, ["list-object-versions", "--bucket", bucket, "--output", "json"]);
        using var doc = JsonDocument.Parse(r.Stdout);
        var keys = doc.RootElement.GetProperty("Versions").EnumerateArray().Select(v => v.GetProperty("Key").GetString()!).ToList();
        Assert.Equal(keys.Distinct().Count(), keys.Count);

        JsonElement Run(string[] args)
        {
            var res = CliRunner.Run(args, env, TimeSpan.FromMinutes(3));
            if (res.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {res}");
            return Cli.Json(res.Stdout);
        }
    }
}

[Collection("rgw")]
public sealed class RgwVersionedBucketTests(RgwServer server) : S3VersionedBucketTests(server)
{
    protected override bool HonoursIfNoneMatchOnVersionedBuckets => false;
}

[Collection("moto")]
public sealed class MotoVersionedBucketTests(MotoServer server) : S3VersionedBucketTests(server)
{
    protected override bool HonoursIfNoneMatchOnVersionedBuckets => true;
}
