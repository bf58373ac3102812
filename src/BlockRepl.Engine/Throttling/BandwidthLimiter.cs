using BlockRepl.Storage;

namespace BlockRepl.Engine.Throttling;

/// <summary>
/// One token bucket for every upload of a process, its rate taken from a <see cref="BandwidthSchedule"/>
/// (re-read at least every <see cref="RateRefresh"/>, so a schedule boundary takes effect within a second).
/// The bucket holds at most <see cref="Burst"/> worth of the rate and starts empty. A caller may go when the
/// balance is not negative and no one is queued: it takes its bytes at once (the balance may go negative, so a
/// request larger than the burst still passes; later callers repay it). Others queue in arrival order and are
/// released by a timer as the balance recovers, so many concurrent uploads all progress. Thread-safe.
/// </summary>
public sealed class BandwidthLimiter : IByteRateLimiter, IDisposable
{
    /// <summary>Most the bucket holds, as time at the current rate: bounds how far a measured rate can overshoot.</summary>
    public static readonly TimeSpan Burst = TimeSpan.FromMilliseconds(250);

    /// <summary>Longest time between two readings of the schedule while anyone sends or waits.</summary>
    public static readonly TimeSpan RateRefresh = TimeSpan.FromSeconds(1);

    private readonly BandwidthSchedule _schedule;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Queue<Waiter> _queue = new();
    private readonly ITimer _timer;
    private long? _rate;
    private double _tokens;
    private long _lastRefill;
    private long _rateReadAt;
    private bool _timerArmed;
    private bool _disposed;
    private long _bytesGranted;

    public BandwidthLimiter(BandwidthSchedule schedule, TimeProvider? time = null)
    {
        _schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        _time = time ?? TimeProvider.System;
        _lastRefill = _rateReadAt = _time.GetTimestamp();
        _rate = _schedule.BytesPerSecondAt(_time.GetLocalNow().DateTime);
        _timer = _time.CreateTimer(static s => ((BandwidthLimiter)s!).Pump(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public BandwidthSchedule Schedule => _schedule;

    /// <summary>The rate in force, bytes per second (null = unlimited), as of the last reading of the schedule.</summary>
    public long? CurrentBytesPerSecond
    {
        get { lock (_lock) return _rate; }
    }

    /// <summary>Bytes let through so far (for tests and statistics).</summary>
    public long BytesGranted => Interlocked.Read(ref _bytesGranted);

    /// <summary>Callers waiting now.</summary>
    public int Waiting
    {
        get { lock (_lock) return _queue.Count(w => !w.Cancelled); }
    }

    public ValueTask WaitAsync(int bytes, CancellationToken ct = default)
    {
        if (bytes <= 0) return default;
        if (ct.IsCancellationRequested) return ValueTask.FromCanceled(ct);
        Waiter w;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Refill();
            if (_rate is null || (_queue.Count == 0 && _tokens >= 0))
            {
                if (_rate is not null) _tokens -= bytes;
                _bytesGranted += bytes;
                return default;
            }
            w = new Waiter(this, bytes);
            _queue.Enqueue(w);
            ArmTimer();
        }
        return ct.CanBeCanceled ? WaitCancellableAsync(w, ct) : new ValueTask(w.Task);
    }

    private static async ValueTask WaitCancellableAsync(Waiter w, CancellationToken ct)
    {
        using (ct.Register(static s => ((Waiter)s!).Cancel(), w))
            await w.Task.ConfigureAwait(false);
        // A grant that raced the cancellation stands (its bytes were counted); the caller still sees the cancellation.
        ct.ThrowIfCancellationRequested();
    }

    /// <summary>Adds what the elapsed time earned; re-reads the schedule when it is due. Under the lock.</summary>
    private void Refill()
    {
        long now = _time.GetTimestamp();
        double elapsed = _time.GetElapsedTime(_lastRefill, now).TotalSeconds;
        _lastRefill = now;
        if (_rate is long r) _tokens = Math.Min(_tokens + elapsed * r, r * Burst.TotalSeconds);
        if (_time.GetElapsedTime(_rateReadAt, now) < RateRefresh) return;
        _rateReadAt = now;
        long? next = _schedule.BytesPerSecondAt(_time.GetLocalNow().DateTime);
        if (next == _rate) return;
        // From unlimited the bucket starts empty; a lower rate keeps any debt but not a burst larger than its own.
        if (_rate is null) _tokens = 0;
        _rate = next;
        if (next is long n) _tokens = Math.Min(_tokens, n * Burst.TotalSeconds);
    }

    /// <summary>Wakes for the queue head's turn, or at the next schedule reading, whichever is first. Under the lock.</summary>
    private void ArmTimer()
    {
        if (_timerArmed || _disposed) return;
        TimeSpan due = TimeSpan.Zero;
        if (_rate is long r && _tokens < 0)
            due = TimeSpan.FromSeconds(Math.Min(-_tokens / r, RateRefresh.TotalSeconds));
        if (due < TimeSpan.FromMilliseconds(1)) due = TimeSpan.FromMilliseconds(1);
        _timerArmed = true;
        _timer.Change(due, Timeout.InfiniteTimeSpan);
    }

    private void Pump()
    {
        List<Waiter>? release = null;
        lock (_lock)
        {
            _timerArmed = false;
            if (_disposed) return;
            Refill();
            while (_queue.TryPeek(out var w))
            {
                if (w.Cancelled) { _queue.Dequeue(); continue; }
                if (_rate is not null && _tokens < 0) break;
                _queue.Dequeue();
                w.Granted = true;
                if (_rate is not null) _tokens -= w.Bytes;
                _bytesGranted += w.Bytes;
                (release ??= []).Add(w);
            }
            if (_queue.Count > 0) ArmTimer();
        }
        if (release is null) return;
        foreach (var w in release) w.Complete();
    }

    public void Dispose()
    {
        Waiter[] pending;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            pending = [.. _queue];
            _queue.Clear();
        }
        _timer.Dispose();
        foreach (var w in pending) w.Fail(new ObjectDisposedException(nameof(BandwidthLimiter)));
    }

    private sealed class Waiter(BandwidthLimiter owner, int bytes)
    {
        // Continuations run on the pool: the pump must not run an upload inline while others wait their turn.
        private readonly TaskCompletionSource _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Bytes { get; } = bytes;
        public bool Granted;
        public bool Cancelled;
        public Task Task => _tcs.Task;

        public void Complete() => _tcs.TrySetResult();
        public void Fail(Exception e) => _tcs.TrySetException(e);

        public void Cancel()
        {
            lock (owner._lock)
            {
                if (Granted) return;
                Cancelled = true;
            }
            _tcs.TrySetCanceled();
        }
    }
}
