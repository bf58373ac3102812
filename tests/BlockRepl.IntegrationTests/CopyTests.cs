using System.Text.Json;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <c>blockrepl copy</c> between local repositories through the real CLI: what arrives restores byte
/// for byte and verifies clean, a re-run moves nothing, an incremental moves only its new chunks.
/// </summary>
public sealed class CopyTests
{
    private const int Chunk = 64 * 1024;

    internal static JsonElement Copy(params string[] args) =>
        Cli.Json(CliRunner.Ok(["copy", .. args, "--json", "--no-progress"]));

    private static string[] Ids(JsonElement copy, string name) =>
        [.. copy.GetProperty(name).EnumerateArray().Select(e => e.GetString()!).Order(StringComparer.Ordinal)];

    [Fact]
    public void CopyOfTwoPoints_RestoresByteForByte_VerifiesClean_AndARerunMovesNothing()
    {
        using var t = new TempDir("br-copy");
        string src = t.File("volume.img"), from = t.File("from"), to = t.File("to"), state = t.File("state");
        DiskImages.Mixed(src, 16L << 20, seed: 21);
        File.Copy(src, t.File("v0"));
        var full = Cli.Backup(src, from, state);
        WriteLoad.ScatteredWrites(src, 10, Chunk, seed: 22);
        File.Copy(src, t.File("v1"));
        var incr = Cli.Backup(src, from, state);

        var copy = Copy("--from", from, "--to", to);
        Assert.True(copy.GetProperty("created").GetBoolean());
        Assert.Equal(new[] { full.Str("id"), incr.Str("id") }.Order(StringComparer.Ordinal), Ids(copy, "copied"));
        Assert.Equal(2, copy.Long("manifestsCopied"));
        Assert.Equal(0, copy.Long("manifestsSkipped"));
        Assert.Equal(full.Long("newChunks") + incr.Long("newChunks"), copy.Long("blobsCopied"));
        Assert.Equal(full.Long("newBytes") + incr.Long("newBytes") + full.Long("metadataBytes") + incr.Long("metadataBytes"), copy.Long("rawBytes"));
        Assert.True(copy.Long("putRequests") >= 4, $"packs, indexes and two manifests: {copy}");

        // Manifests travel byte for byte.
        Assert.Equal(File.ReadAllBytes(RepoFiles.Manifest(from, full.Str("id"))), File.ReadAllBytes(RepoFiles.Manifest(to, full.Str("id"))));
        Assert.Equal(File.ReadAllBytes(RepoFiles.Manifest(from, incr.Str("id"))), File.ReadAllBytes(RepoFiles.Manifest(to, incr.Str("id"))));

        Cli.Restore(full.Str("id"), to, t.File("r0"));
        Cli.Restore(incr.Str("id"), to, t.File("r1"));
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("r0")), "full recovery point restored from the copy differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental recovery point restored from the copy differs");
        var (verify, report) = Cli.Verify(to, readData: true);
        Assert.True(verify.ExitCode == 0, $"verify --read-data on the destination: {verify}");
        Assert.Equal(2, report.Long("snapshots"));

        var again = Copy("--from", from, "--to", to);
        Assert.False(again.GetProperty("created").GetBoolean());
        Assert.Equal(0, again.Long("manifestsCopied"));
        Assert.Equal(2, again.Long("manifestsSkipped"));
        Assert.Equal(0, again.Long("blobsCopied"));
        Assert.Equal(0, again.Long("rawBytes"));
        Assert.Equal(0, again.Long("putRequests"));
    }

    [Fact]
    public void CopyAfterANewIncremental_MovesOnlyItsNewChunks()
    {
        using var t = new TempDir("br-copy-incr");
        string src = t.File("volume.img"), from = t.File("from"), to = t.File("to"), state = t.File("state");
        DiskImages.Mixed(src, 16L << 20, seed: 31);
        Cli.Backup(src, from, state);
        Copy("--from", from, "--to", to);
        int packsBefore = RepoFiles.Packs(to).Length;

        WriteLoad.ScatteredWrites(src, 8, Chunk, seed: 32);
        File.Copy(src, t.File("v1"));
        var incr = Cli.Backup(src, from, state);
        var copy = Copy("--from", from, "--to", to);

        Assert.Equal([incr.Str("id")], Ids(copy, "copied"));
        Assert.Equal(1, copy.Long("manifestsSkipped"));
        Assert.Equal(incr.Long("newChunks"), copy.Long("blobsCopied"));
        // Exactly the chunks and tree nodes the incremental added: what the destination lacked.
        Assert.Equal(incr.Long("newBytes") + incr.Long("metadataBytes"), copy.Long("rawBytes"));
        Assert.True(copy.Long("rawBytes") <= incr.Long("newBytes") + (64 * 1024), $"tree/metadata slack exceeded: {copy}");
        Assert.Equal(packsBefore + 1, RepoFiles.Packs(to).Length);
        Cli.Restore("latest", to, t.File("r1"));
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental copied alone does not restore");
    }

    [Fact]
    public void CopyOfASelectedId_CopiesOnlyThatPoint()
    {
        using var t = new TempDir("br-copy-sel");
        string src = t.File("volume.img"), from = t.File("from"), to = t.File("to"), state = t.File("state");
        DiskImages.Mixed(src, 8L << 20, seed: 41);
        var full = Cli.Backup(src, from, state);
        WriteLoad.ScatteredWrites(src, 4, Chunk, seed: 42);
        File.Copy(src, t.File("v1"));
        var incr = Cli.Backup(src, from, state);

        var copy = Copy("--from", from, "--to", to, incr.Str("id")[..8]);
        Assert.Equal([incr.Str("id")], Ids(copy, "copied"));
        Assert.Equal(incr.Str("id"), Assert.Single(Cli.Snapshots(to)).Str("id"));
        Cli.Restore(incr.Str("id"), to, t.File("r1"));
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "selected recovery point does not restore");

        // The full one later moves only what the incremental did not already bring.
        var rest = Copy("--from", from, "--to", to, full.Str("id"), "latest");
        Assert.Equal([full.Str("id")], Ids(rest, "copied"));
        Assert.Equal([incr.Str("id")], Ids(rest, "skipped"));
        Assert.True(rest.Long("blobsCopied") <= 4, $"the full point shares all but the overwritten chunks: {rest}");
        var (verify, _) = Cli.Verify(to, readData: true);
        Assert.True(verify.ExitCode == 0, verify.ToString());
    }

    [Fact]
    public void BadInputs_FailWithOneLineErrors_AndCreateNothing()
    {
        using var t = new TempDir("br-copy-bad");
        string src = t.File("volume.img"), from = t.File("from"), state = t.File("state");
        DiskImages.Mixed(src, 2L << 20, seed: 51);
        Cli.Backup(src, from, state);

        var unknown = CliRunner.Run("copy", "--from", from, "--to", t.File("to1"), "ffffffff", "--no-progress");
        Cli.AssertOneLineError(unknown, 5, "ffffffff");
        Assert.False(Directory.Exists(t.File("to1")), "an unknown id must not create the destination");

        Directory.CreateDirectory(t.File("notrepo"));
        File.WriteAllText(Path.Combine(t.File("notrepo"), "x"), "x");
        Cli.AssertOneLineError(CliRunner.Run("copy", "--from", t.File("notrepo"), "--to", t.File("to2"), "--no-progress"), 4, "not a blockrepl repository");
        Cli.AssertOneLineError(CliRunner.Run("copy", "--from", t.File("missing"), "--to", t.File("to2"), "--no-progress"), 4, "does not exist");

        CliRunner.Ok("init", "--repo", t.File("small"), "--chunk-size", "16K");
        var mismatch = CliRunner.Run("copy", "--from", from, "--to", t.File("small"), "--no-progress");
        Cli.AssertOneLineError(mismatch, 4, "chunk size");
        Assert.Empty(Cli.Snapshots(t.File("small")));

        Cli.AssertOneLineError(CliRunner.Run("copy", "--to", t.File("to3")), 2, "--from");
        Cli.AssertOneLineError(CliRunner.Run("copy", "--from", from, "--to", t.File("to3"), "--to-endpoint-url", "http://127.0.0.1:1"), 2, "endpoint");
    }
}

