using System.Buffers;
using System.Diagnostics;
using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Core.Hashing;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using BlockRepl.Storage;
using Microsoft.Win32.SafeHandles;
using Serilog;

namespace BlockRepl.Engine.Jobs;

public sealed class BackupOptions
{
    public string[] Tags { get; init; } = [];
    /// <summary>Directory for change maps; see <see cref="StateDirectory.Default"/>.</summary>
    public required string StateDir { get; init; }
    /// <summary>Hashing/compression workers behind the single reader (default: one per core).</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;
    /// <summary>Advise the kernel to drop source pages after reading them (a good citizen on a live server).</summary>
    public bool DropSourceCache { get; init; }
    /// <summary>Read the source with O_DIRECT: no page-cache copy or pollution (falls back to buffered reads).</summary>
    public bool DirectIo { get; init; }
    public string Host { get; init; } = Environment.MachineName;
    /// <summary>A second target fed from the same read (an EBS snapshot chain), or null.</summary>
    public IBatchObserver? Observer { get; init; }
    /// <summary>
    /// With no change map for this repository, adopt a pending seed's map once the seed's recovery point is in it
    /// (docs/seed.md §5). Off for the seed export itself.
    /// </summary>
    public bool AdoptSeed { get; init; } = true;
}

/// <param name="SeedNote">A seed was pending for this source: that its map was adopted, or why not; otherwise null.</param>
public sealed record BackupResult(Manifest Manifest, string? RescanReason, long PacksWritten, long ObjectsWritten, double CpuSeconds, string? SeedNote = null);

/// <summary>
/// Backs up one volume: read → zero check → XXH3-128 → changed? → SHA-256 → dedup → LZ4 → pack → store.
/// One sequential reader thread, <see cref="BackupOptions.Workers"/> hashing/compressing workers, one packer
/// thread; bounded queues between them give backpressure and bounded memory whatever the volume size.
/// </summary>
public sealed class BackupJob
{
    /// <summary>Read unit: four 512 KiB EBS blocks.</summary>
    public const int BatchSize = SourceReader.BatchSize;

    private readonly Repo _repo;
    private readonly BackupOptions _options;
    private readonly ILogger _log;
    public JobProgress Progress { get; } = new();

    public BackupJob(Repo repo, BackupOptions options, ILogger log)
    {
        _repo = repo;
        _options = options;
        _log = log;
    }

    private readonly record struct PackItem(ChunkId Id, byte[] Buffer, int Length, int RawLength, BlobCompression Compression);

    private sealed class Counters
    {
        public long Zero, Holes, Changed, ChangedChunks, New, NewChunks, ChangedBlocks;
    }

