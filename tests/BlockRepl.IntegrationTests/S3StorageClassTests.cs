using System.Text.Json;
using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Storage classes per object kind (issue #3 item 5) against RGW, whose start script defines
/// STANDARD_IA, GLACIER_IR…: <c>--storage-class</c> applies to packs only; config, index and
/// manifests stay STANDARD (no <c>x-amz-storage-class</c> header on HeadObject).
/// </summary>
[Collection("rgw")]
public sealed class S3StorageClassTests(RgwServer server)
{
    private static readonly TimeSpan s_timeout = TimeSpan.FromMinutes(3);

    [Fact]
    public async Task BackupWithStorageClass_PutsPacksInThatClassAndKeepsMetadataStandard()
    {
        string bucket = await server.CreateBucketAsync("sc-backup");
        string repo = $"s3://{bucket}/h";
        using var t = new TempDir("br-s3-sc");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 24L << 20, seed: 31);

        var backup = Run(["backup", src, "--repo", repo, "--state-dir", t.File("state"), "--storage-class", "standard_ia", "--json", "--no-progress"]);
        Assert.True(backup.GetProperty("putRequestsPerGiBChanged").ValueKind == JsonValueKind.Number, backup.ToString());
        double perGiB = backup.GetProperty("putRequestsPerGiBChanged").GetDouble();
        double expected = backup.Long("putRequests") / (backup.Long("changedBytes") / (double)(1L << 30));
        Assert.InRange(perGiB, expected * 0.999, expected * 1.001);

        var keys = await KeysAsync(bucket, "h");
        string pack = keys.First(k => k.StartsWith("data/", StringComparison.Ordinal));
        string index = keys.First(k => k.StartsWith("index/", StringComparison.Ordinal));
        string manifest = keys.First(k => k.StartsWith("snapshots/", StringComparison.Ordinal));
        Assert.Contains("config", keys);

        Assert.Equal("STANDARD_IA", await StorageClassAsync(bucket, "h/" + pack));
        foreach (string key in keys.Where(k => k.StartsWith("data/", StringComparison.Ordinal)))
            Assert.Equal("STANDARD_IA", await StorageClassAsync(bucket, "h/" + key));
        Assert.Null(await StorageClassAsync(bucket, "h/" + index));
        Assert.Null(await StorageClassAsync(bucket, "h/" + manifest));
        Assert.Null(await StorageClassAsync(bucket, "h/config"));

        // An incremental without the option writes STANDARD packs: the class is per run, not per repository.
        WriteLoad.ScatteredWrites(src, 8, 65536, seed: 3);
        var incr = Run(["backup", src, "--repo", repo, "--state-dir", t.File("state"), "--json", "--no-progress"]);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        var newPacks = (await KeysAsync(bucket, "h")).Where(k => k.StartsWith("data/", StringComparison.Ordinal) && !keys.Contains(k)).ToList();
        Assert.NotEmpty(newPacks);
        Assert.Null(await StorageClassAsync(bucket, "h/" + newPacks[0]));

        var verify = CliRunner.Run(["verify", "--repo", repo, "--read-data", "--no-progress"], Env(), s_timeout);
        Assert.True(verify.ExitCode == 0, verify.ToString());
        Run(["restore", backup.Str("id"), "--repo", repo, "--to", t.File("r0"), "--json", "--no-progress"]);
    }

    [Fact]
    public async Task MultipartUploadsAndInitAndCopyHonourTheStorageClass()
    {
        string bucket = await server.CreateBucketAsync("sc-multi");
        var options = new S3BackendOptions
        {
            MultipartThreshold = 6L << 20,
            PartSize = 5L << 20,
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
        }.WithPackStorageClass("GLACIER_IR");
        await using (var backend = new S3Backend(S3Location.Parse($"s3://{bucket}/m"), options))
        {
            await backend.PutAsync("data/ab/big.pack", new byte[(11 << 20) + 5]);
            await backend.PutAsync("index/small", new byte[100]);
        }
        Assert.Equal("GLACIER_IR", await StorageClassAsync(bucket, "m/data/ab/big.pack"));
        Assert.Null(await StorageClassAsync(bucket, "m/index/small"));

        // init --storage-class is accepted on S3; copy --storage-class puts the destination's packs in it.
        using var t = new TempDir("br-s3-sc-copy");
        string local = t.File("repo");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 8L << 20, seed: 41);
        Assert.Equal(0, CliRunner.Run(["init", "--repo", $"s3://{bucket}/init", "--storage-class", "ONEZONE_IA"], Env(), s_timeout).ExitCode);
        var backup = Cli.Backup(src, local, t.File("state"));
        var copy = CliRunner.Run(["copy", "--from", local, "--to", $"s3://{bucket}/copy", "--storage-class", "STANDARD_IA", "--json", "--no-progress"], Env(), s_timeout);
        Assert.True(copy.ExitCode == 0, copy.ToString());
        var keys = await KeysAsync(bucket, "copy");
        Assert.Equal("STANDARD_IA", await StorageClassAsync(bucket, "copy/" + keys.First(k => k.StartsWith("data/", StringComparison.Ordinal))));
        Assert.Null(await StorageClassAsync(bucket, "copy/" + keys.First(k => k.StartsWith("snapshots/", StringComparison.Ordinal))));
        Assert.Equal(backup.Str("id"), Cli.Json(CliRunner.Run(["snapshots", "--repo", $"s3://{bucket}/copy", "--json"], Env(), s_timeout).Stdout)[0].Str("id"));
    }

    [Fact]
    public void UnknownStorageClassOrALocalRepository_IsAClearUsageError()
    {
        using var t = new TempDir("br-sc-usage");
        string src = t.File("volume.img");
        DiskImages.Mixed(src, 1L << 20, seed: 2);

        var bad = CliRunner.Run(["backup", src, "--repo", "s3://bucket/x", "--storage-class", "COLD", "--state-dir", t.File("s")], Env(), s_timeout);
        Cli.AssertOneLineError(bad, 2, "STANDARD_IA");
        Assert.Contains("COLD", bad.Stderr, StringComparison.Ordinal);

        var local = CliRunner.Run(["backup", src, "--repo", t.File("repo"), "--storage-class", "STANDARD_IA", "--state-dir", t.File("s")], Env(), s_timeout);
        Cli.AssertOneLineError(local, 2, "s3://");

        var init = CliRunner.Run(["init", "--repo", t.File("repo2"), "--storage-class", "GLACIER_IR"], Env(), s_timeout);
        Cli.AssertOneLineError(init, 2, "s3://");
        var copy = CliRunner.Run(["copy", "--from", t.File("repo"), "--to", t.File("repo3"), "--storage-class", "GLACIER_IR"], Env(), s_timeout);
        Cli.AssertOneLineError(copy, 2, "s3://");
    }

    private Dictionary<string, string> Env() => new(server.ClientEnvironment);

    private JsonElement Run(string[] args)
    {
        var r = CliRunner.Run(args, Env(), s_timeout);
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
        return Cli.Json(r.Stdout);
    }

    private async Task<List<string>> KeysAsync(string bucket, string prefix)
    {
        await using var backend = new S3Backend(S3Location.Parse($"s3://{bucket}/{prefix}"), new S3BackendOptions
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
        });
        var keys = new List<string>();
        await foreach (var o in backend.ListAsync("")) keys.Add(o.Key);
        return keys;
    }

    /// <summary><c>aws s3api head-object</c>: the StorageClass field, absent (null) for STANDARD.</summary>
    private async Task<string?> StorageClassAsync(string bucket, string key)
    {
        var r = await S3TestServers.S3ApiAsync(server, ["head-object", "--bucket", bucket, "--key", key]);
        using var doc = JsonDocument.Parse(r.Stdout);
        return doc.RootElement.TryGetProperty("StorageClass", out var sc) ? sc.GetString() : null;
    }
}
