using System.Diagnostics;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>A token bucket of <c>rate</c> tokens per second holding at most one second's worth (AWS's per-snapshot TPS quotas).</summary>
internal sealed class TokenBucket(int ratePerSecond)
{
    private readonly Lock _gate = new();
    private double _tokens = ratePerSecond;
    private long _last = Stopwatch.GetTimestamp();

    /// <summary>Takes one token; false means the caller is over the rate. A rate of 0 never throttles.</summary>
    public bool TryTake()
    {
        if (ratePerSecond <= 0) return true;
        lock (_gate)
        {
            long now = Stopwatch.GetTimestamp();
            _tokens = Math.Min(ratePerSecond, _tokens + Stopwatch.GetElapsedTime(_last, now).TotalSeconds * ratePerSecond);
            _last = now;
            if (_tokens < 1) return false;
            _tokens -= 1;
            return true;
        }
    }
}
