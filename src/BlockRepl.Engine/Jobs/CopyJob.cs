using System.Buffers;
using System.Diagnostics;
using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;
using BlockRepl.Storage;
using Serilog;

namespace BlockRepl.Engine.Jobs;

/// <summary>What a <see cref="CopyJob"/> did.</summary>
public sealed record CopyResult(
    IReadOnlyList<string> Copied,
    IReadOnlyList<string> Skipped,
    long BlobsCopied,
    long TreeNodesCopied,
    long RawBytes,
    long StoredBytes,
    long ObjectsWritten,
    double Seconds);

/// <summary>
/// Copies recovery points from one repository to another (any backends), moving only the blobs the
/// destination lacks. Per recovery point: walk its tree in the source, copy every data chunk and tree
/// node missing from the destination into new packs, wait until they are durable, then write the
/// manifest unchanged (same id, same bytes) — last, so a crash never leaves a manifest pointing at
/// missing data, and a re-run finds the blobs already there and copies only what is left.
/// </summary>
/// <remarks>
/// Blobs travel as their verified stored bytes: each is read from the source, its checksum and
/// SHA-256 are checked (decoding LZ4 as needed), and the same stored bytes with the same compression
/// go into the destination pack. Re-encoding would produce the same result at a CPU cost.
/// </remarks>
public sealed class CopyJob
{
    /// <summary>Blobs read concurrently (the reads are range GETs on an object store).</summary>
    private const int ReadBatch = 16;

    private readonly Repo _source;
    private readonly Repo _dest;
    private readonly ILogger _log;
    public JobProgress Progress { get; } = new();

    public CopyJob(Repo source, Repo destination, ILogger log)
    {
        _source = source;
        _dest = destination;
        _log = log;
    }

    private sealed class Counters
    {
        public long Blobs, Nodes, Raw;
    }

    /// <summary>
    /// Resolves ids, unique prefixes or "latest" in <paramref name="source"/>; none selects every
    /// recovery point. Call before creating the destination, so a typo creates nothing.
    /// </summary>
    public static async Task<List<Manifest>> SelectAsync(Repo source, IReadOnlyList<string> selection, CancellationToken ct = default)
    {
        if (selection.Count == 0) return await source.ListSnapshotsAsync(null, ct).ConfigureAwait(false);
        var manifests = new List<Manifest>();
        foreach (var s in selection)
        {
            var m = await source.FindSnapshotAsync(s, ct).ConfigureAwait(false);
            if (!manifests.Exists(x => x.Id == m.Id)) manifests.Add(m);
        }
        return manifests;
    }

    /// <summary>Copies those of <paramref name="manifests"/> (from <see cref="SelectAsync"/>) that the destination does not already have.</summary>
    public async Task<CopyResult> RunAsync(IReadOnlyList<Manifest> manifests, CancellationToken ct = default)
    {
        var started = Stopwatch.StartNew();
        if (_source.ChunkSize != _dest.ChunkSize)
            throw new RepositoryException($"cannot copy from {_source.Location} (chunk size {_source.ChunkSize}) to {_dest.Location} (chunk size {_dest.ChunkSize}): chunk sizes differ; copy into a new or empty repository");
        if (_dest.Backend is LocalBackend local) local.CleanupStaleTemp(TimeSpan.FromDays(1));

        Progress.Phase = "listing";
        var present = new HashSet<string>(StringComparer.Ordinal);
        await foreach (var o in _dest.Backend.ListAsync(Repo.SnapshotPrefix, ct).ConfigureAwait(false)) present.Add(o.Key);

        var todo = manifests.Where(m => !present.Contains(Repo.SnapshotKey(m.Id))).ToList();
        var skipped = manifests.Where(m => present.Contains(Repo.SnapshotKey(m.Id))).Select(m => m.Id).ToList();
        Progress.TotalBytes = todo.Sum(m => m.Size);

        var copied = new List<string>();
        var c = new Counters();
        long manifestBytes = 0, manifestPuts = 0;
        var packs = new PackWriter(_dest, ct);
        try
        {
            foreach (var m in todo)
            {
                if (m.ChunkSize != _dest.ChunkSize)
                    throw new RepositoryException($"recovery point {m.Id} has chunk size {m.ChunkSize}, {_dest.Location} uses {_dest.ChunkSize}");
                Progress.Phase = $"copying {m.Id[..8]}";
                await CopyTreeAsync(m, packs, c, ct).ConfigureAwait(false);
                await packs.FlushAsync().ConfigureAwait(false);

                // The manifest goes over byte for byte (its checksum and stats included), only after
                // every blob it references is durable in the destination.
                byte[] body = await _source.Backend.ReadAllAsync(Repo.SnapshotKey(m.Id), ct).ConfigureAwait(false);
                Manifest.Deserialize(body, $"manifest {Repo.SnapshotKey(m.Id)} in {_source.Location}");
                try
                {
                    await _dest.Backend.PutAsync(Repo.SnapshotKey(m.Id), body, ct).ConfigureAwait(false);
                    manifestBytes += body.Length;
                    manifestPuts++;
                    copied.Add(m.Id);
                    _log.Debug("copied recovery point {Id}", m.Id);
                }
                catch (ObjectExistsException)
                {
                    // Another copy got there first; the manifest is write-once, so it is the same one.
                    skipped.Add(m.Id);
                }
            }
        }
        catch
        {
            _dest.Index.DropPending();
            throw;
        }
        finally
        {
            await packs.DisposeAsync().ConfigureAwait(false);
        }
        Progress.Phase = "done";
        return new CopyResult(copied, skipped, c.Blobs, c.Nodes, c.Raw, packs.StoredBytes + manifestBytes,
            packs.ObjectsWritten + manifestPuts, started.Elapsed.TotalSeconds);
    }