    public async Task<BackupResult> RunAsync(IBlockSource source, CancellationToken ct = default)
    {
        var started = Stopwatch.StartNew();
        var cpuStart = Process.GetCurrentProcess().TotalProcessorTime;
        int chunkSize = _repo.ChunkSize;
        long size = source.Size;
        long chunkCount = ChunkGeometry.ChunkCount(size, chunkSize);
        Progress.TotalBytes = size;
        Progress.Phase = "preparing";

        if (File.Exists(_options.StateDir))
            throw new UsageException($"state directory '{_options.StateDir}' is a file; give a directory with --state-dir");
        try { Directory.CreateDirectory(_options.StateDir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UsageException($"cannot create state directory '{_options.StateDir}': {e.Message}"); }
        if (_repo.Backend is LocalBackend local) local.CleanupStaleTemp(TimeSpan.FromDays(1));
        string mapName = ChangeMap.FileName(_repo.Config.RepoId, source.SourceKey);
        string mapPath = Path.Combine(_options.StateDir, mapName);
        string workPath = mapPath + ".new";
        string parentMapPath = mapPath + ".parent";

        // One run per source and state dir at a time (FileShare.None is an flock on Linux).
        using var runLock = AcquireLock(mapPath + ".lock", source.Path);

        // The change map names its recovery point: one read of that manifest, not a listing of every recovery
        // point (a daemon cycling every few seconds into S3 would otherwise pay one GET per point per cycle).
        SafeFileHandle? oldMap = ChangeMap.TryOpen(mapPath, chunkSize, size, _repo.Config.RepoId, out var oldHeader, out string? reason);
        string? seedNote = null;
        if (oldMap is null && _options.AdoptSeed && !File.Exists(mapPath))
        {
            var seed = await Seeding.SeedAdoption.TryAdoptAsync(_repo, _options.StateDir, source.SourceKey, size, mapPath, _log, ct).ConfigureAwait(false);
            seedNote = seed.Note;
            if (seed.Adopted) oldMap = ChangeMap.TryOpen(mapPath, chunkSize, size, _repo.Config.RepoId, out oldHeader, out reason);
            else if (seed.Note is not null) reason = $"seed not adopted: {seed.Note}";
        }
        Manifest? parent = null;
        string mode;
        if (oldMap is not null)
        {
            parent = await _repo.TryReadSnapshotAsync(oldHeader!.SnapshotId, ct).ConfigureAwait(false);
            if (parent is null)
            {
                oldMap.Dispose();
                oldMap = null;
                reason = "the change map's recovery point is no longer in the repository";
            }
        }
        _log.Debug("change map checked at {Ms} ms", started.ElapsedMilliseconds);
        if (oldMap is not null)
            mode = "INCREMENTAL";
        else
        {
            var snapshots = await _repo.ListSnapshotsAsync(
                (key, e) => _log.Warning("Ignoring unreadable manifest {Key}: {Error} (run 'blockrepl verify')", key, e.Message), ct).ConfigureAwait(false);
            parent = snapshots.LastOrDefault(s => s.SourceKey == source.SourceKey && s.Host == _options.Host);
            mode = parent is null ? "FULL" : "RESCAN";
            if (parent is not null)
            {
                _log.Information("Rescan of {Source} against recovery point {Parent}: {Reason}", source.Path, parent.Id[..8], reason);
                // Materialise the parent's chunk ids as a map without fingerprints: every chunk is hashed
                // (SHA-256) and compared by id, so nothing is trusted and "changed" stays exact.
                oldMap = await MaterialiseParentAsync(parent, parentMapPath, chunkSize, chunkCount, ct).ConfigureAwait(false);
            }
        }

        // A tracked source (QEMU dirty bitmaps) fixes its point in time now and may say what changed since the
        // checkpoint the maps were taken at; then only that is read. Otherwise everything is read and compared by hash.
        string trackingPath = mapPath + TrackingRecord.Extension;
        string? trackingBase = mode == "INCREMENTAL" ? TrackingRecord.Read(trackingPath, oldHeader!.SnapshotId) : null;
        var observer = _options.Observer;
        string?[] bases = observer is null ? [trackingBase] : [trackingBase, observer.TrackingBase];
        // A repository compares chunks, an EBS chain 512 KiB blocks: changed ranges are rounded to the coarser.
        var plan = await ReadPlan.BeginAsync(source, bases, mode == "INCREMENTAL" && (observer is null || observer.TrackingBase is not null),
            observer is null ? chunkSize : SourceReader.BatchAlignment, ct).ConfigureAwait(false);
        if (mode == "INCREMENTAL" && plan.RescanReason(trackingBase) is { } lost)
        {
            mode = "RESCAN";
            reason = lost;
            _log.Information("Rescan of {Source} against recovery point {Parent}: {Reason}", source.Path, parent!.Id[..8], reason);
        }
        observer?.OnReadPlan(plan);
        _log.Debug("read plan ready at {Ms} ms", started.ElapsedMilliseconds);
        if (plan.ChangedOnly) Progress.TotalBytes = plan.PlannedBytes;

        if (_options.DirectIo && !source.TryEnableDirectIo())
            _log.Warning("{Source}: the filesystem refuses O_DIRECT; reading through the page cache", source.Path);
        var c = new Counters();
        var packs = new PackWriter(_repo, ct);
        // Random, so ids differ in their first characters (users type prefixes); manifests sort by time.
        string id = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        Manifest manifest;
        long objectsWritten;
        try
        {
            // A changed-only read leaves the other chunks as they were: the new map starts as a copy of the old one.
            using (var newMap = plan.ChangedOnly ? ChangeMap.CreateWorkingFrom(mapPath, workPath, chunkCount) : ChangeMap.CreateWorking(workPath, chunkCount))
            {
                Progress.Phase = mode == "FULL" ? "full backup" : mode == "RESCAN" ? "rescan" : "incremental";
                _log.Debug("{Mode} of {Source}: prepared in {Ms} ms{Plan}", mode, source.Path, started.ElapsedMilliseconds,
                    plan.ChangedOnly ? $", {plan.Ranges!.Count} changed ranges ({plan.PlannedBytes} bytes)" : "");
                RunPipeline(source, plan, oldMap, newMap, packs, c, ct);
                _log.Debug("scan finished at {Ms} ms", started.ElapsedMilliseconds);
                if (plan.ChangedOnly) AuditUnchanged(source, plan, newMap, chunkSize, trackingPath);
                oldMap?.Dispose();
                oldMap = null;

                Progress.Phase = "writing block map";
                int levels = ChunkGeometry.TreeLevels(chunkCount);
                var tree = new TreeBuilder(_repo, packs, levels);
                BuildTree(newMap, chunkCount, tree);
                var root = tree.Finish();
                await packs.FlushAsync().ConfigureAwait(false);
                _log.Debug("tree built and packs durable at {Ms} ms", started.ElapsedMilliseconds);

                manifest = new Manifest
                {
                    Id = id,
                    Time = DateTimeOffset.UtcNow,
                    Host = _options.Host,
                    Source = source.Path,
                    SourceKey = source.SourceKey,
                    Size = size,
                    ChunkSize = chunkSize,
                    LeafFanout = ChunkGeometry.LeafFanout,
                    NodeFanout = ChunkGeometry.NodeFanout,
                    TreeLevels = levels,
                    Root = root.ToString(),
                    Parent = parent?.Id,
                    Mode = mode,
                    Tags = _options.Tags,
                };
                var stats = manifest.Stats;
                stats.ScannedBytes = plan.ChangedOnly ? plan.PlannedBytes : size;
                stats.ZeroBytes = c.Zero + c.Holes;
                stats.HoleBytes = c.Holes;
                stats.ChangedBytes = c.Changed;
                stats.ChangedChunks = c.ChangedChunks;
                stats.ChangedBlocks = c.ChangedBlocks;
                stats.NewBytes = c.New;
                stats.NewChunks = c.NewChunks;
                stats.MetadataBytes = tree.NodeBytes;
                stats.Seconds = Math.Round(started.Elapsed.TotalSeconds, 3);
                byte[] body = manifest.Serialize();
                stats.StoredBytes = packs.StoredBytes + body.Length;
                body = manifest.Serialize();

                // The recovery point becomes visible only now: every pack and index it needs is durable.
                Progress.Phase = "committing";
                await _repo.Backend.PutAsync(Repo.SnapshotKey(id), body, ct).ConfigureAwait(false);
                objectsWritten = packs.ObjectsWritten + 1;

                ChangeMap.Seal(newMap, workPath, chunkCount,
                    new ChangeMap.Header(chunkSize, size, _repo.Config.RepoId, id, 0));
            }
            File.Move(workPath, mapPath, overwrite: true);
            LinuxFile.FsyncDirectory(_options.StateDir);
            // Only after the map: a record naming another recovery point than the map's is ignored.
            if (plan.Checkpoint is not null) TrackingRecord.Write(trackingPath, plan.Checkpoint, id);
            else TryDelete(trackingPath);
            _log.Debug("committed at {Ms} ms", started.ElapsedMilliseconds);
        }
        catch
        {
            _repo.Index.DropPending();
            throw;
        }
        finally
        {
            oldMap?.Dispose();
            await packs.DisposeAsync().ConfigureAwait(false);
            TryDelete(parentMapPath);
        }
        Progress.Phase = "done";
        double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuStart).TotalSeconds;
        return new BackupResult(manifest, mode == "RESCAN" ? reason : null, packs.PacksWritten, objectsWritten, cpu, seedNote);
    }

