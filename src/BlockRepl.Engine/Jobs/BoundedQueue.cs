namespace BlockRepl.Engine.Jobs;

/// <summary>
/// A bounded FIFO between pipeline threads: a ring buffer under one lock, blocking with Monitor.Wait.
/// Unlike BlockingCollection it allocates nothing per item (no linked CancellationTokenSource per
/// wait) and does not spin with sched_yield, which on a 2-core machine steals the core a worker needs.
/// </summary>
internal sealed class BoundedQueue<T>
{
    private readonly T[] _items;
    private int _head, _count;
    private bool _completed, _cancelled;
    private readonly object _lock = new();

    public BoundedQueue(int capacity) => _items = new T[capacity];

    /// <summary>Blocks while full. Throws <see cref="OperationCanceledException"/> once cancelled.</summary>
    public void Add(T item)
    {
        lock (_lock)
        {
            while (_count == _items.Length && !_cancelled) Monitor.Wait(_lock);
            if (_cancelled) throw new OperationCanceledException();
            if (_completed) throw new InvalidOperationException("queue completed");
            _items[(_head + _count) % _items.Length] = item;
            if (_count++ == 0) Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Blocks while empty; false once completed and drained. Throws once cancelled.</summary>
    public bool TryTake(out T item)
    {
        lock (_lock)
        {
            while (_count == 0 && !_completed && !_cancelled) Monitor.Wait(_lock);
            if (_cancelled) throw new OperationCanceledException();
            if (_count == 0) { item = default!; return false; }
            item = _items[_head];
            _items[_head] = default!;
            _head = (_head + 1) % _items.Length;
            if (_count-- == _items.Length) Monitor.PulseAll(_lock);
            return true;
        }
    }

    /// <summary>No more items will be added; takers drain what is left, then get false.</summary>
    public void Complete()
    {
        lock (_lock) { _completed = true; Monitor.PulseAll(_lock); }
    }

    /// <summary>Wakes every waiter with <see cref="OperationCanceledException"/>.</summary>
    public void Cancel()
    {
        lock (_lock) { _cancelled = true; Monitor.PulseAll(_lock); }
    }
}
