using System.Runtime.CompilerServices;
using Amazon.Runtime;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;
using Serilog.Core;
using Xunit.Abstractions;

namespace BlockRepl.IntegrationTests;

/// <summary>Counts the reads that reach a backend (a debug counter for request counts: one call = one GET on S3).</summary>
internal sealed class CountingBackend(IBackend inner) : IBackend
{
    private long _rangedReads, _rangedBytes, _wholeReads, _lists, _stats;

    public long RangedReads => Interlocked.Read(ref _rangedReads);
    public long RangedBytes => Interlocked.Read(ref _rangedBytes);
    public long WholeReads => Interlocked.Read(ref _wholeReads);
    public long Gets => RangedReads + WholeReads;
    public long Lists => Interlocked.Read(ref _lists);
    public long Stats => Interlocked.Read(ref _stats);

    public void Reset()
    {
        Interlocked.Exchange(ref _rangedReads, 0);
        Interlocked.Exchange(ref _rangedBytes, 0);
        Interlocked.Exchange(ref _wholeReads, 0);
        Interlocked.Exchange(ref _lists, 0);
        Interlocked.Exchange(ref _stats, 0);
    }

    public override string ToString() => $"{RangedReads} ranged GETs ({RangedBytes / (1 << 20)} MiB), {WholeReads} whole GETs, {Lists} lists, {Stats} HEADs";

    public string Location => inner.Location;
    public ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default) => inner.CreateAsync(key, ct);

    public ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        Interlocked.Increment(ref _rangedReads);
        Interlocked.Add(ref _rangedBytes, buffer.Length);
        return inner.ReadAtAsync(key, offset, buffer, ct);
    }

    public ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default)
    {
        Interlocked.Increment(ref _wholeReads);
        return inner.ReadAllAsync(key, ct);
    }

    public ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        Interlocked.Increment(ref _stats);
        return inner.StatAsync(key, ct);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        Interlocked.Increment(ref _lists);
        await foreach (var o in inner.ListAsync(prefix, ct).ConfigureAwait(false)) yield return o;
    }

    public ValueTask DeleteAsync(string key, CancellationToken ct = default) => inner.DeleteAsync(key, ct);
    public ValueTask DisposeAsync() => inner.DisposeAsync();
}

/// <summary>
/// Restore and <c>verify --read-data</c> read packs in coalesced ranges, not one GET per 64 KiB chunk
/// (S3 issue, "restore does one ranged GET per chunk"). Counts the backend reads on RGW.
/// </summary>
[Collection("rgw")]
public sealed class S3RestoreRequestTests(RgwServer server, ITestOutputHelper output)
{
    private S3Backend Backend(string bucket, string prefix) =>
        new(S3Location.Parse($"s3://{bucket}/{prefix}"), new S3BackendOptions
        {
            EndpointUrl = server.Endpoint,
            Region = server.Region,
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
        });

    [Fact]
    public async Task RestoreAndVerifyOfARandomImage_ReadPacksInFewLargeRanges()
    {
        long size = (Environment.GetEnvironmentVariable("BLOCKREPL_RESTORE_REQUEST_MIB") is { } mib ? long.Parse(mib, System.Globalization.CultureInfo.InvariantCulture) : 64) << 20;
        string bucket = await server.CreateBucketAsync("restore-gets");
        string repo = $"s3://{bucket}/r";
        using var t = new TempDir("br-s3-gets");
        string src = t.File("volume.img");
        DiskImages.Random(src, size, seed: 77);
        var backup = CliRunner.Run(["backup", src, "--repo", repo, "--state-dir", t.File("state"), "--json", "--no-progress"],
            new Dictionary<string, string>(server.ClientEnvironment), TimeSpan.FromMinutes(10));
        Assert.True(backup.ExitCode == 0, backup.ToString());

        var counting = new CountingBackend(Backend(bucket, "r"));
        await using var r = await Repo.OpenAsync(new RetryingBackend(counting));
        var m = await r.FindSnapshotAsync("latest");
        counting.Reset();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await new RestoreJob(r, Logger.None).RunAsync(m, t.File("restored.img"));
        output.WriteLine($"restore of {size >> 20} MiB random: {counting} in {sw.Elapsed.TotalSeconds:0.00} s");
        long restoreGets = counting.Gets;
        Assert.True(Files.ContentEquals(src, t.File("restored.img")), "restore differs");

        counting.Reset();
        sw.Restart();
        var report = await new VerifyJob(counting).RunAsync(readData: true);
        output.WriteLine($"verify --read-data: {counting} in {sw.Elapsed.TotalSeconds:0.00} s");
        Assert.True(report.Ok, string.Join("\n", report.Problems));

        // Packs of ~32 MiB read in ranges of at most 16 MiB: 2-3 GETs per pack, the tree nodes a few at a time;
        // verify adds the header and the table of each pack. Before coalescing: one GET per 64 KiB chunk and node.
        long packs = (size >> 25) + 1;
        Assert.True(restoreGets <= 4 * packs + 16, $"restore made {restoreGets} GETs for {packs} packs");
        Assert.True(counting.Gets <= 5 * packs + 24, $"verify made {counting.Gets} GETs for {packs} packs");
    }

    [Fact]
    public async Task ADamagedBlobInsideACoalescedRange_IsRefusedByRestoreAndNamedByVerify()
    {
        string bucket = await server.CreateBucketAsync("restore-corrupt");
        string repo = $"s3://{bucket}/r";
        using var t = new TempDir("br-s3-corrupt");
        string src = t.File("volume.img");
        DiskImages.Random(src, 6L << 20, seed: 78);
        var env = new Dictionary<string, string>(server.ClientEnvironment);
        var backup = CliRunner.Run(["backup", src, "--repo", repo, "--state-dir", t.File("state"), "--json", "--no-progress"], env, TimeSpan.FromMinutes(5));
        Assert.True(backup.ExitCode == 0, backup.ToString());

        // The one data pack: flip a byte in its middle (a blob between others of the same range) and put it
        // back over the original (the bucket is unversioned; objects are write-once only for blockrepl).
        await using (var s3 = Backend(bucket, "r"))
        {
            var packs = new List<ObjectInfo>();
            await foreach (var o in s3.ListAsync("data/")) packs.Add(o);
            var pack = packs.MaxBy(o => o.Length);
            byte[] bytes = await s3.ReadAllAsync(pack.Key);
            bytes[bytes.Length / 2] ^= 0x5A;
            await File.WriteAllBytesAsync(t.File("pack"), bytes);
            await S3TestServers.S3ApiAsync(server, ["put-object", "--bucket", bucket, "--key", "r/" + pack.Key, "--body", t.File("pack")]);
        }

        var refused = CliRunner.Run(["restore", "latest", "--repo", repo, "--to", t.File("restored.img"), "--json", "--no-progress"], env, TimeSpan.FromMinutes(5));
        Cli.AssertOneLineError(refused, 7, "is corrupt");
        Cli.AssertNoRestoreLeftovers(t.File("restored.img"));

        var verify = CliRunner.Run(["verify", "--repo", repo, "--read-data", "--json", "--no-progress"], env, TimeSpan.FromMinutes(5));
        Assert.Equal(7, verify.ExitCode);
        var problems = Cli.Json(verify.Stdout).GetProperty("problems").EnumerateArray().Select(p => p.GetString()!).ToList();
        Assert.Contains(problems, p => p.Contains("is corrupt", StringComparison.Ordinal));
    }
}
