using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Storage;
using Serilog;

namespace BlockRepl.Engine.Repository;

/// <summary>How repository locks behave (docs/format.md §8).</summary>
public sealed record LockOptions
{
    /// <summary>A lock not refreshed for this long is stale: its holder is presumed dead.</summary>
    public TimeSpan StaleAfter { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>How often a holder writes a fresh record; a holder that cannot for <see cref="StaleAfter"/> minus this gives up (<see cref="RepoLock.Lost"/>).</summary>
    public TimeSpan RefreshEvery { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>How long a writer waits for a running prune before failing; zero fails at once.</summary>
    public TimeSpan WaitForExclusive { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>How often a waiting writer looks again.</summary>
    public TimeSpan PollEvery { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Prune only: delete stale locks instead of refusing to run.</summary>
    public bool RemoveStale { get; init; }

    public static LockOptions Default { get; } = new();
}

/// <summary>A lock found in <c>locks/</c>: its key and record (null when unreadable, which counts as stale).</summary>
public sealed record LockEntry(string Key, LockRecord? Record, bool Stale)
{
    public string Describe() => Record is null ? $"unreadable lock {Key}" : $"{Record.Kind.ToString().ToLowerInvariant()} lock of {Record}";
}

/// <summary>
/// A lock held on a repository: <c>locks/&lt;kind&gt;-&lt;id&gt;</c>, written create-only, refreshed every
/// <see cref="LockOptions.RefreshEvery"/> by writing a new record and deleting the old one, deleted on dispose.
/// Acquiring writes the own record first and lists <c>locks/</c> after: of a writer and a prune that start at the
/// same moment, at least one sees the other (every backend lists what was committed before the list began).
/// </summary>
public sealed class RepoLock : IAsyncDisposable
{
    public const string Prefix = "locks/";
    private const string PrunedPrefix = Prefix + "pruned-";

    private readonly IBackend _backend;
    private readonly LockOptions _options;
    private readonly ILogger _log;
    private readonly LockRecord _record;
    private readonly CancellationTokenSource _stop = new();
    private readonly CancellationTokenSource _lost = new();
    private readonly Task _refresher;
    private string _key;

    private RepoLock(IBackend backend, string key, LockRecord record, string generation, LockOptions options, ILogger log)
    {
        _backend = backend;
        _key = key;
        _record = record;
        Generation = generation;
        _options = options;
        _log = log;
        _refresher = Task.Run(RefreshLoopAsync);
    }

    public LockKind Kind => _record.Kind;
    public string Key => _key;

    /// <summary>The prune marks seen when the lock was taken: a writer whose index was loaded under another generation reloads it.</summary>
    public string Generation { get; }

    /// <summary>Cancelled when the lock could not be refreshed in time: another process may now treat it as stale, so its holder must stop.</summary>
    public CancellationToken Lost => _lost.Token;

    private static string NewKey(LockKind kind) =>
        $"{Prefix}{kind.ToString().ToLowerInvariant()}-{Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())}";

    private static LockRecord NewRecord(LockKind kind, DateTimeOffset created) => new()
    {
        Host = Environment.MachineName,
        Pid = Environment.ProcessId,
        Kind = kind,
        Created = created,
        Refreshed = DateTimeOffset.UtcNow,
    };

    private static bool ProcessAlive(int pid) => Directory.Exists($"/proc/{pid}");

    /// <summary>The prune marks' keys, sorted and joined: changes whenever a prune starts deleting.</summary>
    public static async Task<string> ReadGenerationAsync(IBackend backend, CancellationToken ct)
    {
        var keys = new List<string>();
        await foreach (var o in backend.ListAsync(PrunedPrefix, ct).ConfigureAwait(false)) keys.Add(o.Key);
        return GenerationOf(keys);
    }

    private static string GenerationOf(List<string> prunedKeys)
    {
        prunedKeys.Sort(StringComparer.Ordinal);
        return string.Join(',', prunedKeys);
    }

    /// <summary>Every lock in the repository except <paramref name="ownKey"/> and the prune marks; shared locks are read only when <paramref name="readShared"/>.</summary>
    public static async Task<(List<LockEntry> Locks, string Generation)> ListAsync(IBackend backend, LockOptions options, string? ownKey, bool readShared, CancellationToken ct)
    {
        var keys = new List<string>();
        var pruned = new List<string>();
        await foreach (var o in backend.ListAsync(Prefix, ct).ConfigureAwait(false))
        {
            if (o.Key == ownKey) continue;
            if (o.Key.StartsWith(PrunedPrefix, StringComparison.Ordinal)) pruned.Add(o.Key);
            else keys.Add(o.Key);
        }
        var now = DateTimeOffset.UtcNow;
        var locks = new List<LockEntry>();
        foreach (var key in keys)
        {
            bool shared = key.StartsWith(Prefix + "shared-", StringComparison.Ordinal);
            if (shared && !readShared) { locks.Add(new LockEntry(key, null, Stale: false)); continue; }
            LockRecord? r;
            try { r = LockRecord.Deserialize(await backend.ReadAllAsync(key, ct).ConfigureAwait(false), $"lock {key}"); }
            catch (ObjectNotFoundException) { continue; }   // released (or refreshed) since the list
            catch (Exception e) when (e is CorruptDataException or UnsupportedFormatException) { r = null; }
            locks.Add(new LockEntry(key, r, r is null || r.IsStale(now, options.StaleAfter, Environment.MachineName, ProcessAlive)));
        }
        return (locks, GenerationOf(pruned));
    }

    /// <summary>
    /// Takes a shared lock for a writer. A running prune (a fresh exclusive lock) makes it release its record and wait,
    /// up to <see cref="LockOptions.WaitForExclusive"/>, then fail with <see cref="RepositoryLockedException"/>.
    /// Stale exclusive locks (a prune that died) are ignored with a warning: a prune leaves the repository whole at any moment.
    /// </summary>
    public static async Task<RepoLock> AcquireSharedAsync(IBackend backend, LockOptions options, ILogger log, CancellationToken ct)
    {
        var created = DateTimeOffset.UtcNow;
        var waitedSince = DateTimeOffset.UtcNow;
        bool announced = false;
        while (true)
        {
            var record = NewRecord(LockKind.Shared, created);
            string key = NewKey(LockKind.Shared);
            await backend.PutAsync(key, record.Serialize(), ct).ConfigureAwait(false);
            List<LockEntry> others;
            string generation;
            try { (others, generation) = await ListAsync(backend, options, key, readShared: false, ct).ConfigureAwait(false); }
            catch { await DeleteQuietlyAsync(backend, key, log).ConfigureAwait(false); throw; }
            var exclusive = others.Where(l => l.Record?.Kind == LockKind.Exclusive || (l.Record is null && !l.Key.StartsWith(Prefix + "shared-", StringComparison.Ordinal))).ToList();
            var blocking = exclusive.FirstOrDefault(l => !l.Stale);
            if (blocking is null)
            {
                foreach (var s in exclusive)
                    log.Warning("Ignoring the stale {Lock} ({Key}): that prune is gone; 'blockrepl prune --remove-stale-locks' deletes it", s.Describe(), s.Key);
                return new RepoLock(backend, key, record, generation, options, log);
            }
            await DeleteQuietlyAsync(backend, key, log).ConfigureAwait(false);
            if (DateTimeOffset.UtcNow - waitedSince >= options.WaitForExclusive)
                throw new RepositoryLockedException($"repository {backend.Location} is in use by prune on {blocking.Record}; try again when it has finished");
            if (!announced)
            {
                log.Information("Waiting for the prune on {Holder} to finish (at most {Wait})", blocking.Record?.ToString(), options.WaitForExclusive);
                announced = true;
            }
            await Task.Delay(options.PollEvery, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Takes the exclusive lock for prune: fails with <see cref="RepositoryLockedException"/> ("repository in use by
    /// HOST pid N since T") when any other fresh lock exists. Stale locks make it fail too, naming them, unless
    /// <see cref="LockOptions.RemoveStale"/> is set: then they are deleted and reported through <paramref name="removed"/>.
    /// </summary>
    public static async Task<RepoLock> AcquireExclusiveAsync(IBackend backend, LockOptions options, ILogger log, List<LockEntry>? removed, CancellationToken ct)
    {
        var record = NewRecord(LockKind.Exclusive, DateTimeOffset.UtcNow);
        string key = NewKey(LockKind.Exclusive);
        await backend.PutAsync(key, record.Serialize(), ct).ConfigureAwait(false);
        try
        {
            var (others, generation) = await ListAsync(backend, options, key, readShared: true, ct).ConfigureAwait(false);
            var live = others.Where(l => !l.Stale).ToList();
            if (live.Count > 0)
                throw new RepositoryLockedException($"repository in use by {live[0].Record}{(live.Count > 1 ? $" and {live.Count - 1} more" : "")} ({live[0].Record!.Kind.ToString().ToLowerInvariant()} lock {live[0].Key}); try again when it has finished");
            var stale = others.Where(l => l.Stale).ToList();
            if (stale.Count > 0 && !options.RemoveStale)
                throw new RepositoryLockedException($"{stale.Count} stale lock(s) in {backend.Location}, first: {stale[0].Describe()} ({stale[0].Key}); if no backup or prune is running, run again with --remove-stale-locks");
            foreach (var s in stale)
            {
                await backend.DeleteAsync(s.Key, ct).ConfigureAwait(false);
                removed?.Add(s);
                log.Information("Removed the stale {Lock}", s.Describe());
            }
            return new RepoLock(backend, key, record, generation, options, log);
        }
        catch
        {
            await DeleteQuietlyAsync(backend, key, log).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Leaves the prune mark (a new <c>locks/pruned-&lt;id&gt;</c>, older marks deleted after it) before a prune deletes
    /// anything, so every writer that loaded its index earlier sees a new generation and reloads it.
    /// </summary>
    public async Task WritePruneMarkAsync(CancellationToken ct)
    {
        var old = new List<string>();
        await foreach (var o in _backend.ListAsync(PrunedPrefix, ct).ConfigureAwait(false)) old.Add(o.Key);
        await _backend.PutAsync(NewKey(LockKind.Pruned), NewRecord(LockKind.Pruned, DateTimeOffset.UtcNow).Serialize(), ct).ConfigureAwait(false);
        foreach (var k in old) await _backend.DeleteAsync(k, ct).ConfigureAwait(false);
    }

    /// <summary>When the newest prune mark was written (the last prune that deleted anything), or null.</summary>
    public static async Task<DateTimeOffset?> LastPruneAsync(IBackend backend, CancellationToken ct)
    {
        DateTimeOffset? last = null;
        await foreach (var o in backend.ListAsync(PrunedPrefix, ct).ConfigureAwait(false))
        {
            try
            {
                var r = LockRecord.Deserialize(await backend.ReadAllAsync(o.Key, ct).ConfigureAwait(false), $"prune mark {o.Key}");
                if (last is null || r.Created > last) last = r.Created;
            }
            catch (Exception e) when (e is ObjectNotFoundException or CorruptDataException or UnsupportedFormatException) { }
        }
        return last;
    }

    private async Task RefreshLoopAsync()
    {
        var lastOk = DateTimeOffset.UtcNow;
        while (true)
        {
            try { await Task.Delay(_options.RefreshEvery, _stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            try
            {
                var fresh = NewRecord(_record.Kind, _record.Created);
                string key = NewKey(_record.Kind);
                await _backend.PutAsync(key, fresh.Serialize(), _stop.Token).ConfigureAwait(false);
                string old = _key;
                _key = key;
                await _backend.DeleteAsync(old, _stop.Token).ConfigureAwait(false);
                lastOk = fresh.Refreshed;
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { return; }
            catch (Exception e) when (e is StorageException or IOException)
            {
                _log.Warning("Cannot refresh the repository lock {Key}: {Error}", _key, e.Message);
                if (DateTimeOffset.UtcNow - lastOk > _options.StaleAfter - _options.RefreshEvery)
                {
                    _log.Error("The repository lock {Key} could not be refreshed for {Age}: stopping before a prune may treat it as stale", _key, DateTimeOffset.UtcNow - lastOk);
                    await _lost.CancelAsync().ConfigureAwait(false);
                }
            }
        }
    }

    private static async Task DeleteQuietlyAsync(IBackend backend, string key, ILogger log)
    {
        try { await backend.DeleteAsync(key, CancellationToken.None).ConfigureAwait(false); }
        catch (Exception e) when (e is StorageException or IOException)
        {
            log.Warning("Cannot delete the repository lock {Key}: {Error}; it turns stale by itself", key, e.Message);
        }
    }

    /// <summary>Stops refreshing and deletes the lock.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _refresher.ConfigureAwait(false);
        await DeleteQuietlyAsync(_backend, _key, _log).ConfigureAwait(false);
        _stop.Dispose();
        _lost.Dispose();
    }
}
