namespace BlockRepl.Storage.Ebs.Tests;

public sealed class AdaptiveConcurrencyLimiterTests
{
    /// <summary>A clock the test moves by hand.</summary>
    private sealed class ManualTime : TimeProvider
    {
        public long Ticks;
        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
        public override long GetTimestamp() => Ticks;
        public void Advance(TimeSpan by) => Ticks += by.Ticks;
    }

    [Fact]
    public async Task Calls_beyond_the_limit_wait_for_a_release()
    {
        var limiter = new AdaptiveConcurrencyLimiter(initial: 2, max: 8, increaseEvery: 100);
        await limiter.AcquireAsync(CancellationToken.None);
        await limiter.AcquireAsync(CancellationToken.None);
        var third = limiter.AcquireAsync(CancellationToken.None).AsTask();
        Assert.False(third.IsCompleted);
        limiter.Release(LimiterOutcome.Other);
        await third.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, limiter.InFlight);
    }

    [Fact]
    public async Task Successes_raise_the_limit_by_one_per_N_up_to_the_maximum()
    {
        int reported = 0;
        var limiter = new AdaptiveConcurrencyLimiter(initial: 2, max: 4, increaseEvery: 3, onLimitChanged: v => reported = v);
        Assert.Equal(2, reported);
        for (int i = 0; i < 20; i++)
        {
            await limiter.AcquireAsync(CancellationToken.None);
            limiter.Release(LimiterOutcome.Success);
            if (i == 2) Assert.Equal(3, limiter.Limit);
        }
        Assert.Equal(4, limiter.Limit);
        Assert.Equal(4, reported);
    }

    [Fact]
    public async Task A_throttle_halves_once_per_cooldown_down_to_one()
    {
        var time = new ManualTime();
        var limiter = new AdaptiveConcurrencyLimiter(initial: 16, max: 64, decreaseCooldown: TimeSpan.FromSeconds(1), time: time);
        for (int i = 0; i < 5; i++) await limiter.AcquireAsync(CancellationToken.None);
        limiter.Release(LimiterOutcome.Throttled);
        Assert.Equal(8, limiter.Limit);
        // The other calls of the same burst do not halve again.
        limiter.Release(LimiterOutcome.Throttled);
        limiter.Release(LimiterOutcome.Throttled);
        Assert.Equal(8, limiter.Limit);
        limiter.Release(LimiterOutcome.Other);
        limiter.Release(LimiterOutcome.Other);
        Assert.Equal(0, limiter.InFlight);
        foreach (int expected in new[] { 4, 2, 1, 1 })
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await limiter.AcquireAsync(CancellationToken.None);
            limiter.Release(LimiterOutcome.Throttled);
            Assert.Equal(expected, limiter.Limit);
        }
    }

    [Fact]
    public async Task Lowered_limit_admits_no_new_calls_until_in_flight_drops_below_it()
    {
        var limiter = new AdaptiveConcurrencyLimiter(initial: 4, max: 4);
        for (int i = 0; i < 4; i++) await limiter.AcquireAsync(CancellationToken.None);
        var waiter = limiter.AcquireAsync(CancellationToken.None).AsTask();
        limiter.Release(LimiterOutcome.Throttled); // limit 2, in flight 3
        Assert.False(waiter.IsCompleted);
        limiter.Release(LimiterOutcome.Other); // in flight 2
        Assert.False(waiter.IsCompleted);
        limiter.Release(LimiterOutcome.Other); // in flight 1 → the waiter gets a slot
        await waiter.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, limiter.InFlight);
    }

    [Fact]
    public async Task A_cancelled_waiter_leaves_the_queue_without_taking_a_slot()
    {
        var limiter = new AdaptiveConcurrencyLimiter(initial: 1, max: 1);
        await limiter.AcquireAsync(CancellationToken.None);
        using var cts = new CancellationTokenSource();
        var waiter = limiter.AcquireAsync(cts.Token).AsTask();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiter);
        Assert.Equal(0, limiter.Waiting);
        limiter.Release(LimiterOutcome.Success);
        Assert.Equal(0, limiter.InFlight);
        await limiter.AcquireAsync(CancellationToken.None);
        Assert.Equal(1, limiter.InFlight);
    }

    [Fact]
    public void Initial_value_is_clamped_to_the_maximum()
    {
        Assert.Equal(3, new AdaptiveConcurrencyLimiter(initial: 16, max: 3).Limit);
        Assert.Equal(1, new AdaptiveConcurrencyLimiter(initial: 0, max: 3).Limit);
    }

    [Fact]
    public async Task Many_concurrent_callers_never_exceed_the_limit()
    {
        var limiter = new AdaptiveConcurrencyLimiter(initial: 5, max: 5);
        int current = 0, peak = 0;
        await Parallel.ForAsync(0, 200, async (i, ct) =>
        {
            await limiter.AcquireAsync(ct);
            int now = Interlocked.Increment(ref current);
            InterlockedMax(ref peak, now);
            await Task.Yield();
            Interlocked.Decrement(ref current);
            limiter.Release(LimiterOutcome.Success);
        });
        Assert.InRange(peak, 1, 5);
        Assert.Equal(0, limiter.InFlight);
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
