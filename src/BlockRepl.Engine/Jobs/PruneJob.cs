using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;
using BlockRepl.Storage;
using Serilog;

namespace BlockRepl.Engine.Jobs;

/// <summary>What <see cref="PruneJob"/> should do.</summary>
public sealed record PruneOptions
{
    /// <summary>A pack whose dead bytes exceed this fraction of its blob bytes is repacked (0.25 = 25 %).</summary>
    public double MaxRepackWaste { get; init; } = 0.25;

    /// <summary>Only work out and report what would be deleted and repacked; nothing is written.</summary>
    public bool DryRun { get; init; }

    public LockOptions Locks { get; init; } = LockOptions.Default;
}

/// <summary>What a <see cref="PruneJob"/> did, or would do with <see cref="PruneOptions.DryRun"/>.</summary>
public sealed record PruneResult
{
    public bool DryRun { get; init; }
    public int Snapshots { get; init; }
    public int PacksBefore { get; init; }
    public long BytesBefore { get; init; }
    public long LiveBlobs { get; init; }
    /// <summary>Packs deleted because no recovery point uses any blob in them (including packs no index file names).</summary>
    public IReadOnlyList<string> DeletedPacks { get; init; } = [];
    /// <summary>Packs whose live blobs were copied into new packs, then deleted.</summary>
    public IReadOnlyList<string> RepackedPacks { get; init; } = [];
    public IReadOnlyList<string> DeletedIndexFiles { get; init; } = [];
    public int IndexFilesWritten { get; init; }
    public long PacksWritten { get; init; }
    public long BlobsRepacked { get; init; }
    /// <summary>Bytes of the packs and index files deleted.</summary>
    public long BytesDeleted { get; init; }
    /// <summary>Bytes of the new packs and index files (for a dry run: the live bytes the repack would copy).</summary>
    public long BytesWritten { get; init; }
    public long BytesReclaimed => BytesDeleted - BytesWritten;
    public IReadOnlyList<string> StaleLocksRemoved { get; init; } = [];
    public double Seconds { get; init; }
}

/// <summary>
/// restic-style prune of a format-v1 repository (docs/format.md §9), under the exclusive lock. Marks every blob
/// reachable from every manifest (tree nodes and data chunks), then deletes packs with no live blob, repacks packs
/// whose dead fraction exceeds <see cref="PruneOptions.MaxRepackWaste"/> (live blobs copied, verified against their
/// SHA-256, into new packs whose index files are committed first), rewrites index files that describe both kept and
/// removed packs, deletes the index files that describe only removed packs, and only then deletes the packs.
/// At every instant each blob a manifest needs is named by an index file and present in a pack, so a crash anywhere
/// leaves every recovery point restorable; the next prune finishes the job.
/// </summary>
public sealed class PruneJob(Repo repo, PruneOptions options, ILogger log)
{
    public JobProgress Progress { get; } = new();

    private sealed class PackInfo(PackId id, long length, BlobEntry[] entries)
    {
        public PackId Id { get; } = id;
        public long Length { get; } = length;
        public BlobEntry[] Entries { get; } = entries;
        public List<string> IndexFiles { get; } = [];
        public bool Present { get; set; }
        public int Live { get; set; }
        public long LiveBytes { get; set; }
        public long BlobBytes { get; set; }
        public string Key => Repo.PackKey(Id);
    }

    public async Task<PruneResult> RunAsync(CancellationToken ct = default)
    {
        var started = Stopwatch.StartNew();
        var staleRemoved = new List<LockEntry>();
        if (options.DryRun) return await PlanAndRunAsync(null, staleRemoved, started, ct).ConfigureAwait(false);
        Progress.Phase = "locking";
        await using var held = await RepoLock.AcquireExclusiveAsync(repo.Backend, options.Locks, log, staleRemoved, ct).ConfigureAwait(false);
        using var lockedCt = CancellationTokenSource.CreateLinkedTokenSource(ct, held.Lost);
        return await PlanAndRunAsync(held, staleRemoved, started, lockedCt.Token).ConfigureAwait(false);
    }

