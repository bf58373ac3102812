using System.Runtime.CompilerServices;

namespace BlockRepl.Storage;

/// <summary>The backend operations a <see cref="FaultInjectingBackend"/> can fail.</summary>
public enum FaultOperation
{
    /// <summary>Every operation below (one shared call counter).</summary>
    Any,
    Create,
    Commit,
    ReadAt,
    ReadAll,
    Stat,
    /// <summary>Fails when the listing starts, before the first item.</summary>
    List,
    Delete,
}

/// <summary>
/// A decorator for tests: fails chosen calls with a transient or permanent <see cref="StorageException"/>
/// before they reach the inner backend (so a failed commit stores nothing). Thread-safe.
/// </summary>
public sealed class FaultInjectingBackend(IBackend inner) : IBackend
{
    private readonly Lock _lock = new();
    private readonly Dictionary<FaultOperation, int> _calls = [];
    private readonly List<Rule> _rules = [];
    private int _injected;

    private sealed record Rule(FaultOperation Operation, int First, int Count, bool Transient);

    public IBackend Inner => inner;
    public string Location => inner.Location;

    /// <summary>Fails calls number <paramref name="n"/> … n+count-1 (1-based) of <paramref name="operation"/>.</summary>
    public FaultInjectingBackend FailNth(FaultOperation operation, int n, bool transient = true, int count = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        lock (_lock) _rules.Add(new Rule(operation, n, count, transient));
        return this;
    }

    /// <summary>Fails every later call of <paramref name="operation"/>.</summary>
    public FaultInjectingBackend FailAlways(FaultOperation operation, bool transient = true)
    {
        lock (_lock) _rules.Add(new Rule(operation, 1, int.MaxValue, transient));
        return this;
    }

    /// <summary>Removes all rules (call counts stay).</summary>
    public void Clear()
    {
        lock (_lock) _rules.Clear();
    }

    /// <summary>Calls seen of <paramref name="operation"/> (<see cref="FaultOperation.Any"/>: all calls).</summary>
    public int Calls(FaultOperation operation)
    {
        lock (_lock) return _calls.GetValueOrDefault(operation);
    }

    /// <summary>Faults injected so far.</summary>
    public int Injected => Volatile.Read(ref _injected);

    private void Check(FaultOperation operation, string key)
    {
        StorageException? fault = null;
        lock (_lock)
        {
            int own = _calls[operation] = _calls.GetValueOrDefault(operation) + 1;
            int any = _calls[FaultOperation.Any] = _calls.GetValueOrDefault(FaultOperation.Any) + 1;
            foreach (var rule in _rules)
            {
                int call = rule.Operation == FaultOperation.Any ? any : rule.Operation == operation ? own : 0;
                if (call == 0 || call < rule.First || call - rule.First >= rule.Count) continue;
                fault = new StorageException(
                    $"{key}: injected {(rule.Transient ? "transient" : "permanent")} fault ({operation} call {own})", rule.Transient);
                _injected++;
                break;
            }
        }
        if (fault is not null) throw fault;
    }

    public async ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default)
    {
        Check(FaultOperation.Create, key);
        return new FaultyUpload(this, await inner.CreateAsync(key, ct).ConfigureAwait(false));
    }

    public ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        Check(FaultOperation.ReadAt, key);
        return inner.ReadAtAsync(key, offset, buffer, ct);
    }

    public ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default)
    {
        Check(FaultOperation.ReadAll, key);
        return inner.ReadAllAsync(key, ct);
    }

    public ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        Check(FaultOperation.Stat, key);
        return inner.StatAsync(key, ct);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        Check(FaultOperation.List, prefix);
        await foreach (var item in inner.ListAsync(prefix, ct).ConfigureAwait(false))
            yield return item;
    }

    public ValueTask DeleteAsync(string key, CancellationToken ct = default)
    {
        Check(FaultOperation.Delete, key);
        return inner.DeleteAsync(key, ct);
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();

    private sealed class FaultyUpload(FaultInjectingBackend owner, IObjectUpload upload) : IObjectUpload
    {
        public string Key => upload.Key;
        public Stream Stream => upload.Stream;

        public ValueTask CommitAsync(CancellationToken ct = default)
        {
            owner.Check(FaultOperation.Commit, upload.Key);
            return upload.CommitAsync(ct);
        }

        public ValueTask DisposeAsync() => upload.DisposeAsync();
    }
}
