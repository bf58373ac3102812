namespace BlockRepl.Storage.Ebs;

/// <summary>
/// Client-side rate pacing for block calls, beside the concurrency limiter: against a fast endpoint a
/// concurrency of 1 can still exceed a per-snapshot request-rate quota, so concurrency alone cannot hold it.
/// Unlimited until the first throttle; then the rate is cut to 90 % of the success rate measured over the last
/// second (at most once per 500 ms), and it grows by 20 % for every second without a throttle until it is
/// unlimited again. The idea of AWS SDKs' "adaptive" retry mode, without CUBIC's curve.
/// </summary>
internal sealed class AdaptiveRatePacer(TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Lock _lock = new();
    private double _rate;            // requests per second; 0 = unlimited
    private long _next;              // timestamp before which no request may start
    private long _windowStart = (time ?? TimeProvider.System).GetTimestamp();
    private long _successes;
    private double _lastWindowRate;
    private bool _throttledInWindow;
    private long _lastCut;
    private const double Unlimited = 100_000;

    /// <summary>Current paced rate in requests per second; 0 when unpaced.</summary>
    public double Rate { get { lock (_lock) return _rate; } }

    public ValueTask WaitAsync(CancellationToken ct)
    {
        TimeSpan delay;
        lock (_lock)
        {
            if (_rate <= 0) return ValueTask.CompletedTask;
            long now = _time.GetTimestamp();
            long slot = Math.Max(now, _next);
            _next = slot + (long)(_time.TimestampFrequency / _rate);
            delay = _time.GetElapsedTime(now, slot);
        }
        return delay <= TimeSpan.Zero ? ValueTask.CompletedTask : new ValueTask(Task.Delay(delay, _time, ct));
    }

    public void OnOutcome(LimiterOutcome outcome)
    {
        lock (_lock)
        {
            long now = _time.GetTimestamp();
            var window = _time.GetElapsedTime(_windowStart, now);
            if (window >= TimeSpan.FromSeconds(1))
            {
                _lastWindowRate = _successes / window.TotalSeconds;
                if (_rate > 0 && !_throttledInWindow) _rate = _rate * 1.2 >= Unlimited ? 0 : _rate * 1.2;
                _successes = 0;
                _throttledInWindow = false;
                _windowStart = now;
                window = TimeSpan.Zero;
            }
            if (outcome == LimiterOutcome.Success) _successes++;
            else if (outcome == LimiterOutcome.Throttled)
            {
                _throttledInWindow = true;
                if (_lastCut != 0 && _time.GetElapsedTime(_lastCut, now) < TimeSpan.FromMilliseconds(500)) return;
                double measured = Math.Max(_lastWindowRate, window.TotalSeconds > 0.1 ? _successes / window.TotalSeconds : 0);
                double cut = measured > 0 ? measured * 0.9 : (_rate > 0 ? _rate * 0.5 : 10);
                _rate = Math.Max(1, _rate > 0 ? Math.Min(_rate * 0.9, cut) : cut);
                _lastCut = now;
            }
        }
    }
}