    /// <summary>Chunks of unchanged ranges re-read and re-hashed by every changed-only run (the CBT audit).</summary>
    public const int AuditSamples = 16;

    /// <summary>
    /// The change-tracking audit: a changed-only read trusts the source's change tracking for everything it did not
    /// read. A sample of chunks outside the changed ranges is read from the same point-in-time view and compared
    /// with the map (XXH3-128; zero chunks must read as zeros). A difference means the tracking missed a write:
    /// the run fails before anything is committed, and the tracking record is dropped, so the next run is a
    /// RESCAN by hash that repairs the replica.
    /// </summary>
    private void AuditUnchanged(IBlockSource source, ReadPlan plan, SafeFileHandle map, int chunkSize, string trackingPath)
    {
        long chunks = ChunkGeometry.ChunkCount(source.Size, chunkSize);
        var ranges = plan.Ranges!;
        var buffer = SourceReader.NewBuffer();
        var entry = new byte[ChangeMap.EntrySize];
        int align = SourceReader.AlignedStart(buffer);
        for (int sample = 0, tries = 0; sample < AuditSamples && tries < AuditSamples * 8; tries++)
        {
            long chunk = Random.Shared.NextInt64(chunks);
            long offset = chunk * chunkSize;
            if (Covered(ranges, offset)) continue;
            sample++;
            int length = (int)Math.Min(chunkSize, source.Size - offset);
            int n = source.ReadBatch(buffer.AsMemory(align), offset, length);
            var data = buffer.AsSpan(align, n);
            RandomAccess.Read(map, entry, ChangeMap.EntryOffset(chunk));
            var recorded = BlockHash.Read(entry);
            bool zeroRecorded = ChunkId.Read(entry.AsSpan(BlockHash.Size)).IsZero;
            if (!zeroRecorded && recorded.IsZero) continue; // an entry without a fingerprint cannot be compared
            bool same = zeroRecorded ? ZeroDetector.IsAllZero(data) : n == length && BlockHash.Compute(data) == recorded;
            if (same) continue;
            TryDelete(trackingPath);
            throw new SourceException($"source '{source.Path}': change-tracking audit failed: the chunk at offset {offset} changed "
                + "although the source did not report it; nothing was committed, and the next run rescans by hash");
        }
    }

