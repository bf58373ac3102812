using BlockRepl.Engine.Throttling;

namespace BlockRepl.Core.Tests.Throttling;

/// <summary>The token bucket on a manual clock: every figure here is exact virtual time, no sleeping.</summary>
public sealed class BandwidthLimiterTests
{
    // A Monday, 09:00 UTC (the manual clock's local zone is UTC).
    private static readonly DateTimeOffset Monday9 = new(2026, 11, 30, 9, 0, 0, TimeSpan.Zero);

    /// <summary>
    /// Simulates <paramref name="clients"/> uploads that each send <paramref name="slice"/> bytes as soon as the
    /// limiter lets them, for <paramref name="duration"/> of virtual time; returns bytes granted per client.
    /// </summary>
    private static long[] Run(BandwidthLimiter limiter, ManualTimeProvider time, int clients, int slice, TimeSpan duration, TimeSpan? step = null)
    {
        var granted = new long[clients];
        var pending = new ValueTask[clients];
        var active = new bool[clients];
        var stepBy = step ?? TimeSpan.FromMilliseconds(5);
        for (var t = TimeSpan.Zero; t < duration; t += stepBy)
        {
            for (int c = 0; c < clients; c++)
            {
                // Each client keeps one request in flight, and sends again at once after a grant.
                while (true)
                {
                    if (active[c])
                    {
                        if (!pending[c].IsCompleted) break;
                        pending[c].GetAwaiter().GetResult();
                        granted[c] += slice;
                        active[c] = false;
                    }
                    pending[c] = limiter.WaitAsync(slice);
                    active[c] = true;
                }
            }
            time.Advance(stepBy);
        }
        return granted;
    }