    private async Task CopyTreeAsync(Manifest m, PackWriter packs, Counters c, CancellationToken ct)
    {
        long done = Progress.DoneBytes;
        var nodes = new List<ChunkId>();
        var batch = new List<ChunkId>(ReadBatch);
        await TreeWalker.WalkAsync(_source, m, async (first, ids, count) =>
        {
            for (int i = 0; i < count; i++)
            {
                if (ids[i].IsZero || !_dest.Index.TryClaim(ids[i], BlobType.Data)) continue;
                batch.Add(ids[i]);
                if (batch.Count == ReadBatch) await CopyBlobsAsync(batch, BlobType.Data, packs, c, ct).ConfigureAwait(false);
            }
            await CopyBlobsAsync(batch, BlobType.Data, packs, c, ct).ConfigureAwait(false);
            Progress.DoneBytes = done + Math.Min((first + count) * (long)m.ChunkSize, m.Size);
        }, (first, count) =>
        {
            Progress.DoneBytes = done + Math.Min((first + count) * (long)m.ChunkSize, m.Size);
            return Task.CompletedTask;
        }, nodes.Add, ct).ConfigureAwait(false);

        foreach (var id in nodes)
        {
            if (!_dest.Index.TryClaim(id, BlobType.Tree)) continue;
            batch.Add(id);
            if (batch.Count == ReadBatch) await CopyBlobsAsync(batch, BlobType.Tree, packs, c, ct).ConfigureAwait(false);
        }
        await CopyBlobsAsync(batch, BlobType.Tree, packs, c, ct).ConfigureAwait(false);
        Progress.DoneBytes = done + m.Size;
    }

    /// <summary>Reads <paramref name="ids"/> from the source concurrently (verified), appends them to the destination packs in order, clears the list.</summary>
    private async Task CopyBlobsAsync(List<ChunkId> ids, BlobType type, PackWriter packs, Counters c, CancellationToken ct)
    {
        if (ids.Count == 0) return;
        var locs = new BlobLocation[ids.Count];
        var raw = new byte[ids.Count][];
        var scratch = new byte[ids.Count][];
        try
        {
            for (int i = 0; i < ids.Count; i++)
            {
                if (!_source.Index.TryGet(ids[i], out locs[i]) || locs[i].IsPending)
                    throw new CorruptDataException($"{(type == BlobType.Tree ? "tree node" : "chunk")} {ids[i]}", $"missing from the source repository {_source.Location} (run 'blockrepl verify' there)");
                raw[i] = ArrayPool<byte>.Shared.Rent(locs[i].RawLength);
                scratch[i] = ArrayPool<byte>.Shared.Rent(locs[i].StoredLength);
            }
            await Parallel.ForAsync(0, ids.Count, new ParallelOptions { MaxDegreeOfParallelism = ReadBatch, CancellationToken = ct }, async (i, t) =>
                await _source.ReadBlobAsync(ids[i], locs[i], raw[i].AsMemory(0, locs[i].RawLength), scratch[i], t).ConfigureAwait(false)).ConfigureAwait(false);
            for (int i = 0; i < ids.Count; i++)
            {
                var loc = locs[i];
                // ReadBlobAsync leaves the verified stored bytes in scratch (LZ4) or the destination (raw).
                ReadOnlySpan<byte> stored = loc.Compression == BlobCompression.None
                    ? raw[i].AsSpan(0, loc.RawLength)
                    : scratch[i].AsSpan(0, loc.StoredLength);
                packs.Add(type, ids[i], stored, loc.RawLength, loc.Compression);
                if (type == BlobType.Tree) c.Nodes++; else c.Blobs++;
                c.Raw += loc.RawLength;
                Progress.AddStored(loc.StoredLength);
            }
        }
        finally
        {
            foreach (var b in raw) if (b is not null) ArrayPool<byte>.Shared.Return(b);
            foreach (var b in scratch) if (b is not null) ArrayPool<byte>.Shared.Return(b);
            ids.Clear();
        }
    }
}
