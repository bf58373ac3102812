namespace BlockRepl.Storage.Ebs;

/// <summary>
/// AIMD gate for block transfers: at most <see cref="Limit"/> calls in flight. Every
/// <c>increaseEvery</c> successes raise the limit by one (up to the maximum); a throttle halves it
/// (floor 1), at most once per <c>decreaseCooldown</c> so that one congestion event, seen by all the
/// calls in flight at once, counts as one signal (TCP's "once per window"). Calls already in flight
/// above a lowered limit finish; new ones wait until the count drops below it.
/// </summary>
internal sealed class AdaptiveConcurrencyLimiter
{
    private readonly Lock _lock = new();
    private readonly LinkedList<TaskCompletionSource> _waiters = new();
    private readonly int _max;
    private readonly int _increaseEvery;
    private readonly TimeSpan _decreaseCooldown;
    private readonly TimeProvider _time;
    private readonly Action<int>? _onLimitChanged;
    private int _limit;
    private int _inFlight;
    private int _successes;
    private long _lastDecrease;
    private bool _decreasedOnce;

    public AdaptiveConcurrencyLimiter(int initial, int max, int increaseEvery = 8, TimeSpan? decreaseCooldown = null,
        TimeProvider? time = null, Action<int>? onLimitChanged = null)
    {
        if (max < 1) throw new ArgumentOutOfRangeException(nameof(max), max, "must be at least 1");
        if (increaseEvery < 1) throw new ArgumentOutOfRangeException(nameof(increaseEvery), increaseEvery, "must be at least 1");
        _max = max;
        _limit = Math.Clamp(initial, 1, max);
        _increaseEvery = increaseEvery;
        _decreaseCooldown = decreaseCooldown ?? TimeSpan.FromSeconds(1);
        _time = time ?? TimeProvider.System;
        _onLimitChanged = onLimitChanged;
        _onLimitChanged?.Invoke(_limit);
    }

    public int Limit { get { lock (_lock) return _limit; } }
    public int InFlight { get { lock (_lock) return _inFlight; } }
    public int Waiting { get { lock (_lock) return _waiters.Count; } }

    /// <summary>Waits for a slot; every successful acquire must be paired with one <see cref="Release"/>.</summary>
    public ValueTask AcquireAsync(CancellationToken ct)
    {
        TaskCompletionSource waiter;
        LinkedListNode<TaskCompletionSource> node;
        lock (_lock)
        {
            ct.ThrowIfCancellationRequested();
            if (_inFlight < _limit && _waiters.Count == 0)
            {
                _inFlight++;
                return ValueTask.CompletedTask;
            }
            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            node = _waiters.AddLast(waiter);
        }
        return new ValueTask(WaitAsync(node, ct));
    }

    private async Task WaitAsync(LinkedListNode<TaskCompletionSource> node, CancellationToken ct)
    {
        await using var registration = ct.Register(() =>
        {
            lock (_lock)
            {
                // Still queued: not granted, so no slot to give back.
                if (node.List is null) return;
                _waiters.Remove(node);
                node.Value.TrySetCanceled(ct);
            }
        }).ConfigureAwait(false);
        await node.Value.Task.ConfigureAwait(false);
    }

    /// <summary>Gives the slot back and feeds the outcome of the call into the limit.</summary>
    public void Release(LimiterOutcome outcome)
    {
        lock (_lock)
        {
            _inFlight--;
            int before = _limit;
            if (outcome == LimiterOutcome.Success)
            {
                if (++_successes >= _increaseEvery)
                {
                    _successes = 0;
                    if (_limit < _max) _limit++;
                }
            }
            else if (outcome == LimiterOutcome.Throttled)
            {
                long now = _time.GetTimestamp();
                if (!_decreasedOnce || _time.GetElapsedTime(_lastDecrease, now) >= _decreaseCooldown)
                {
                    _limit = Math.Max(1, _limit / 2);
                    _successes = 0;
                    _lastDecrease = now;
                    _decreasedOnce = true;
                }
            }
            while (_inFlight < _limit && _waiters.First is { } first)
            {
                _waiters.RemoveFirst();
                _inFlight++;
                first.Value.TrySetResult();
            }
            if (_limit != before) _onLimitChanged?.Invoke(_limit);
        }
    }
}

internal enum LimiterOutcome
{
    /// <summary>The call succeeded: counts towards an increase.</summary>
    Success,
    /// <summary>The service throttled the call: halve.</summary>
    Throttled,
    /// <summary>Any other failure: no signal.</summary>
    Other,
}
