using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;
using BlockRepl.Storage;

namespace BlockRepl.Engine.Repository;

/// <summary>
/// Appends blobs to pack files of about <see cref="RepoConfig.PackTargetSize"/> and publishes each pack
/// then its index file. Single-threaded (the packer thread of a job owns it). Finished packs are
/// committed in the background while the next one fills, up to <see cref="MaxPendingCommits"/> at a time
/// (parallel uploads to an object store; bounded work and spool space in flight).
/// Blobs become visible in <see cref="Repo.Index"/> only once their pack and index file are durable.
/// </summary>
public sealed class PackWriter : IAsyncDisposable
{
    private readonly Repo _repo;
    private readonly CancellationToken _ct;
    private IObjectUpload? _upload;
    private PackId _packId;
    private long _position;
    private readonly List<BlobEntry> _entries = [];
    /// <summary>Pack commits (uploads) in flight at once.</summary>
    public const int MaxPendingCommits = 4;
    private readonly Queue<Task> _pendingCommits = new();
    private long _storedBytes;
    private long _packsWritten;
    private long _requests;

    public PackWriter(Repo repo, CancellationToken ct)
    {
        _repo = repo;
        _ct = ct;
    }

    /// <summary>Bytes written to packs by this writer (blobs + headers + tables), and index files.</summary>
    public long StoredBytes => Interlocked.Read(ref _storedBytes);
    public long PacksWritten => Interlocked.Read(ref _packsWritten);
    /// <summary>Objects created (packs + index files): the request count an object store would see.</summary>
    public long ObjectsWritten => Interlocked.Read(ref _requests);

    public void Add(BlobType type, in ChunkId id, ReadOnlySpan<byte> stored, int rawLength, BlobCompression compression)
    {
        if (_upload is null) StartPack();
        var entry = new BlobEntry(id, _position, stored.Length, rawLength, type, compression, Checksum.Compute(stored));
        _upload!.Stream.Write(stored);
        _position += stored.Length;
        _entries.Add(entry);
        if (_position >= _repo.Config.PackTargetSize) FinishPack();
    }

    private void StartPack()
    {
        _packId = PackId.NewRandom();
        _upload = _repo.Backend.CreateAsync(Repo.PackKey(_packId), _ct).AsTask().GetAwaiter().GetResult();
        Span<byte> header = stackalloc byte[PackFormat.HeaderSize];
        PackFormat.WriteHeader(header);
        _upload.Stream.Write(header);
        _position = PackFormat.HeaderSize;
        _entries.Clear();
    }

    private void FinishPack()
    {
        if (_upload is null) return;
        var entries = _entries.ToArray();
        var tail = PackFormat.BuildTableAndTrailer(entries, _position);
        _upload.Stream.Write(tail);
        long length = _position + tail.Length;
        var upload = _upload;
        var packId = _packId;
        _upload = null;
        _entries.Clear();
        // Bounded work in flight; a failed commit surfaces at the latest MaxPendingCommits packs later.
        while (_pendingCommits.Count > 0 && (_pendingCommits.Count >= MaxPendingCommits || _pendingCommits.Peek().IsCompleted))
            _pendingCommits.Dequeue().GetAwaiter().GetResult();
        _pendingCommits.Enqueue(Task.Run(() => CommitAsync(upload, packId, length, entries)));
    }

    private async Task CommitAsync(IObjectUpload upload, PackId packId, long length, BlobEntry[] entries)
    {
        await using (upload.ConfigureAwait(false))
            await upload.CommitAsync(_ct).ConfigureAwait(false);
        var index = new PackIndex(packId, length, entries);
        var indexBytes = IndexFile.Serialize([index]);
        await _repo.Backend.PutAsync(Repo.IndexKey(packId), indexBytes, _ct).ConfigureAwait(false);
        _repo.AddPackIndex(index);
        Interlocked.Add(ref _storedBytes, length + indexBytes.Length);
        Interlocked.Increment(ref _packsWritten);
        Interlocked.Add(ref _requests, 2);
    }

    /// <summary>Finishes the open pack and waits until every pack and index file is durable.</summary>
    public async Task FlushAsync()
    {
        FinishPack();
        while (_pendingCommits.Count > 0)
            await _pendingCommits.Dequeue().ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (_upload is not null) { await _upload.DisposeAsync().ConfigureAwait(false); _upload = null; }
        while (_pendingCommits.Count > 0)
        {
            try { await _pendingCommits.Dequeue().ConfigureAwait(false); } catch { /* reported by FlushAsync */ }
        }
    }
}