    private static bool Covered(IReadOnlyList<ByteRange> ranges, long offset)
    {
        int lo = 0, hi = ranges.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (ranges[mid].End <= offset) lo = mid + 1;
            else if (ranges[mid].Offset > offset) hi = mid - 1;
            else return true;
        }
        return false;
    }

    private static FileStream AcquireLock(string path, string source)
    {
        try { return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException) { throw new SourceException($"another backup of '{source}' is running (lock {path})"); }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private async Task<SafeFileHandle> MaterialiseParentAsync(Manifest parent, string path, int chunkSize, long chunkCount, CancellationToken ct)
    {
        var h = ChangeMap.CreateWorking(path, chunkCount);
        if (parent.ChunkSize != chunkSize) return h;
        var entry = new byte[ChangeMap.EntrySize * ChunkGeometry.LeafFanout];
        await TreeWalker.WalkAsync(_repo, parent, (first, ids, count) =>
        {
            long n = Math.Min(count, chunkCount - first);
            if (n <= 0) return Task.CompletedTask;
            Array.Clear(entry);
            for (int i = 0; i < n; i++) ids[i].Write(entry.AsSpan(i * ChangeMap.EntrySize + BlockHash.Size));
            RandomAccess.Write(h, entry.AsSpan(0, (int)n * ChangeMap.EntrySize), ChangeMap.EntryOffset(first));
            return Task.CompletedTask;
        }, (_, _) => Task.CompletedTask, null, ct).ConfigureAwait(false);
        return h;
    }

    private void RunPipeline(IBlockSource source, ReadPlan plan, SafeFileHandle? oldMap, SafeFileHandle newMap, PackWriter packs, Counters c, CancellationToken outerCt)
    {
        int workers = Math.Max(1, _options.Workers);
        int bufferCount = workers * 2 + 2;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(outerCt);
        var ct = cts.Token;
        var free = new BoundedQueue<byte[]>(bufferCount);
        var work = new BoundedQueue<ReadBatch>(bufferCount);
        // Compressed chunks waiting for the packer. Their buffers come from a fixed free list, allocated
        // once: the shared ArrayPool keeps only a few arrays per size per core, so with dozens in flight
        // it would allocate on most rents.
        const int packQueue = 32;
        var toPack = new BoundedQueue<PackItem>(packQueue);
        int outCount = packQueue + workers * 2;
        var freeOut = new BoundedQueue<byte[]>(outCount);
        int maxEncoded = Lz4Block.MaxEncodedLength(_repo.ChunkSize);
        for (int i = 0; i < outCount; i++) freeOut.Add(GC.AllocateUninitializedArray<byte>(maxEncoded));
        for (int i = 0; i < bufferCount; i++) free.Add(SourceReader.NewBuffer());
        using var cancelQueues = ct.Register(() => { free.Cancel(); work.Cancel(); toPack.Cancel(); freeOut.Cancel(); });
        Exception? failure = null;
        void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref failure, e, null);
            try { cts.Cancel(); } catch (ObjectDisposedException) { }
        }

        var reader = new Thread(() =>
        {
            try { c.Holes = SourceReader.ReadLoop(source, plan, free, work, Progress, ct); }
            catch (OperationCanceledException) { }
            catch (Exception e) { Fail(e); }
            finally { work.Complete(); }
        }) { Name = "blockrepl-reader", IsBackground = true };

        var workerThreads = new Thread[workers];
        int running = workers;
        for (int w = 0; w < workers; w++)
        {
            workerThreads[w] = new Thread(() =>
            {
                try { WorkLoop(source, oldMap, newMap, work, free, toPack, freeOut, c, ct); }
                catch (OperationCanceledException) { }
                catch (Exception e) { Fail(e); }
                finally { if (Interlocked.Decrement(ref running) == 0) toPack.Complete(); }
            }) { Name = $"blockrepl-worker-{w}", IsBackground = true };
        }

        var packer = new Thread(() =>
        {
            try
            {
                while (toPack.TryTake(out var item))
                {
                    try { packs.Add(BlobType.Data, item.Id, item.Buffer.AsSpan(0, item.Length), item.RawLength, item.Compression); }
                    finally { freeOut.Add(item.Buffer); }
                    Progress.AddStored(item.Length);
                }
            }
            catch (OperationCanceledException) { }
            catch (Exception e) { Fail(e); }
        }) { Name = "blockrepl-packer", IsBackground = true };

        reader.Start();
        foreach (var t in workerThreads) t.Start();
        packer.Start();
        reader.Join();
        foreach (var t in workerThreads) t.Join();
        packer.Join();

        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        outerCt.ThrowIfCancellationRequested();
    }

    private void WorkLoop(IBlockSource source, SafeFileHandle? oldMap, SafeFileHandle newMap, BoundedQueue<ReadBatch> work,
        BoundedQueue<byte[]> free, BoundedQueue<PackItem> toPack, BoundedQueue<byte[]> freeOut, Counters total, CancellationToken ct)
    {
        int chunkSize = _repo.ChunkSize;
        int perBatch = BatchSize / chunkSize;
        int chunksPerBlock = Math.Max(1, ChunkGeometry.BlockSize / chunkSize);
        var oldEntries = new byte[perBatch * ChangeMap.EntrySize];
        var newEntries = new byte[perBatch * ChangeMap.EntrySize];
        var index = _repo.Index;

        while (work.TryTake(out var batch))
        {
            long firstChunk = batch.Offset / chunkSize;
            int n = (batch.Length + chunkSize - 1) / chunkSize;
            int entryBytes = n * ChangeMap.EntrySize;
            if (oldMap is not null) RandomAccess.Read(oldMap, oldEntries.AsSpan(0, entryBytes), ChangeMap.EntryOffset(firstChunk));
            long zero = 0, changed = 0, changedChunks = 0, fresh = 0, freshChunks = 0, changedBlocks = 0;
            bool blockChanged = false;
            for (int i = 0; i < n; i++)
            {
                int off = i * chunkSize;
                var data = batch.Buffer.AsSpan(batch.Start + off, Math.Min(chunkSize, batch.Length - off));
                var oldEntry = oldEntries.AsSpan(i * ChangeMap.EntrySize, ChangeMap.EntrySize);
                var newEntry = newEntries.AsSpan(i * ChangeMap.EntrySize, ChangeMap.EntrySize);
                var oldId = oldMap is null ? ChunkId.Zero : ChunkId.Read(oldEntry[BlockHash.Size..]);
                bool isChanged;
                if (ZeroDetector.IsAllZero(data))
                {
                    newEntry.Clear();
                    zero += data.Length;
                    isChanged = !oldId.IsZero;
                }
                else
                {
                    var hash = BlockHash.Compute(data);
                    var oldHash = oldMap is null ? default : BlockHash.Read(oldEntry);
                    if (!oldHash.IsZero && oldHash == hash && !oldId.IsZero && index.Contains(oldId))
                    {
                        oldEntry.CopyTo(newEntry);
                        isChanged = false;
                    }
                    else
                    {
                        var id = ChunkId.Compute(data);
                        isChanged = id != oldId;
                        if (index.TryClaim(id, BlobType.Data))
                        {
                            freeOut.TryTake(out var outBuf);
                            if (Lz4Block.TryEncode(data, outBuf, out int written))
                                toPack.Add(new PackItem(id, outBuf!, written, data.Length, BlobCompression.Lz4));
                            else
                            {
                                data.CopyTo(outBuf);
                                toPack.Add(new PackItem(id, outBuf!, data.Length, data.Length, BlobCompression.None));
                            }
                            fresh += data.Length;
                            freshChunks++;
                        }
                        hash.Write(newEntry);
                        id.Write(newEntry[BlockHash.Size..]);
                    }
                }
                if (isChanged) { changed += data.Length; changedChunks++; blockChanged = true; }
                if ((firstChunk + i + 1) % chunksPerBlock == 0 || i == n - 1)
                {
                    if (blockChanged) changedBlocks++;
                    blockChanged = false;
                }
            }
            RandomAccess.Write(newMap, newEntries.AsSpan(0, entryBytes), ChangeMap.EntryOffset(firstChunk));
            _options.Observer?.OnBatch(batch.Data, batch.Offset, ct);
            if (_options.DropSourceCache && !source.DirectIo) source.DropCache(batch.Offset, batch.Length);
            free.Add(batch.Buffer);
            Interlocked.Add(ref total.Zero, zero);
            Interlocked.Add(ref total.Changed, changed);
            Interlocked.Add(ref total.ChangedChunks, changedChunks);
            Interlocked.Add(ref total.New, fresh);
            Interlocked.Add(ref total.NewChunks, freshChunks);
            Interlocked.Add(ref total.ChangedBlocks, changedBlocks);
            Progress.AddChanged(changed);
        }
    }

    private static void BuildTree(SafeFileHandle map, long chunkCount, TreeBuilder tree)
    {
        var buf = ArrayPool<byte>.Shared.Rent(ChangeMap.EntrySize * 16384);
        try
        {
            for (long first = 0; first < chunkCount;)
            {
                int n = (int)Math.Min(16384, chunkCount - first);
                var span = buf.AsSpan(0, n * ChangeMap.EntrySize);
                int read = RandomAccess.Read(map, span, ChangeMap.EntryOffset(first));
                if (read != span.Length) throw new IOException("change map shorter than expected");
                for (int i = 0; i < n; i++)
                    tree.AddChunk(ChunkId.Read(span[(i * ChangeMap.EntrySize + BlockHash.Size)..]));
                first += n;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }
}

/// <summary>Where change maps live by default.</summary>
public static class StateDirectory
{
    /// <summary>$BLOCKREPL_STATE_DIR, else /var/lib/blockrepl as root, else $XDG_STATE_HOME/blockrepl or ~/.local/state/blockrepl.</summary>
    public static string Default
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("BLOCKREPL_STATE_DIR");
            if (!string.IsNullOrEmpty(env)) return env;
            if (LinuxFile.IsRoot) return "/var/lib/blockrepl";
            var xdg = Environment.GetEnvironmentVariable("XDG_STATE_HOME");
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(home, ".local", "state") : xdg, "blockrepl");
        }
    }
}
