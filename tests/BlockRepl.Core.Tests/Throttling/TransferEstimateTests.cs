using BlockRepl.Engine.Throttling;

namespace BlockRepl.Core.Tests.Throttling;

public sealed class TransferEstimateTests
{
    [Fact]
    public void TwoHundredTerabytes_OverOneGigabit_TakeAboutEighteenAndAHalfDays()
    {
        double seconds = TransferEstimate.SecondsAt(200_000_000_000_000, 1_000_000_000);
        Assert.Equal(1_600_000, seconds, 6);
        Assert.Equal(18.52, seconds / 86_400, 2);
    }

    [Fact]
    public void Estimate_SkipsZeros_AppliesCompression_AndJudgesTheDailyChange()
    {
        const long TiB = 1L << 40;
        var e = new TransferEstimate(SizeBytes: 10 * TiB, AllocatedBytes: 4 * TiB, ZeroFraction: 0.25, CompressionRatio: 0.5,
            LinkBitsPerSecond: 100_000_000, DailyChangeBytes: 80 * (1L << 30));
        Assert.Equal(12_500_000, e.LinkBytesPerSecond);
        Assert.Equal((long)(4 * TiB * 0.75 * 0.5), e.InitialSendBytes);
        Assert.Equal(e.InitialSendBytes / 12_500_000.0, e.InitialSyncSeconds, 6);
        Assert.Equal(4 * TiB / 12_500_000.0, e.InitialSyncSecondsUncompressed, 6);
        Assert.Equal(40 * (1L << 30), e.DailySendBytes);
        Assert.Equal(40 * (1L << 30) / 12_500_000.0, e.DailySyncSeconds, 6);
        Assert.True(e.KeepsUp);
        Assert.False((e with { LinkBitsPerSecond = 1_000_000 }).KeepsUp);   // 43 GiB at 125 kB/s: 4 days per day
    }

    [Fact]
    public void ChangedBytesPerDay_AveragesIncrementalsOverTheSpan()
    {
        var t0 = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        Assert.Null(TransferEstimate.ChangedBytesPerDay([(t0, 100)]));
        Assert.Null(TransferEstimate.ChangedBytesPerDay([(t0, 100), (t0, 5)]));
        // The first (full) point's changes do not count; 30 + 90 over 4 days.
        Assert.Equal(30, TransferEstimate.ChangedBytesPerDay([(t0.AddDays(4), 90), (t0, 1_000_000), (t0.AddDays(1), 30)]));
    }
}
