using System.Runtime.CompilerServices;

namespace BlockRepl.Storage;

/// <summary>Retry policy of a <see cref="RetryingBackend"/>.</summary>
public sealed record RetryOptions
{
    /// <summary>Tries per operation, the first included.</summary>
    public int MaxAttempts { get; init; } = 6;

    /// <summary>Delay scale before the second try; it doubles per try, up to <see cref="MaxDelay"/>, then jitter.</summary>
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How to wait (tests replace it to run without sleeping).</summary>
    public Func<TimeSpan, CancellationToken, Task> Delay { get; init; } = Task.Delay;

    /// <summary>Called before each retry with the failure, the try that failed (1-based) and the delay.</summary>
    public Action<StorageException, int, TimeSpan>? OnRetry { get; init; }
}

/// <summary>
/// Retries operations that fail with a transient <see cref="StorageException"/> (throttling, 5xx,
/// resets, timeouts) with jittered exponential backoff; permanent failures pass through at once.
/// For uploads only <see cref="IObjectUpload.CommitAsync"/> is retried: backends keep the written
/// content until the upload is disposed, so a commit can be re-sent. When every try fails, the last
/// failure is rethrown with the number of tries in its message.
/// </summary>
public sealed class RetryingBackend : IBackend
{
    private readonly IBackend _inner;
    private readonly RetryOptions _options;

    public RetryingBackend(IBackend inner, RetryOptions? options = null)
    {
        _inner = inner ?? throw new ArgumentNullException(nameof(inner));
        _options = options ?? new RetryOptions();
        if (_options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxAttempts must be at least 1");
    }

    public IBackend Inner => _inner;
    public string Location => _inner.Location;

    /// <summary>
    /// "Equal jitter": half the exponential step plus a random half, so retries of many workers
    /// spread out but never hammer the store immediately again.
    /// </summary>
    internal TimeSpan DelayFor(int failedAttempt)
    {
        double step = _options.BaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(failedAttempt - 1, 30));
        step = Math.Min(step, _options.MaxDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(step / 2 + Random.Shared.NextDouble() * step / 2);
    }

    private async ValueTask<T> RunAsync<T>(Func<CancellationToken, ValueTask<T>> operation, CancellationToken ct)
    {
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await operation(ct).ConfigureAwait(false);
            }
            catch (StorageException e) when (e.Transient)
            {
                if (attempt >= _options.MaxAttempts) throw GaveUp(e, attempt);
                await BackOffAsync(e, attempt, ct).ConfigureAwait(false);
            }
        }
    }

    private async Task BackOffAsync(StorageException e, int attempt, CancellationToken ct)
    {
        var delay = DelayFor(attempt);
        _options.OnRetry?.Invoke(e, attempt, delay);
        await _options.Delay(delay, ct).ConfigureAwait(false);
    }

    private static StorageException GaveUp(StorageException last, int attempts) =>
        attempts == 1 ? last : new StorageException($"{last.Message} (gave up after {attempts} tries)", transient: true, last);

    public async ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default)
    {
        var upload = await RunAsync(c => _inner.CreateAsync(key, c), ct).ConfigureAwait(false);
        return new RetryingUpload(this, upload);
    }

    public ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default) =>
        RunAsync(c => _inner.ReadAtAsync(key, offset, buffer, c), ct);

    public ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default) =>
        RunAsync(c => _inner.ReadAllAsync(key, c), ct);

    public ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default) =>
        RunAsync(c => _inner.StatAsync(key, c), ct);

    public ValueTask DeleteAsync(string key, CancellationToken ct = default) =>
        new(RunAsync(async c => { await _inner.DeleteAsync(key, c).ConfigureAwait(false); return true; }, ct).AsTask());

    /// <summary>
    /// A failed listing restarts from the beginning; keys already returned are skipped, so callers
    /// see each key once.
    /// </summary>
    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int attempt = 1; ; attempt++)
        {
            var e = _inner.ListAsync(prefix, ct).GetAsyncEnumerator(ct);
            StorageException? failure = null;
            try
            {
                while (true)
                {
                    ObjectInfo item;
                    try
                    {
                        if (!await e.MoveNextAsync().ConfigureAwait(false)) yield break;
                        item = e.Current;
                    }
                    catch (StorageException ex) when (ex.Transient)
                    {
                        failure = ex;
                        break;
                    }
                    if (seen.Add(item.Key)) yield return item;
                }
            }
            finally
            {
                await e.DisposeAsync().ConfigureAwait(false);
            }
            if (attempt >= _options.MaxAttempts) throw GaveUp(failure!, attempt);
            await BackOffAsync(failure!, attempt, ct).ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    private sealed class RetryingUpload(RetryingBackend owner, IObjectUpload inner) : IObjectUpload
    {
        public string Key => inner.Key;
        public Stream Stream => inner.Stream;

        public ValueTask CommitAsync(CancellationToken ct = default) =>
            new(owner.RunAsync(async c => { await inner.CommitAsync(c).ConfigureAwait(false); return true; }, ct).AsTask());

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
