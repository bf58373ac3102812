using System.Text.Json;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <c>backup --bwlimit</c> through the real CLI: the store phase of a backup whose bytes are incompressible runs
/// at the cap (measured by the job's own clock, so process start-up does not count), and bad schedules are
/// one-line usage errors.
/// </summary>
[Collection(MeasuredRateCollection.Name)]
public sealed class BandwidthTests : IDisposable
{
    private const int EbsBlock = 512 * 1024;
    private const long ImageSize = 48L << 20;
    private const double CapBytesPerSecond = 10_000_000;     // 80 Mbit/s

    private readonly TempDir _dir = new("blockrepl-bw");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void BwLimit_StoreRateIsWithinTenPercentOfTheCap_AndTheBackupRestores()
    {
        string image = _dir.File("random.img");
        DiskImages.Random(image, ImageSize, seed: 80);

        // Baseline: the same image unthrottled, to show the cap is the binding constraint on this machine.
        JsonElement baseline = Cli.Backup(image, _dir.File("repo-free"), _dir.File("state-free"));
        double freeRate = baseline.Long("storedBytes") / baseline.GetProperty("seconds").GetDouble();
        Assert.True(freeRate > 3 * CapBytesPerSecond,
            $"this machine stores only {freeRate / 1e6:0.0} MB/s unthrottled: a 10 MB/s cap would not be the limit, the test cannot measure it");

        // A schedule whose first rule always matches (every day, no window), then the default.
        JsonElement limited = Cli.Backup(image, _dir.File("repo-bw"), _dir.File("state-bw"), "--bwlimit", "80Mbps Mon-Sun; unlimited");
        long stored = limited.Long("storedBytes");
        double seconds = limited.GetProperty("seconds").GetDouble();
        // Same data both times; only metadata (times in the manifest) may differ by a few bytes.
        Assert.InRange(stored - baseline.Long("storedBytes"), -4096, 4096);
        Assert.True(stored >= ImageSize, $"random data should be stored whole: {stored}");
        double rate = stored / seconds;
        Assert.True(rate >= 0.9 * CapBytesPerSecond && rate <= 1.1 * CapBytesPerSecond,
            $"stored {stored} bytes in {seconds} s = {rate / 1e6:0.00} MB/s; the cap is {CapBytesPerSecond / 1e6} MB/s (±10 %)");

        string restored = _dir.File("restored.img");
        Cli.Restore(limited.Str("id"), _dir.File("repo-bw"), restored);
        Assert.True(File.ReadAllBytes(image).AsSpan().SequenceEqual(File.ReadAllBytes(restored)), "the throttled backup does not restore to the source");
    }

    [Fact]
    public async Task BwLimit_PacesEbsBlockPuts()
    {
        await using var ebs = await EbsEndpoint.StartAsync();
        string image = _dir.File("ebs.img");
        DiskImages.Random(image, 48L * EbsBlock, seed: 83);
        const double cap = 5_000_000;     // 40 Mbit/s: 48 blocks of 512 KiB take about 5 s

        // Seconds of a run spent outside waiting for completion: block puts plus a fixed part (start, complete).
        (long Bytes, double Seconds) Put(string state, params string[] extra)
        {
            var r = CliRunner.Run(["backup", image, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", ebs.Url.ToString(), "--json", "--no-progress", .. extra],
                ebs.ClientEnv(_dir.File(state)), TimeSpan.FromMinutes(5));
            Assert.True(r.ExitCode == 0, r.ToString());
            var json = Cli.Json(r.Stdout);
            return (json.Long("bytesPut"), json.GetProperty("seconds").GetDouble() - json.GetProperty("waitSeconds").GetDouble());
        }

        var free = Put("state-free");
        var (bytes, seconds) = Put("state-bw", "--bwlimit", "40Mbps");
        Assert.Equal(48L * EbsBlock, bytes);
        // The first block goes at once (the bucket starts empty and may go into debt), the other 47 at the cap:
        // never faster than that; slower by at most the run's own fixed part (the unthrottled run bounds it).
        double paced = (bytes - EbsBlock) / cap;
        Assert.True(seconds >= 0.95 * paced && seconds <= 1.1 * paced + free.Seconds,
            $"{bytes} bytes put in {seconds:0.000} s; at the cap the puts take {paced:0.000} s, the unthrottled run took {free.Seconds:0.000} s");
    }

    [Fact]
    public void BwLimit_Unlimited_IsAccepted()
    {
        string image = _dir.File("small.img");
        DiskImages.Random(image, 1L << 20, seed: 81);
        var r = Cli.Backup(image, _dir.File("repo"), _dir.File("state"), "--bwlimit", "unlimited");
        Assert.Equal(1L << 20, r.Long("size"));
    }

    [Theory]
    [InlineData("20MBs", "'20MBs'")]
    [InlineData("20Mbps Mon-Fry", "'Fry'")]
    [InlineData("20Mbps Mon 08:00-25:00", "'25:00'")]
    public void BwLimit_BadSchedule_Exits2WithOneLine_AndCreatesNoRepository(string schedule, string mentions)
    {
        string image = _dir.File("small.img");
        DiskImages.Random(image, 1L << 20, seed: 82);
        string repo = _dir.File("repo-bad");
        var r = CliRunner.Run("backup", image, "--repo", repo, "--state-dir", _dir.File("state"), "--no-progress", "--bwlimit", schedule);
        Cli.AssertOneLineError(r, 2, mentions);
        Assert.Contains("--bwlimit", r.Stderr, StringComparison.Ordinal);
        Assert.False(Path.Exists(repo), "a refused backup created the repository");
    }
}

/// <summary>
/// Tests that measure a rate run alone: on a 2-core machine, CPU-heavy tests running beside them would make the
/// machine, not the cap, the limit.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class MeasuredRateCollection
{
    public const string Name = "measured-rate";
}
