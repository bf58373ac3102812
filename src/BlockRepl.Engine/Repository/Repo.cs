using System.Buffers;
using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;
using BlockRepl.Storage;
using Serilog;

namespace BlockRepl.Engine.Repository;

/// <summary>
/// A BlockRepl repository (format v1, docs/format.md) over any <see cref="IBackend"/>:
/// <c>config</c>, <c>data/xx/PACKID.pack</c>, <c>index/xx/PACKID.idx</c>, <c>snapshots/ID.snap</c>.
/// </summary>
public sealed class Repo : IAsyncDisposable
{
    public const string ConfigKey = "config";
    public const string DataPrefix = "data/";
    public const string IndexPrefix = "index/";
    public const string SnapshotPrefix = "snapshots/";

    private Repo(IBackend backend, RepoConfig config)
    {
        Backend = backend;
        Config = config;
    }

    public IBackend Backend { get; }
    // Pack ordinal → object key, so reading a blob builds no strings.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, string> _packKeys = new();
    public RepoConfig Config { get; }
    public ChunkIndex Index { get; } = new();
    public int ChunkSize => Config.ChunkSize;
    public string Location => Backend.Location;

    public static string PackKey(PackId id) { string h = id.ToString(); return $"{DataPrefix}{h[..2]}/{h}.pack"; }
    public static string IndexKey(PackId id) { string h = id.ToString(); return $"{IndexPrefix}{h[..2]}/{h}.idx"; }
    public static string SnapshotKey(string id) => $"{SnapshotPrefix}{id}.snap";

    /// <summary>Creates a repository in an empty location.</summary>
    public static async Task<Repo> InitAsync(IBackend backend, int chunkSize, CancellationToken ct = default)
    {
        if (!ChunkGeometry.IsValidChunkSize(chunkSize))
            throw new UsageException($"chunk size {chunkSize} is invalid: use a power of two from 4K to 512K");
        var config = new RepoConfig
        {
            RepoId = Convert.ToHexStringLower(Guid.NewGuid().ToByteArray()),
            ChunkSize = chunkSize,
            PackTargetSize = ChunkGeometry.DefaultPackTargetSize,
            Created = DateTimeOffset.UtcNow,
        };
        try
        {
            await backend.PutAsync(ConfigKey, config.Serialize(), ct).ConfigureAwait(false);
        }
        catch (ObjectExistsException)
        {
            throw new RepositoryException($"{backend.Location} is already a repository");
        }
        return new Repo(backend, config);
    }

    /// <summary>Opens a repository and loads its index.</summary>
    public static async Task<Repo> OpenAsync(IBackend backend, bool loadIndex = true, CancellationToken ct = default)
    {
        byte[] raw;
        try { raw = await backend.ReadAllAsync(ConfigKey, ct).ConfigureAwait(false); }
        catch (ObjectNotFoundException) { throw new RepositoryException($"{backend.Location} is not a blockrepl repository (no config); create one with 'blockrepl init --repo {backend.Location}'"); }
        RepoConfig config;
        try { config = RepoConfig.Deserialize(raw, $"repository config {backend.Location}/config"); }
        catch (UnsupportedFormatException e) { throw new RepositoryException(e.Message, e); }
        catch (CorruptDataException e) { throw new RepositoryException($"{backend.Location} is not a usable blockrepl repository: {e.Message}", e); }
        var repo = new Repo(backend, config);
        if (loadIndex) await repo.LoadIndexAsync(ct).ConfigureAwait(false);
        return repo;
    }

    /// <summary>Reads every index file. Corrupt index files throw <see cref="CorruptDataException"/>.</summary>
    public async Task LoadIndexAsync(CancellationToken ct = default)
    {
        // The prune generation first: a prune that starts deleting after this changes it, and the next shared lock reloads.
        _indexGeneration = await RepoLock.ReadGenerationAsync(Backend, ct).ConfigureAwait(false);
        Index.Clear();
        _packKeys.Clear();
        var keys = new List<string>();
        await foreach (var o in Backend.ListAsync(IndexPrefix, ct).ConfigureAwait(false))
            if (o.Key.EndsWith(".idx", StringComparison.Ordinal)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (key, c) =>
        {
            var bytes = await Backend.ReadAllAsync(key, c).ConfigureAwait(false);
            foreach (var p in IndexFile.Deserialize(bytes, $"index file {key}"))
                AddPackIndex(p);
        }).ConfigureAwait(false);
    }