    [Fact]
    public void ManyConcurrentUploads_ShareTheRate_AndAllProgress()
    {
        var time = new ManualTimeProvider(Monday9);
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(1_000_000), time);
        var granted = Run(limiter, time, clients: 8, slice: 64 * 1024, TimeSpan.FromSeconds(10));
        long total = granted.Sum();
        // 10 s at 1 MB/s from an empty bucket; the debt model lets at most one request ahead.
        Assert.InRange(total, 10_000_000 - 64 * 1024, 10_000_000 + 64 * 1024);
        foreach (long g in granted) Assert.InRange(g, total / 8 - 64 * 1024, total / 8 + 64 * 1024);
    }

    [Fact]
    public void MeasuredRate_OverAFewSeconds_IsWithinTenPercent_AtManyRates()
    {
        foreach (long rate in new long[] { 10_000, 125_000, 2_500_000, 12_500_000, 125_000_000 })
        {
            var time = new ManualTimeProvider(Monday9);
            using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(rate), time);
            long total = Run(limiter, time, clients: 4, slice: 64 * 1024, TimeSpan.FromSeconds(3), TimeSpan.FromMilliseconds(1)).Sum();
            Assert.InRange(total / 3.0, rate * 0.9, rate * 1.1 + 64 * 1024 / 3.0);
        }
    }

    [Fact]
    public void FastPath_IsSynchronous_UpToTheBurst_ThenWaits()
    {
        var time = new ManualTimeProvider(Monday9);
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(1_000_000), time);
        time.Advance(TimeSpan.FromSeconds(10));      // idle: the bucket fills to its cap, not to 10 s worth
        long synchronous = 0;
        while (true)
        {
            var w = limiter.WaitAsync(1000);
            if (!w.IsCompletedSuccessfully) break;
            synchronous += 1000;
        }
        // 250 ms of 1 MB/s, plus the one request that may take the balance below zero.
        Assert.InRange(synchronous, 250_000, 251_000);
        Assert.Equal(1, limiter.Waiting);
    }

    [Fact]
    public void FastPath_DoesNotAllocate()
    {
        var time = new ManualTimeProvider(Monday9);
        using var limited = new BandwidthLimiter(BandwidthSchedule.Fixed(1_000_000_000), time);
        using var unlimited = new BandwidthLimiter(BandwidthSchedule.Unlimited, time);
        time.Advance(TimeSpan.FromSeconds(1));
        for (int i = 0; i < 100; i++) { _ = limited.WaitAsync(100); _ = unlimited.WaitAsync(100); }  // warm up
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            var a = limited.WaitAsync(100);
            var b = unlimited.WaitAsync(100);
            Assert.True(a.IsCompletedSuccessfully && b.IsCompletedSuccessfully);
        }
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void RequestLargerThanTheBurst_PassesAndIsRepaidByTheNext()
    {
        var time = new ManualTimeProvider(Monday9);
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(100_000), time);
        Assert.True(limiter.WaitAsync(1_000_000).IsCompletedSuccessfully);   // 10 s of the rate
        var next = limiter.WaitAsync(1);
        time.Advance(TimeSpan.FromSeconds(9.9));
        Assert.False(next.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(0.2));
        Assert.True(next.IsCompletedSuccessfully);
    }

    [Fact]
    public void ScheduleBoundary_TakesEffectWithinASecond()
    {
        // 10:00 switches from 800 kbit/s to 8 Mbit/s; the clock starts 5 s before.
        var time = new ManualTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 59, 55, TimeSpan.Zero));
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Parse("800Kbps 00:00-10:00; 8Mbps"), time);
        Assert.Equal(100_000, limiter.CurrentBytesPerSecond);
        long before = Run(limiter, time, 4, 16 * 1024, TimeSpan.FromSeconds(5)).Sum();
        Assert.InRange(before / 5.0, 90_000, 110_000);
        Run(limiter, time, 4, 16 * 1024, TimeSpan.FromSeconds(1));     // the boundary and its first second
        Assert.Equal(1_000_000, limiter.CurrentBytesPerSecond);
        long after = Run(limiter, time, 4, 16 * 1024, TimeSpan.FromSeconds(5)).Sum();
        Assert.InRange(after / 5.0, 900_000, 1_100_000);
    }

    [Fact]
    public void SwitchToUnlimited_ReleasesWaitersPromptly()
    {
        var time = new ManualTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 59, 59, TimeSpan.Zero));
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Parse("8Kbps 00:00-10:00; unlimited"), time);
        Assert.True(limiter.WaitAsync(1_000_000).IsCompletedSuccessfully);   // 1000 s of debt at 1 kB/s
        var waiting = limiter.WaitAsync(1000);
        Assert.False(waiting.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(2.01));
        Assert.True(waiting.IsCompletedSuccessfully);
        Assert.Null(limiter.CurrentBytesPerSecond);
        Assert.True(limiter.WaitAsync(10_000_000).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task CancelledWaiter_LeavesTheQueue_OthersStillProgress()
    {
        var time = new ManualTimeProvider(Monday9);
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(1000), time);
        Assert.True(limiter.WaitAsync(1000).IsCompletedSuccessfully);
        using var cts = new CancellationTokenSource();
        var cancelled = limiter.WaitAsync(1000, cts.Token).AsTask();
        var other = limiter.WaitAsync(10);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        time.Advance(TimeSpan.FromSeconds(1.01));
        Assert.True(other.IsCompletedSuccessfully);        // not held back by the cancelled 1000 bytes
        Assert.Equal(1010, limiter.BytesGranted);
    }

    [Fact]
    public async Task Dispose_FailsWaiters()
    {
        var time = new ManualTimeProvider(Monday9);
        var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(1000), time);
        Assert.True(limiter.WaitAsync(5000).IsCompletedSuccessfully);
        var waiting = limiter.WaitAsync(10).AsTask();
        limiter.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting);
    }

    [Fact]
    public async Task RealClock_ConcurrentWaiters_AllComplete()
    {
        using var limiter = new BandwidthLimiter(BandwidthSchedule.Fixed(4_000_000));
        var tasks = Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            for (int i = 0; i < 8; i++) await limiter.WaitAsync(8192);
        }));
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(16 * 8 * 8192, limiter.BytesGranted);
    }
}
