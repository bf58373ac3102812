using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary><c>blockrepl estimate</c> through the real CLI, against images whose allocation and content are known.</summary>
public sealed class EstimateTests : IDisposable
{
    private const long MiB = 1L << 20;
    private readonly TempDir _dir = new("blockrepl-estimate");

    public void Dispose() => _dir.Dispose();

    private static JsonElement Estimate(params string[] args) => Cli.Json(CliRunner.Ok(["estimate", .. args, "--json"]));

    [Fact]
    public void SparseRandomImage_AllocationIsExact_AndTimesFollowTheLink()
    {
        string image = _dir.File("sparse.img");
        DiskImages.Sparse(image, 256 * MiB, seed: 5, [0, 10 * MiB, 100 * MiB, 255 * MiB], dataLength: (int)MiB);
        var e = Estimate(image, "--link", "100Mbps", "--daily-change", "10%");

        Assert.Equal(256 * MiB, e.Long("sizeBytes"));
        Assert.Equal(4 * MiB, e.Long("allocatedBytes"));
        Assert.Equal(4 * MiB, e.Long("sampledBytes"));             // small: every allocated chunk is read
        Assert.Equal(64, e.Long("sampledChunks"));
        Assert.Equal(0, e.GetProperty("zeroFraction").GetDouble());
        Assert.Equal(1, e.GetProperty("compressionRatio").GetDouble());   // random data: LZ4 does not pay
        Assert.Equal(100_000_000, e.Long("linkBitsPerSecond"));
        Assert.Equal(12_500_000, e.GetProperty("linkBytesPerSecond").GetDouble());
        Assert.Equal(4 * MiB, e.Long("initialSendBytes"));
        Assert.Equal(Math.Round(4 * MiB / 12.5e6, 3), e.GetProperty("initialSyncSeconds").GetDouble());
        Assert.Equal("percent", e.Str("dailyChangeBasis"));
        Assert.Equal((long)Math.Round(4 * MiB * 0.10), e.Long("dailyChangeBytes"));
        Assert.True(e.GetProperty("keepsUp").GetBoolean());
    }

    [Fact]
    public void LargeMixedImage_IsSampled_NotReadWhole_AndSeesZerosAndCompression()
    {
        string image = _dir.File("mixed.img");
        DiskImages.Mixed(image, 320 * MiB, seed: 6);
        var e = Estimate(image, "--link", "1Gbps");
        Assert.Equal(320 * MiB, e.Long("allocatedBytes"));
        Assert.InRange(e.Long("sampledBytes"), 200 * MiB, 256 * MiB);
        // Mixed: ~30 % zero blocks, a quarter text that LZ4 shrinks several-fold.
        Assert.InRange(e.GetProperty("zeroFraction").GetDouble(), 0.2, 0.4);
        Assert.InRange(e.GetProperty("compressionRatio").GetDouble(), 0.3, 0.95);
        long send = e.Long("initialSendBytes");
        Assert.InRange(send, 1, 320 * MiB * 8 / 10);
        Assert.Equal(Math.Round(send / 125e6, 3), e.GetProperty("initialSyncSeconds").GetDouble(), 3);
        Assert.Equal((long)Math.Round(320 * MiB * 0.02), e.Long("dailyChangeBytes"));   // the assumed 2 %
    }

    [Fact]
    public void TextOutput_NamesTheFigures()
    {
        string image = _dir.File("small.img");
        DiskImages.Random(image, 2 * MiB, seed: 7);
        string text = CliRunner.Ok("estimate", image, "--link", "1Gbps", "--daily-change", "3");
        foreach (string label in new[] { "allocated", "initial sync", "daily change", "link keeps up   yes", "1Gbps" })
            Assert.Contains(label, text, StringComparison.Ordinal);
    }

    [Fact]
    public void WithRepository_DailyChangeIsMeasuredFromRecoveryPoints()
    {
        string image = _dir.File("vol.img");
        string repo = _dir.File("repo"), state = _dir.File("state");
        DiskImages.Random(image, 4 * MiB, seed: 8);
        Cli.Backup(image, repo, state);

        var one = CliRunner.Run("estimate", image, "--link", "1Gbps", "--repo", repo);
        Cli.AssertOneLineError(one, 2, "at least two");

        using (var fs = new FileStream(image, FileMode.Open, FileAccess.Write))
        {
            fs.Position = MiB;
            fs.Write(new byte[MiB / 2].Select((_, i) => (byte)(i * 7 + 1)).ToArray());
        }
        Cli.Backup(image, repo, state);
        var points = Cli.Snapshots(repo).OrderBy(p => p.GetProperty("time").GetDateTimeOffset()).ToArray();
        Assert.Equal(2, points.Length);
        double days = (points[1].GetProperty("time").GetDateTimeOffset() - points[0].GetProperty("time").GetDateTimeOffset()).TotalDays;
        long expected = (long)Math.Round(points[1].Long("changedBytes") / days);

        var e = Estimate(image, "--link", "1Gbps", "--repo", repo);
        Assert.Equal("repository", e.Str("dailyChangeBasis"));
        Assert.True(points[1].Long("changedBytes") > 0);
        // Manifest times are stored to the millisecond or finer; allow for the rounding of a short span.
        Assert.InRange(e.Long("dailyChangeBytes"), (long)(expected * 0.99), (long)(expected * 1.01));
    }

    [Theory]
    [InlineData(new[] { "--link", "1Gbs" }, "--link")]
    [InlineData(new[] { "--link", "unlimited" }, "--link")]
    [InlineData(new[] { "--link", "fast" }, "--link")]
    [InlineData(new[] { "--link", "1Gbps", "--daily-change", "0%" }, "--daily-change")]
    [InlineData(new[] { "--link", "1Gbps", "--daily-change", "150%" }, "--daily-change")]
    [InlineData(new[] { "--link", "1Gbps", "--daily-change", "lots" }, "--daily-change")]
    [InlineData(new string[0], "--link")]
    public void BadOptions_Exit2WithOneLine(string[] options, string mentions)
    {
        string image = _dir.File("small.img");
        DiskImages.Random(image, MiB, seed: 9);
        Cli.AssertOneLineError(CliRunner.Run(["estimate", image, .. options]), 2, mentions);
    }

    [Fact]
    public void QemuSources_AreRefusedWithAHint()
    {
        var r = CliRunner.Run("estimate", "qcow2:" + _dir.File("disk.qcow2"), "--link", "1Gbps");
        Cli.AssertOneLineError(r, 2, "nbd://");
    }

    [Fact]
    public void MissingSource_Exits3()
    {
        var r = CliRunner.Run("estimate", _dir.File("nope.img"), "--link", "1Gbps");
        Cli.AssertOneLineError(r, 3, "does not exist");
    }
}