    private string? _indexGeneration;
    private readonly SemaphoreSlim _lockGate = new(1, 1);
    private RepoLock? _shared;
    private int _sharedHolds;

    /// <summary>
    /// Takes the repository's shared lock for a writer (docs/format.md §8), or joins the one this object already holds
    /// (a daemon cycle holds one around all its volumes). When a prune ran since the index was loaded, the index is
    /// loaded again, so nothing is deduplicated against a blob that is gone. Dispose the result to release.
    /// </summary>
    public async Task<SharedLockLease> LockSharedAsync(LockOptions options, ILogger log, CancellationToken ct = default)
    {
        await _lockGate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_shared is null)
            {
                var held = await RepoLock.AcquireSharedAsync(Backend, options, log, ct).ConfigureAwait(false);
                try
                {
                    if (_indexGeneration is not null && _indexGeneration != held.Generation)
                    {
                        log.Information("A prune ran since the index of {Repo} was loaded; loading it again", Location);
                        await LoadIndexAsync(ct).ConfigureAwait(false);
                    }
                }
                catch { await held.DisposeAsync().ConfigureAwait(false); throw; }
                _shared = held;
            }
            _sharedHolds++;
            return new SharedLockLease(this, _shared);
        }
        finally { _lockGate.Release(); }
    }

    /// <summary>The in-memory index may describe packs a prune deleted: the next <see cref="LockSharedAsync"/> loads it again.</summary>
    public void InvalidateIndex() => _indexGeneration = "";

    internal async ValueTask ReleaseSharedAsync()
    {
        await _lockGate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (--_sharedHolds > 0 || _shared is null) return;
            var held = _shared;
            _shared = null;
            await held.DisposeAsync().ConfigureAwait(false);
        }
        finally { _lockGate.Release(); }
    }

    internal void AddPackIndex(PackIndex p)
    {
        int ord = Index.AddPack(p.Pack, p.PackLength);
        foreach (var e in p.Entries)
            Index.Set(e.Id, new BlobLocation(ord, e.Offset, e.StoredLength, e.RawLength, e.Type, e.Compression, e.StoredChecksum));
    }

    /// <summary>
    /// Reads a blob into <paramref name="destination"/> (exactly its raw length) and verifies its stored
    /// checksum and its SHA-256 against <paramref name="id"/>. <paramref name="scratch"/> must hold the stored bytes.
    /// </summary>
    public async ValueTask ReadBlobAsync(ChunkId id, BlobLocation loc, Memory<byte> destination, Memory<byte> scratch, CancellationToken ct = default)
    {
        if (loc.IsPending) throw new InvalidOperationException($"blob {id} is not durable yet");
        string key = _packKeys.GetOrAdd(loc.Pack, static (ord, index) => PackKey(index.PackAt(ord).Id), Index);
        if (destination.Length != loc.RawLength || scratch.Length < loc.StoredLength)
            ThrowHelper.ThrowBufferTooSmall(nameof(destination));
        Memory<byte> stored = loc.Compression == BlobCompression.None ? destination : scratch[..loc.StoredLength];
        try
        {
            await Backend.ReadExactlyAtAsync(key, loc.Offset, stored, ct).ConfigureAwait(false);
        }
        catch (ObjectNotFoundException)
        {
            throw new CorruptDataException($"pack {key}", $"missing (it holds blob {id})");
        }
        catch (StorageException e) when (!e.Transient)
        {
            throw new CorruptDataException($"pack {key}", e.Message);
        }
        VerifyBlob(id, loc, stored.Span, destination.Span, key);
    }

    /// <summary>The object key of the pack with index ordinal <paramref name="pack"/>.</summary>
    public string PackKeyAt(int pack) => _packKeys.GetOrAdd(pack, static (ord, index) => PackKey(index.PackAt(ord).Id), Index);

    /// <summary>
    /// Reads the stored bytes of <paramref name="range"/> into <paramref name="buffer"/> (exactly its length).
    /// Nothing is verified here: each blob is checked by <see cref="VerifyBlob"/> when it is taken out.
    /// A missing or short pack is <see cref="CorruptDataException"/>, as in <see cref="ReadBlobAsync"/>.
    /// </summary>
    public async ValueTask ReadRangeAsync(PackRange range, Memory<byte> buffer, CancellationToken ct = default)
    {
        string key = PackKeyAt(range.Pack);
        if (buffer.Length != range.Length) ThrowHelper.ThrowBufferTooSmall(nameof(buffer));
        try
        {
            await Backend.ReadExactlyAtAsync(key, range.Offset, buffer, ct).ConfigureAwait(false);
        }
        catch (ObjectNotFoundException)
        {
            throw new CorruptDataException($"pack {key}", $"missing (it holds blob {range.Blobs[0].Id})");
        }
        catch (StorageException e) when (!e.Transient)
        {
            throw new CorruptDataException($"pack {key}", e.Message);
        }
    }

    /// <summary>
    /// Takes one blob out of a range read by <see cref="ReadRangeAsync"/> and verifies it. Returns its content:
    /// a slice of <paramref name="range"/> for an uncompressed blob (no copy), else <paramref name="scratch"/>
    /// decoded (it must hold the raw length).
    /// </summary>
    public ReadOnlyMemory<byte> TakeBlob(PackRange pr, ReadOnlyMemory<byte> range, in BlobRead blob, Memory<byte> scratch)
    {
        var stored = pr.Slice(range, blob);
        var loc = blob.Location;
        string key = PackKeyAt(pr.Pack);
        if (loc.Compression == BlobCompression.None)
        {
            if (loc.StoredLength != loc.RawLength)
                ThrowHelper.ThrowCorrupt($"blob {blob.Id} in {key}", $"stored length {loc.StoredLength} differs from raw length {loc.RawLength} without compression");
            if (Checksum.Compute(stored.Span) != loc.StoredChecksum)
                ThrowHelper.ThrowCorrupt($"blob {blob.Id} in {key}", "stored bytes do not match their checksum");
            if (ChunkId.Compute(stored.Span) != blob.Id)
                ThrowHelper.ThrowCorrupt($"blob {blob.Id} in {key}", "content does not match its SHA-256");
            return stored;
        }
        var destination = scratch[..loc.RawLength];
        VerifyBlob(blob.Id, loc, stored.Span, destination.Span, key);
        return destination;
    }

    /// <summary>Checks stored bytes, decodes them into <paramref name="destination"/> and checks the content hash.</summary>
    public static void VerifyBlob(ChunkId id, BlobLocation loc, ReadOnlySpan<byte> stored, Span<byte> destination, string packKey)
    {
        if (Checksum.Compute(stored) != loc.StoredChecksum)
            ThrowHelper.ThrowCorrupt($"blob {id} in {packKey}", "stored bytes do not match their checksum");
        if (loc.Compression == BlobCompression.Lz4)
            Lz4Block.Decode(stored, destination, $"blob {id} in {packKey}");
        if (ChunkId.Compute(destination) != id)
            ThrowHelper.ThrowCorrupt($"blob {id} in {packKey}", "content does not match its SHA-256");
    }

    /// <summary>Reads a whole tree node (small), verified.</summary>
    public async ValueTask<byte[]> ReadTreeNodeAsync(ChunkId id, CancellationToken ct = default)
    {
        if (!Index.TryGet(id, out var loc) || loc.IsPending)
            throw new CorruptDataException($"tree node {id}", "not found in the index (missing data)");
        var node = new byte[loc.RawLength];
        var scratch = ArrayPool<byte>.Shared.Rent(loc.StoredLength);
        try { await ReadBlobAsync(id, loc, node, scratch, ct).ConfigureAwait(false); }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
        return node;
    }

    /// <summary>All recovery points, oldest first. Corrupt manifests are reported through <paramref name="onCorrupt"/> (or thrown when null).</summary>
    public async Task<List<Manifest>> ListSnapshotsAsync(Action<string, Exception>? onCorrupt = null, CancellationToken ct = default)
    {
        var list = new List<Manifest>();
        await foreach (var o in Backend.ListAsync(SnapshotPrefix, ct).ConfigureAwait(false))
        {
            if (!o.Key.EndsWith(".snap", StringComparison.Ordinal)) continue;
            try
            {
                var bytes = await Backend.ReadAllAsync(o.Key, ct).ConfigureAwait(false);
                list.Add(Manifest.Deserialize(bytes, $"manifest {o.Key}"));
            }
            catch (Exception e) when (onCorrupt is not null && e is CorruptDataException or UnsupportedFormatException)
            {
                onCorrupt(o.Key, e);
            }
        }
        list.Sort((a, b) => a.Time != b.Time ? a.Time.CompareTo(b.Time) : string.CompareOrdinal(a.Id, b.Id));
        return list;
    }

    /// <summary>The manifest of recovery point <paramref name="id"/>, or null when it does not exist or cannot be read.</summary>
    public async Task<Manifest?> TryReadSnapshotAsync(string id, CancellationToken ct = default)
    {
        string key = SnapshotKey(id);
        if (await Backend.StatAsync(key, ct).ConfigureAwait(false) is null) return null;
        try { return Manifest.Deserialize(await Backend.ReadAllAsync(key, ct).ConfigureAwait(false), $"manifest {key}"); }
        catch (Exception e) when (e is CorruptDataException or UnsupportedFormatException or ObjectNotFoundException) { return null; }
    }

    /// <summary>Finds a recovery point by "latest", a full id or a unique prefix of at least 4 characters.</summary>
    public async Task<Manifest> FindSnapshotAsync(string idOrLatest, CancellationToken ct = default)
    {
        // An unreadable manifest must not block restoring the others; it only makes "latest" ambiguous.
        var unreadable = new List<string>();
        var all = await ListSnapshotsAsync((key, e) => unreadable.Add(e.Message), ct).ConfigureAwait(false);
        if (idOrLatest == "latest")
        {
            if (unreadable.Count > 0)
                throw new CorruptDataException("latest recovery point", $"cannot be determined: {unreadable[0]}; give an id (see 'blockrepl snapshots')");
            return all.Count > 0 ? all[^1] : throw new NotFoundException($"repository {Location} has no recovery points yet");
        }
        if (idOrLatest.Length < 4)
            throw new NotFoundException($"recovery point '{idOrLatest}': give at least 4 characters of its id, or 'latest'");
        var matches = all.Where(m => m.Id.StartsWith(idOrLatest, StringComparison.OrdinalIgnoreCase)).ToList();
        return matches.Count switch
        {
            1 => matches[0],
            0 when unreadable.Count > 0 => throw new CorruptDataException($"recovery point '{idOrLatest}'", $"not found among the readable ones; {unreadable.Count} manifest(s) are unreadable, first: {unreadable[0]}"),
            0 => throw new NotFoundException($"recovery point '{idOrLatest}' not found in {Location} (see 'blockrepl snapshots')"),
            _ => throw new NotFoundException($"recovery point prefix '{idOrLatest}' is ambiguous ({matches.Count} match); give more characters"),
        };
    }

    public async ValueTask DisposeAsync()
    {
        if (_shared is not null) { await _shared.DisposeAsync().ConfigureAwait(false); _shared = null; }
        await Backend.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>One hold on a repository's shared lock; see <see cref="Repo.LockSharedAsync"/>.</summary>
public sealed class SharedLockLease : IAsyncDisposable
{
    private Repo? _repo;

    internal SharedLockLease(Repo repo, RepoLock held)
    {
        _repo = repo;
        Lost = held.Lost;
    }

    /// <summary>Cancelled when the lock could not be refreshed in time: the holder must stop before writing a manifest.</summary>
    public CancellationToken Lost { get; }

    public ValueTask DisposeAsync()
    {
        var repo = Interlocked.Exchange(ref _repo, null);
        return repo is null ? ValueTask.CompletedTask : repo.ReleaseSharedAsync();
    }
}