    private async Task<PruneResult> PlanAndRunAsync(RepoLock? held, List<LockEntry> staleRemoved, Stopwatch started, CancellationToken ct)
    {
        var backend = repo.Backend;

        // 1. What is stored: packs, index files and what each index file says.
        Progress.Phase = "listing";
        var packsOnStore = new Dictionary<string, long>(StringComparer.Ordinal);
        await foreach (var o in backend.ListAsync(Repo.DataPrefix, ct).ConfigureAwait(false))
            if (o.Key.EndsWith(".pack", StringComparison.Ordinal)) packsOnStore[o.Key] = o.Length;
        var indexSizes = new Dictionary<string, long>(StringComparer.Ordinal);
        await foreach (var o in backend.ListAsync(Repo.IndexPrefix, ct).ConfigureAwait(false))
            if (o.Key.EndsWith(".idx", StringComparison.Ordinal)) indexSizes[o.Key] = o.Length;
        var indexFiles = new Dictionary<string, List<PackIndex>>(StringComparer.Ordinal);
        await Parallel.ForEachAsync(indexSizes.Keys.ToList(), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct }, async (key, c) =>
        {
            // A corrupt index file stops prune: what it describes cannot be judged.
            var packs = IndexFile.Deserialize(await backend.ReadAllAsync(key, c).ConfigureAwait(false), $"index file {key}");
            lock (indexFiles) indexFiles[key] = packs;
        }).ConfigureAwait(false);
        var packs = new Dictionary<PackId, PackInfo>();
        foreach (var (key, list) in indexFiles.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            foreach (var p in list)
            {
                if (!packs.TryGetValue(p.Pack, out var info))
                {
                    packs[p.Pack] = info = new PackInfo(p.Pack, p.PackLength, p.Entries);
                    info.Present = packsOnStore.TryGetValue(info.Key, out long len) && len == p.PackLength;
                    if (info.Present) repo.AddPackIndex(p);
                }
                info.IndexFiles.Add(key);
            }

        // 2. Mark every blob that a manifest reaches. An unreadable manifest or tree node stops prune before it changes anything.
        Progress.Phase = "marking";
        var manifests = await repo.ListSnapshotsAsync(null, ct).ConfigureAwait(false);
        var live = new HashSet<ChunkId>();
        Progress.TotalBytes = manifests.Count;
        foreach (var m in manifests)
        {
            try { await MarkAsync(m, live, ct).ConfigureAwait(false); }
            catch (CorruptDataException e)
            {
                throw new CorruptDataException($"recovery point {m.Id}", $"{e.Message}; prune changed nothing (run 'blockrepl verify')");
            }
            Progress.DoneBytes++;
        }

        // 3. Each live blob is kept in one pack (the fullest first, so duplicates left by racing writers count as dead).
        foreach (var p in packs.Values)
        {
            p.BlobBytes = p.Entries.Sum(e => (long)e.StoredLength);
            if (p.Present) p.Live = p.Entries.Count(e => live.Contains(e.Id));
        }
        var claimed = new Dictionary<ChunkId, PackId>();
        foreach (var p in packs.Values.Where(p => p.Present).OrderByDescending(p => p.BlobBytes == 0 ? 0 : (double)p.Live / p.Entries.Length).ThenBy(p => p.Key, StringComparer.Ordinal))
        {
            p.Live = 0;
            foreach (var e in p.Entries)
                if (live.Contains(e.Id) && claimed.TryAdd(e.Id, p.Id)) { p.Live++; p.LiveBytes += e.StoredLength; }
        }
        if (claimed.Count != live.Count)
        {
            var missing = live.First(id => !claimed.ContainsKey(id));
            throw new CorruptDataException($"blob {missing}", $"is used by a recovery point but no pack holds it ({live.Count - claimed.Count} such blob(s)); prune changed nothing (run 'blockrepl verify')");
        }

        var delete = packs.Values.Where(p => p.Present && p.Live == 0).ToList();
        var repack = packs.Values.Where(p => p.Present && p.Live > 0 && p.BlobBytes > 0
            && (double)(p.BlobBytes - p.LiveBytes) / p.BlobBytes > options.MaxRepackWaste).ToList();
        var removed = new HashSet<PackId>(delete.Concat(repack).Select(p => p.Id));
        // Packs that no index file names (left by an interrupted backup or prune): nothing can use them.
        var indexedKeys = new HashSet<string>(packs.Values.Select(p => p.Key), StringComparer.Ordinal);
        var unindexed = packsOnStore.Keys.Where(k => !indexedKeys.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();

        // Index files: untouched when every pack they name stays; deleted when none does; rewritten (the kept
        // packs into a new file, then the old one deleted) when they name both. Packs that are missing are dropped.
        bool Stays(PackId id) => packs[id].Present && !removed.Contains(id);
        var deleteIndex = new List<string>();
        var rewrite = new List<PackIndex>();
        var describedByUntouched = new HashSet<PackId>();
        foreach (var (key, list) in indexFiles)
            if (list.All(p => Stays(p.Pack))) foreach (var p in list) describedByUntouched.Add(p.Pack);
        foreach (var (key, list) in indexFiles.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (list.All(p => Stays(p.Pack))) continue;
            deleteIndex.Add(key);
            foreach (var p in list)
                if (Stays(p.Pack) && describedByUntouched.Add(p.Pack)) rewrite.Add(p);
        }

        long repackLive = repack.Sum(p => p.LiveBytes);
        long bytesDeleted = delete.Concat(repack).Sum(p => p.Length) + unindexed.Sum(k => packsOnStore[k]) + deleteIndex.Sum(k => indexSizes[k]);
        var result = new PruneResult
        {
            DryRun = options.DryRun,
            Snapshots = manifests.Count,
            PacksBefore = packsOnStore.Count,
            BytesBefore = packsOnStore.Values.Sum() + indexSizes.Values.Sum(),
            LiveBlobs = live.Count,
            DeletedPacks = [.. delete.Select(p => p.Key).OrderBy(k => k, StringComparer.Ordinal), .. unindexed],
            RepackedPacks = [.. repack.Select(p => p.Key).OrderBy(k => k, StringComparer.Ordinal)],
            DeletedIndexFiles = deleteIndex,
            BytesDeleted = bytesDeleted,
            BytesWritten = repackLive,
            StaleLocksRemoved = [.. staleRemoved.Select(l => l.Describe())],
        };
        bool nothing = delete.Count == 0 && repack.Count == 0 && unindexed.Count == 0 && deleteIndex.Count == 0;
        if (options.DryRun || nothing || held is null)
        {
            Progress.Phase = "done";
            return result with { BytesWritten = options.DryRun ? repackLive : 0, BytesDeleted = options.DryRun ? bytesDeleted : 0, Seconds = started.Elapsed.TotalSeconds };
        }

        // 4. From here on the repository changes. Writers that loaded their index before now must load it again.
        await held.WritePruneMarkAsync(ct).ConfigureAwait(false);
        CrashPoint.Hit("prune-marked");

        // 5. Repack: live blobs of the repacked packs into new packs; their index files are durable before anything is deleted.
        Progress.Phase = "repacking";
        Progress.TotalBytes = repackLive;
        Progress.DoneBytes = 0;
        var writer = new PackWriter(repo, ct);
        long blobsRepacked;
        try
        {
            blobsRepacked = await RepackAsync(repack, claimed, writer, ct).ConfigureAwait(false);
            await writer.FlushAsync().ConfigureAwait(false);
        }
        finally { await writer.DisposeAsync().ConfigureAwait(false); }
        CrashPoint.Hit("prune-repacked");

        // 6. Index files: the rewritten ones first, then the obsolete ones go.
        Progress.Phase = "index";
        long indexBytes = 0;
        if (rewrite.Count > 0)
        {
            var bytes = IndexFile.Serialize(rewrite);
            await backend.PutAsync(Repo.IndexKey(PackId.NewRandom()), bytes, ct).ConfigureAwait(false);
            indexBytes = bytes.Length;
        }
        CrashPoint.Hit("prune-index-written");
        foreach (var key in deleteIndex)
        {
            await backend.DeleteAsync(key, ct).ConfigureAwait(false);
            CrashPoint.Hit("prune-index-deleting");
        }

        // 7. Only now the packs: no index file names them any more.
        Progress.Phase = "deleting";
        foreach (var key in result.DeletedPacks.Concat(result.RepackedPacks))
        {
            await backend.DeleteAsync(key, ct).ConfigureAwait(false);
            CrashPoint.Hit("prune-packs-deleting");
        }
        if (backend is LocalBackend local) local.CleanupStaleTemp(TimeSpan.FromDays(1));
        repo.InvalidateIndex();
        Progress.Phase = "done";
        log.Debug("prune: deleted {Deleted} pack(s), repacked {Repacked}, wrote {Written} pack(s)", result.DeletedPacks.Count, repack.Count, writer.PacksWritten);
        return result with
        {
            PacksWritten = writer.PacksWritten,
            BlobsRepacked = blobsRepacked,
            IndexFilesWritten = (int)writer.PacksWritten + (rewrite.Count > 0 ? 1 : 0),
            BytesWritten = writer.StoredBytes + indexBytes,
            Seconds = started.Elapsed.TotalSeconds,
        };
    }

    /// <summary>Adds every tree node and data chunk of <paramref name="m"/> to <paramref name="live"/>, level by level; a subtree already marked is not read again.</summary>
    private async Task MarkAsync(Manifest m, HashSet<ChunkId> live, CancellationToken ct)
    {
        var root = ChunkId.Parse(m.Root);
        if (root.IsZero || !live.Add(root)) return;
        var current = new List<ChunkId> { root };
        var children = new ChunkId[Math.Max(m.LeafFanout, m.NodeFanout)];
        for (int level = m.TreeLevels - 1; level >= 0 && current.Count > 0; level--)
        {
            var next = new List<ChunkId>();
            foreach (var batch in current.Chunk(256))
            {
                var prefetched = await TreeWalker.PrefetchAsync(repo, batch, ct).ConfigureAwait(false);
                foreach (var id in batch)
                {
                    var bytes = prefetched.TryGetValue(id, out var b) ? b : await repo.ReadTreeNodeAsync(id, ct).ConfigureAwait(false);
                    string what = $"tree node {id}";
                    int fanout = level == 0 ? m.LeafFanout : m.NodeFanout;
                    int actual = TreeNode.Decode(bytes, children.AsSpan(0, fanout), what);
                    if (actual != level) ThrowHelper.ThrowCorrupt(what, $"level {actual}, expected {level}");
                    foreach (var child in children.AsSpan(0, fanout))
                        if (!child.IsZero && live.Add(child) && level > 0) next.Add(child);
                }
            }
            current = next;
        }
    }

    /// <summary>Copies the claimed live blobs of <paramref name="repack"/> into <paramref name="writer"/>, in coalesced ranged reads, each verified.</summary>
    private async Task<long> RepackAsync(List<PackInfo> repack, Dictionary<ChunkId, PackId> claimed, PackWriter writer, CancellationToken ct)
    {
        if (repack.Count == 0) return 0;
        var reads = new List<BlobRead>();
        foreach (var p in repack)
        {
            int ord = repo.Index.AddPack(p.Id, p.Length);
            foreach (var e in p.Entries)
                // Each live blob is copied once, from the pack that holds it for this prune.
                if (claimed.TryGetValue(e.Id, out var owner) && owner == p.Id)
                    reads.Add(new BlobRead(e.Id, new BlobLocation(ord, e.Offset, e.StoredLength, e.RawLength, e.Type, e.Compression, e.StoredChecksum), 0));
        }
        long copied = 0;
        var scratch = ArrayPool<byte>.Shared.Rent(Math.Max(repo.ChunkSize, 64 << 10));
        try
        {
            foreach (var range in PackRanges.Plan(CollectionsMarshal.AsSpan(reads), PackRangeOptions.For(repo.Backend)))
            {
                var buffer = ArrayPool<byte>.Shared.Rent(range.Length);
                try
                {
                    var bytes = buffer.AsMemory(0, range.Length);
                    await repo.ReadRangeAsync(range, bytes, ct).ConfigureAwait(false);
                    foreach (var blob in range.Blobs)
                    {
                        if (blob.Location.RawLength > scratch.Length)
                        {
                            ArrayPool<byte>.Shared.Return(scratch);
                            scratch = ArrayPool<byte>.Shared.Rent(blob.Location.RawLength);
                        }
                        repo.TakeBlob(range, bytes, blob, scratch);   // verifies checksum and SHA-256
                        var loc = blob.Location;
                        writer.Add(loc.Type, blob.Id, range.Slice(bytes, blob).Span, loc.RawLength, loc.Compression);
                        Progress.DoneBytes += loc.StoredLength;
                        Progress.AddStored(loc.StoredLength);
                        copied++;
                    }
                }
                finally { ArrayPool<byte>.Shared.Return(buffer); }
            }
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
        return copied;
    }
}

/// <summary>
/// Crash points for tests: with <c>BLOCKREPL_TEST_CRASH_AT=NAME</c> the process kills itself with SIGKILL when it
/// reaches point NAME, exactly like a kill -9 there (no cleanup, no flush). Unset, a point costs one comparison.
/// </summary>
internal static class CrashPoint
{
    private static readonly string? s_at = Environment.GetEnvironmentVariable("BLOCKREPL_TEST_CRASH_AT");

    public static void Hit(string name)
    {
        if (s_at is null || !string.Equals(s_at, name, StringComparison.Ordinal)) return;
        Console.Error.WriteLine($"blockrepl: test crash point {name}: killing this process");
        Console.Error.Flush();
        Process.GetCurrentProcess().Kill();
        Thread.Sleep(Timeout.Infinite);
    }
}