/// <summary><c>copy</c> file → S3 → file against the RADOS Gateway fixture.</summary>
[Collection("rgw")]
public sealed class CopyS3Tests(RgwServer server)
{
    [Fact]
    public async Task CopyLocalToS3ToLocal_RoundTripsByteForByte_AndMovesOnlyWhatIsMissing()
    {
        string bucket = await server.CreateBucketAsync("copy");
        string s3 = $"s3://{bucket}/dr/site-b";
        using var t = new TempDir("br-copy-s3");
        string src = t.File("volume.img"), from = t.File("from"), back = t.File("back"), state = t.File("state");
        DiskImages.Mixed(src, 12L << 20, seed: 61);
        File.Copy(src, t.File("v0"));
        var full = Cli.Backup(src, from, state);
        WriteLoad.ScatteredWrites(src, 6, 64 * 1024, seed: 62);
        File.Copy(src, t.File("v1"));
        var incr = Cli.Backup(src, from, state);
        var env = new Dictionary<string, string>(server.ClientEnvironment);
        // The second leg names the endpoint on the command line only.
        var noEndpointEnv = server.ClientEnvironment.Where(kv => kv.Key != "AWS_ENDPOINT_URL_S3").ToDictionary(kv => kv.Key, kv => kv.Value);
        var timeout = TimeSpan.FromMinutes(3);

        var up = await Task.Run(() => Run(["copy", "--from", from, "--to", s3], env));
        Assert.Equal(2, up.Long("manifestsCopied"));
        Assert.True(up.GetProperty("created").GetBoolean());
        Assert.True(up.Long("putRequests") < 12, $"packs of tens of MiB, not one object per chunk: {up}");

        var down = await Task.Run(() => Run(["copy", "--from", s3, "--from-endpoint-url", server.Endpoint, "--to", back], noEndpointEnv));
        Assert.Equal(2, down.Long("manifestsCopied"));
        Assert.Equal(up.Long("blobsCopied"), down.Long("blobsCopied"));
        Assert.Equal(up.Long("rawBytes"), down.Long("rawBytes"));

        var again = await Task.Run(() => Run(["copy", "--from", from, "--to", s3], env));
        Assert.Equal(0, again.Long("blobsCopied"));
        Assert.Equal(0, again.Long("putRequests"));

        Cli.Restore(full.Str("id"), back, t.File("r0"));
        Cli.Restore(incr.Str("id"), back, t.File("r1"));
        Assert.True(Files.ContentEquals(t.File("v0"), t.File("r0")), "full point after file → S3 → file differs");
        Assert.True(Files.ContentEquals(t.File("v1"), t.File("r1")), "incremental point after file → S3 → file differs");
        var verifyS3 = await Task.Run(() => CliRunner.Run(["verify", "--repo", s3, "--read-data", "--no-progress"], env, timeout));
        Assert.True(verifyS3.ExitCode == 0, verifyS3.ToString());
        var (verify, _) = Cli.Verify(back, readData: true);
        Assert.True(verify.ExitCode == 0, verify.ToString());

        JsonElement Run(string[] args, Dictionary<string, string> e)
        {
            var r = CliRunner.Run([.. args, "--json", "--no-progress"], e, timeout);
            if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
            return Cli.Json(r.Stdout);
        }
    }
}
