using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using BlockRepl.Core;
using BlockRepl.Core.Hashing;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using BlockRepl.Storage.Ebs;
using Microsoft.Win32.SafeHandles;
using Serilog;

namespace BlockRepl.Engine.Ebs;

/// <summary>How the snapshots of an EBS target are made.</summary>
public sealed class EbsTargetOptions
{
    public IReadOnlyList<EbsTag> Tags { get; init; } = [];
    public string? Description { get; init; }
    /// <summary>Encrypt the first snapshot of a new chain (children inherit it).</summary>
    public bool Encrypted { get; init; }
    public string? KmsKeyArn { get; init; }
    /// <summary>StartSnapshot Timeout in minutes (10..4320); null leaves the service default (60).</summary>
    public int? TimeoutMinutes { get; init; }
    /// <summary>Wait until the snapshot is completed (readable) before returning.</summary>
    public bool Wait { get; init; } = true;
    public TimeSpan WaitTimeout { get; init; } = TimeSpan.FromMinutes(30);
    /// <summary>Continue the chain from this snapshot when the state directory knows none (RESCAN against it).</summary>
    public string? ParentSnapshotId { get; init; }
    /// <summary>Ignore the recorded chain and start a new one (FULL, no parent).</summary>
    public bool NewChain { get; init; }
    /// <summary>Blocks buffered for in-flight puts (each 512 KiB).</summary>
    public int MaxInFlight { get; init; } = 64;
    public string Host { get; init; } = Environment.MachineName;
}

/// <summary>What one run did to an EBS chain.</summary>
public sealed record EbsResult(
    string SnapshotId, string? ParentSnapshotId, string Mode, string? RescanReason, bool Resumed, int ResumedBlocks,
    int ChangedBlocks, long BlocksPut, long ZeroBlocksPut, long BytesPut, long ScannedBytes, long VolumeSizeGiB,
    string Status, double Seconds, double WaitSeconds, long Requests, long Retries, long Throttled, int Concurrency,
    string Region, string Endpoint);

/// <summary>
/// Replicates a source into an EBS snapshot chain through the EBS direct APIs (docs/ebs.md). The first run
/// starts a snapshot of the volume's size; later runs chain with ParentSnapshotId and put only the 512 KiB blocks
/// whose XXH3-128 differs from the block map of the parent (including blocks that became all-zero). An interrupted
/// run resumes the same pending snapshot (same ClientToken) from its journal; a snapshot past its timeout is
/// replaced by a new one with the right parent. Used alone (<see cref="RunAsync"/>) or as the second target of a
/// repository backup (<see cref="IBatchObserver"/>), so one read feeds both.
/// </summary>
public sealed class EbsReplicator : IBatchObserver, IDisposable
{
    private const int BlockSize = EbsLimits.BlockSize;
    private readonly IEbsClient _client;
    private readonly EbsTargetOptions _options;
    private readonly string _stateDir;
    private readonly ILogger _log;

    private string _stem = "", _statePath = "", _mapPath = "", _workPath = "", _journalPath = "";
    private FileStream? _lockFile;
    private EbsChainState _state = null!;
    private EbsPending _pending = null!;
    private SafeFileHandle? _work;
    private EbsJournal? _journal;
    private ulong[] _written = [], _visited = [];
    private long _blockCount, _volumeBytes;
    private string _mode = "FULL";
    private string? _rescanReason;
    private ReadPlan _plan = ReadPlan.Full;
    private int _resumedBlocks;
    private bool _resumed;

    // In-flight puts: a slot per buffer; a failed put cancels the run.
    private SemaphoreSlim _slots = null!;
    private readonly ConcurrentBag<byte[]> _buffers = [];
    private CancellationTokenSource _cts = new();
    private Exception? _failure;
    private long _blocksPut, _zeroPut, _bytesPut;
    private readonly Stopwatch _clock = new();
    private long _requests0, _retries0, _throttled0;

    public JobProgress Progress { get; } = new();

    public EbsReplicator(IEbsClient client, EbsTargetOptions options, string stateDir, ILogger log)
    {
        _client = client;
        _options = options;
        _stateDir = stateDir;
        _log = log;
    }

    /// <summary>Replicates <paramref name="source"/> alone: prepare, one scan, complete.</summary>
    public async Task<EbsResult> RunAsync(IBlockSource source, int workers, bool dropCache, CancellationToken ct)
    {
        await PrepareAsync(source, ct).ConfigureAwait(false);
        if (!_pending.CompleteRequested)
        {
            var plan = await ReadPlan.BeginAsync(source, [TrackingBase], _mode == "INCREMENTAL", SourceReader.BatchAlignment, ct).ConfigureAwait(false);
            OnReadPlan(plan);
            Progress.Phase = _mode == "FULL" ? "full sync" : _mode == "RESCAN" ? "rescan" : "incremental";
            await Task.Factory.StartNew(() => SourceReader.Scan(source, plan, workers, this, Progress, dropCache, ct),
                ct, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
        }
        return await FinishAsync(ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Finds the chain, starts (or resumes) the pending snapshot and builds the working block map. After this,
    /// feed every batch of the source to <see cref="OnBatch"/>, then call <see cref="FinishAsync"/>.
    /// </summary>
    public async Task PrepareAsync(IBlockSource source, CancellationToken ct)
    {
        _clock.Start();
        var st0 = _client.Stats;
        (_requests0, _retries0, _throttled0) = (Interlocked.Read(ref st0.Requests), Interlocked.Read(ref st0.Retries), Interlocked.Read(ref st0.Throttled));
        Progress.Phase = "preparing EBS snapshot";
        Progress.TotalBytes = source.Size;
        _volumeBytes = source.Size;
        _blockCount = EbsBlockMap.BlockCount(_volumeBytes);
        if (_volumeBytes == 0) throw new SourceException($"source '{source.Path}' is empty; an EBS snapshot needs at least one byte");
        long gib = CheckVolumeSize(_volumeBytes, source.Path);
        if (File.Exists(_stateDir)) throw new UsageException($"state directory '{_stateDir}' is a file; give a directory with --state-dir");
        try { Directory.CreateDirectory(_stateDir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UsageException($"cannot create state directory '{_stateDir}': {e.Message}"); }

        string endpoint = _client.Endpoint.GetLeftPart(UriPartial.Authority);
        _stem = EbsChainState.Stem(_client.Region, endpoint, source.SourceKey);
        _statePath = Path.Combine(_stateDir, _stem + ".json");
        _mapPath = Path.Combine(_stateDir, _stem + ".map");
        _workPath = _mapPath + ".new";
        _journalPath = Path.Combine(_stateDir, _stem + ".journal");
        try { _lockFile = new FileStream(Path.Combine(_stateDir, _stem + ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
        catch (IOException) { throw new SourceException($"another replication of '{source.Path}' to EBS {_client.Region} is running"); }

        var state = _options.NewChain ? null : EbsChainState.Load(_statePath);
        if (state is not null && _options.ParentSnapshotId is not null && state.LastSnapshotId != _options.ParentSnapshotId)
            throw new UsageException($"--ebs-parent {_options.ParentSnapshotId}: the chain in {_statePath} continues from {state.LastSnapshotId ?? "nothing"}; add --ebs-new-chain to follow another chain");
        _state = state ?? new EbsChainState
        {
            ChainId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12)),
            Region = _client.Region,
            Endpoint = endpoint,
            Source = source.SourceKey,
            Encrypted = _options.Encrypted || _options.KmsKeyArn is not null,
            KmsKeyArn = _options.KmsKeyArn,
            LastSnapshotId = _options.NewChain ? null : _options.ParentSnapshotId,
        };
        if (state is not null && state.LastSnapshotId is not null && gib < ParentGiB(state))
            throw new SourceException($"source '{source.Path}' shrank to {gib} GiB but snapshot {state.LastSnapshotId} is {ParentGiB(state)} GiB; EBS cannot shrink a chain: add --ebs-new-chain");

        // An interrupted run: resume its snapshot if the service still has it pending.
        var pending = _state.Pending;
        if (pending is not null && pending.VolumeBytes == _volumeBytes && pending.ParentSnapshotId == _state.LastSnapshotId)
        {
            EbsSnapshotInfo? info = null;
            try { info = await _client.StartSnapshotAsync(StartRequest(pending), ct).ConfigureAwait(false); }
            catch (EbsException e) when (e.ErrorType is "ConflictException" or "ValidationException" or "ResourceNotFoundException")
            {
                _log.Warning("EBS: cannot resume pending snapshot {Id}: {Error}; starting a new one", pending.SnapshotId, e.Message);
            }
            if (info is not null && (info.Status == "pending" || (info.Status == "completed" && pending.CompleteRequested)))
            {
                pending.SnapshotId = info.SnapshotId;
                _pending = pending;
                _resumed = true;
                _mode = pending.Mode;
                _log.Information("EBS: resuming {State} snapshot {Id} (started {Started:u})", info.Status, info.SnapshotId, pending.Started);
            }
            else if (info is not null)
                _log.Warning("EBS: pending snapshot {Id} is {Status}; starting a new one", info.SnapshotId, info.Status);
        }
        else if (pending is not null)
            _log.Warning("EBS: dropping pending snapshot {Id}: the source or chain changed since it started", pending.SnapshotId);

        // The parent's block map decides INCREMENTAL vs RESCAN; a new chain is FULL.
        SafeFileHandle? sealedMap = null;
        if (_state.LastSnapshotId is null) _mode = "FULL";
        else
        {
            sealedMap = EbsBlockMap.TryOpen(_mapPath, _volumeBytes, _state.LastSnapshotId, _state.ChainId, out _rescanReason);
            if (!_resumed) _mode = sealedMap is null ? "RESCAN" : "INCREMENTAL";
            if (sealedMap is null && _resumed && _mode == "INCREMENTAL") _mode = "RESCAN";
        }
        sealedMap?.Dispose();

        if (!_resumed)
        {
            _pending = new EbsPending
            {
                ClientToken = Guid.NewGuid().ToString(),
                ParentSnapshotId = _state.LastSnapshotId,
                Started = DateTimeOffset.UtcNow,
                VolumeSizeGiB = Math.Max(gib, _state.LastSnapshotId is null ? 0 : ParentGiB(_state)),
                VolumeBytes = _volumeBytes,
                Mode = _mode,
                TimeoutMinutes = _options.TimeoutMinutes ?? 60,
            };
            // The token is durable before the call, so a crash right after StartSnapshot finds the same snapshot.
            _state.Pending = _pending;
            _state.Save(_statePath);
            EbsSnapshotInfo info;
            try { info = await _client.StartSnapshotAsync(StartRequest(_pending), ct).ConfigureAwait(false); }
            catch (EbsException e) when (_pending.ParentSnapshotId is not null && (e.IsNotFound || e.Reason == "INVALID_SNAPSHOT_ID"))
            {
                // Leave the state as it was: a chain made up for --ebs-parent is forgotten again.
                if (state is null) File.Delete(_statePath);
                else
                {
                    _state.Pending = null;
                    _state.Save(_statePath);
                }
                throw new NotFoundException($"parent snapshot {_pending.ParentSnapshotId} cannot be used at {endpoint}: {e.ServiceMessage ?? e.Message}; "
                    + (_options.ParentSnapshotId is not null ? "check --ebs-parent" : "it may have been deleted: add --ebs-new-chain to start a new chain"));
            }
            _pending.SnapshotId = info.SnapshotId;
            _state.Save(_statePath);
            _log.Information("EBS: started {Mode} snapshot {Id} ({Gib} GiB{Parent})", _mode, info.SnapshotId, _pending.VolumeSizeGiB,
                _pending.ParentSnapshotId is null ? "" : ", parent " + _pending.ParentSnapshotId);
            TryDelete(_journalPath);
        }

        await BuildWorkingMapAsync(ct).ConfigureAwait(false);
        int inFlight = Math.Clamp(_options.MaxInFlight, 1, 1024);
        _slots = new SemaphoreSlim(inFlight, inFlight);
        _cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
    }

    /// <summary>The snapshot size in GiB for a source of <paramref name="bytes"/>, or a clear error beyond EBS's 64 TiB.</summary>
    public static long CheckVolumeSize(long bytes, string path)
    {
        long gib = EbsVolume.BytesToGiB(bytes);
        if (gib > EbsLimits.MaxVolumeSizeGiB)
            throw new SourceException($"source '{path}' is {gib} GiB; an EBS snapshot holds at most {EbsLimits.MaxVolumeSizeGiB} GiB (64 TiB)");
        return gib;
    }

    private long ParentGiB(EbsChainState s) =>
        s.History.LastOrDefault(h => h.Id == s.LastSnapshotId)?.VolumeSizeGiB ?? Math.Max(1, (s.LastVolumeBytes + (1L << 30) - 1) >> 30);

    private StartSnapshotRequest StartRequest(EbsPending p)
    {
        var tags = new List<EbsTag>(_options.Tags)
        {
            new("blockrepl:host", Truncate(_options.Host, 255)),
            new("blockrepl:source", Truncate(_state.Source, 255)),
            new("blockrepl:chain", _state.ChainId),
        };
        bool first = p.ParentSnapshotId is null;
        return new StartSnapshotRequest
        {
            VolumeSizeGiB = p.VolumeSizeGiB,
            ParentSnapshotId = p.ParentSnapshotId,
            ClientToken = p.ClientToken,
            Description = Truncate(_options.Description ?? $"blockrepl {_state.Source} on {_options.Host}", 255),
            Tags = tags,
            // EBS refuses Encrypted together with a parent: children inherit the parent's encryption.
            Encrypted = first && _state.Encrypted ? true : null,
            KmsKeyArn = first ? _state.KmsKeyArn : null,
            TimeoutMinutes = p.TimeoutMinutes,
        };
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[^max..];

    /// <summary>
    /// The working map starts as the parent's map (INCREMENTAL), all zero (a new unencrypted chain: unwritten blocks
    /// read as zeros) or all unknown (RESCAN, or encrypted, where unwritten blocks read as random data); then the
    /// journal of this snapshot is replayed over it.
    /// </summary>
    private async Task BuildWorkingMapAsync(CancellationToken ct)
    {
        string snapshotId = _pending.SnapshotId!;
        if (_mode == "INCREMENTAL") _work = EbsBlockMap.CreateFrom(_mapPath, _workPath, _blockCount);
        else if (_mode == "FULL" && !_state.Encrypted) _work = EbsBlockMap.CreateZero(_workPath, _blockCount);
        else
        {
            _work = EbsBlockMap.CreateUnknown(_workPath, _blockCount);
            if (_mode == "RESCAN" && !_state.Encrypted && _pending.ParentSnapshotId is not null)
                await MarkAbsentParentBlocksAsync(_pending.ParentSnapshotId, ct).ConfigureAwait(false);
        }
        _written = new ulong[(_blockCount + 63) / 64];
        _visited = new ulong[(_blockCount + 63) / 64];
        _journal = EbsJournal.Open(_journalPath, snapshotId, out var entries);
        var entry = new byte[EbsBlockMap.EntrySize];
        var unknown = new byte[EbsBlockMap.EntrySize];
        unknown.AsSpan().Fill(0xFF);
        foreach (var e in entries)
        {
            if (e.Index < 0 || e.Index >= _blockCount) continue;
            if (e.Acked)
            {
                Array.Clear(entry);
                if (!e.Hash.IsZero) { e.Hash.Write(entry); e.Sha256.CopyTo(entry.AsSpan(BlockHash.Size)); }
                RandomAccess.Write(_work, entry, EbsBlockMap.EntryOffset(e.Index));
                SetBit(_written, e.Index);
            }
            else
            {
                // Put may have reached the service with content we no longer know: put it again.
                RandomAccess.Write(_work, unknown, EbsBlockMap.EntryOffset(e.Index));
                ClearBit(_written, e.Index);
            }
        }
        _resumedBlocks = (int)CountBits(_written);
        if (_resumed) _log.Information("EBS: journal has {Count} acknowledged blocks of {Id}", _resumedBlocks, snapshotId);
    }

    /// <summary>RESCAN of an unencrypted chain: blocks the parent never had read as zeros, so zeros there need no put.</summary>
    private async Task MarkAbsentParentBlocksAsync(string parent, CancellationToken ct)
    {
        var present = new ulong[(_blockCount + 63) / 64];
        string? token = null;
        do
        {
            var page = await _client.ListSnapshotBlocksAsync(parent, null, token, 10000, ct).ConfigureAwait(false);
            foreach (var b in page.Blocks) if (b.BlockIndex < _blockCount) SetBit(present, b.BlockIndex);
            token = page.NextToken;
        } while (token is not null);
        var zero = new byte[EbsBlockMap.EntrySize];
        for (long i = 0; i < _blockCount; i++)
            if (!GetBit(present, i)) RandomAccess.Write(_work!, zero, EbsBlockMap.EntryOffset(i));
    }

    private readonly record struct Pending(int Index, int Offset, int Length, BlockHash Hash);

    /// <summary>The checkpoint the last snapshot's block map was taken at, when that map is what this run compares with.</summary>
    public string? TrackingBase => _mode == "INCREMENTAL" ? _state.TrackingCheckpoint : null;

    public void OnReadPlan(ReadPlan plan)
    {
        if (_pending.CompleteRequested) return; // the snapshot's content is settled; this read is not for it
        _plan = plan;
        if (_mode == "INCREMENTAL" && plan.RescanReason(TrackingBase) is { } lost)
        {
            _mode = "RESCAN";
            _rescanReason = lost;
            _log.Information("EBS: rescan against {Parent}: {Reason}", _state.LastSnapshotId, lost);
        }
        if (plan.ChangedOnly) Progress.TotalBytes = plan.PlannedBytes;
    }

    /// <summary>Compares every 512 KiB block of a batch with the working map and puts those that differ.</summary>
    public void OnBatch(ReadOnlySpan<byte> data, long offset, CancellationToken ct)
    {
        ThrowIfFailed();
        // A resumed snapshot that was already completed takes no more blocks: it only waits and seals.
        if (_pending.CompleteRequested) return;
        const int MaxBlocks = SourceReader.BatchSize / BlockSize;
        Span<Pending> puts = stackalloc Pending[MaxBlocks];
        // The batch's blocks are consecutive: their map entries are one read.
        Span<byte> entries = stackalloc byte[MaxBlocks * EbsBlockMap.EntrySize];
        int blocks = (data.Length + BlockSize - 1) / BlockSize;
        RandomAccess.Read(_work!, entries[..(blocks * EbsBlockMap.EntrySize)], EbsBlockMap.EntryOffset(offset / BlockSize));
        int count = 0;
        for (int o = 0, k = 0; o < data.Length; o += BlockSize, k++)
        {
            var block = data.Slice(o, Math.Min(BlockSize, data.Length - o));
            long index = (offset + o) / BlockSize;
            SetBit(_visited, index);
            var entry = entries.Slice(k * EbsBlockMap.EntrySize, EbsBlockMap.EntrySize);
            if (ZeroDetector.IsAllZero(block))
            {
                if (!EbsBlockMap.IsZero(entry)) puts[count++] = new Pending((int)index, o, block.Length, default);
                continue;
            }
            var hash = BlockHash.Compute(block);
            if (EbsBlockMap.IsUnknown(entry) || EbsBlockMap.IsZero(entry) || BlockHash.Read(entry) != hash)
                puts[count++] = new Pending((int)index, o, block.Length, hash);
        }
        PutMany(puts[..count], data);
    }

    /// <summary>
    /// Copies each block into a put buffer (zero-padded to 512 KiB, SHA-256 in the buffer's tail), journals its
    /// intent and starts its put. Blocks only while every buffer is in flight.
    /// </summary>
    private void PutMany(ReadOnlySpan<Pending> puts, ReadOnlySpan<byte> data)
    {
        if (puts.IsEmpty) return;
        foreach (var p in puts)
        {
            try { _slots.Wait(_cts.Token); }
            catch (OperationCanceledException) { ThrowIfFailed(); throw; }
            if (!_buffers.TryTake(out var buf)) buf = GC.AllocateUninitializedArray<byte>(PutBufferSize);
            var block = buf.AsSpan(0, BlockSize);
            data.Slice(p.Offset, p.Length).CopyTo(block);
            if (p.Length < BlockSize) block[p.Length..].Clear();
            SHA256.HashData(block, buf.AsSpan(BlockSize, 32));
            // The put starts once its INTENT is durable (group fsync); the worker goes on reading meanwhile.
            long seq = _journal!.AppendIntent(p.Index);
            _ = PutAsync(p.Index, buf, p.Hash, seq);
        }
    }

    /// <summary>A put buffer: the block, its SHA-256, and room for its map entry.</summary>
    private const int PutBufferSize = BlockSize + 32 + EbsBlockMap.EntrySize;

    private void ThrowIfFailed()
    {
        if (_failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(_failure).Throw();
    }

    private async Task PutAsync(int index, byte[] buf, BlockHash hash, long intent)
    {
        try
        {
            await _journal!.WhenDurableAsync(intent).ConfigureAwait(false);
            var sha = buf.AsMemory(BlockSize, 32);
            await _client.PutSnapshotBlockAsync(_pending.SnapshotId!, index, buf.AsMemory(0, BlockSize), sha,
                (int)(100 * Progress.DoneBytes / Math.Max(1, Progress.TotalBytes)), _cts.Token).ConfigureAwait(false);
            _journal!.AppendAck(index, hash, sha.Span);
            var entry = buf.AsSpan(BlockSize + 32, EbsBlockMap.EntrySize);
            entry.Clear();
            if (!hash.IsZero) { hash.Write(entry); sha.Span.CopyTo(entry[BlockHash.Size..]); }
            RandomAccess.Write(_work!, entry, EbsBlockMap.EntryOffset(index));
            SetBit(_written, index);
            Interlocked.Increment(ref _blocksPut);
            if (hash.IsZero) Interlocked.Increment(ref _zeroPut);
            Interlocked.Add(ref _bytesPut, BlockSize);
            Progress.AddStored(BlockSize);
        }
        catch (Exception e)
        {
            if (e is not OperationCanceledException || _failure is null)
                Interlocked.CompareExchange(ref _failure, e is OperationCanceledException ? new OperationCanceledException() : e, null);
            try { _cts.Cancel(); } catch (ObjectDisposedException) { }
        }
        finally
        {
            _buffers.Add(buf);
            _slots.Release();
        }
    }

    /// <summary>Puts zeros where unvisited blocks (holes) had data, drains the puts, completes the snapshot, waits, seals the map.</summary>
    public async Task<EbsResult> FinishAsync(CancellationToken ct)
    {
        string id = _pending.SnapshotId!;
        double waitSeconds = 0;
        string status = "pending";
        try
        {
            if (!_pending.CompleteRequested)
            {
                // A full read skipped holes: blocks it never saw read as zeros. A changed-only read saw every change.
                if (!_plan.ChangedOnly)
                {
                    Progress.Phase = "EBS: zero-filling holes";
                    await Task.Run(() => PutHoles(ct), ct).ConfigureAwait(false);
                }
                Progress.Phase = "EBS: waiting for puts";
                await DrainAsync().ConfigureAwait(false);
                ct.ThrowIfCancellationRequested();
                _journal!.Sync();
                var (count, linear) = Linear();
                _pending.CompleteRequested = true;
                _pending.TrackingCheckpoint = _plan.Checkpoint;
                _state.Save(_statePath);
                Progress.Phase = "EBS: completing";
                status = await _client.CompleteSnapshotAsync(id, count, linear, ct).ConfigureAwait(false);
                _log.Debug("EBS: CompleteSnapshot {Id} with {Count} blocks: {Status}", id, count, status);
            }
            if (_options.Wait && status != "completed")
            {
                var w = Stopwatch.StartNew();
                await _client.WaitForCompletedAsync(id, _options.WaitTimeout,
                    e => Progress.Phase = $"EBS: waiting for {id} to complete ({e.TotalSeconds:0} s)", ct).ConfigureAwait(false);
                waitSeconds = w.Elapsed.TotalSeconds;
                status = "completed";
            }

            // Seal: the map now describes the new snapshot; the chain moves on.
            int changed = (int)CountBits(_written);
            EbsBlockMap.Seal(_work!, _workPath, new EbsBlockMap.Header(_volumeBytes, _blockCount, id, _state.ChainId));
            _work!.Dispose();
            _work = null;
            File.Move(_workPath, _mapPath, overwrite: true);
            LinuxFile.FsyncDirectory(_stateDir);
            _state.History.Add(new EbsSnapshotRecord
            {
                Id = id, Parent = _pending.ParentSnapshotId, Time = DateTimeOffset.UtcNow, Mode = _mode,
                ChangedBlocks = changed, VolumeSizeGiB = _pending.VolumeSizeGiB,
            });
            if (_state.History.Count > EbsChainState.HistoryLimit) _state.History.RemoveRange(0, _state.History.Count - EbsChainState.HistoryLimit);
            _state.LastSnapshotId = id;
            _state.LastVolumeBytes = _volumeBytes;
            // The checkpoint of the read that filled this snapshot (a resumed completion keeps the earlier run's).
            _state.TrackingCheckpoint = _pending.TrackingCheckpoint;
            _state.Pending = null;
            _state.Save(_statePath);
            _journal!.Dispose();
            _journal = null;
            TryDelete(_journalPath);
            Progress.Phase = "done";
            var st = _client.Stats;
            return new EbsResult(id, _pending.ParentSnapshotId, _mode, _mode == "RESCAN" ? _rescanReason : null, _resumed, _resumedBlocks,
                changed, _blocksPut, _zeroPut, _bytesPut, _volumeBytes, _pending.VolumeSizeGiB, status,
                Math.Round(_clock.Elapsed.TotalSeconds, 3), Math.Round(waitSeconds, 3),
                Interlocked.Read(ref st.Requests) - _requests0, Interlocked.Read(ref st.Retries) - _retries0,
                Interlocked.Read(ref st.Throttled) - _throttled0, st.CurrentConcurrency,
                _client.Region, _state.Endpoint);
        }
        catch
        {
            try { _cts.Cancel(); } catch (ObjectDisposedException) { }
            await DrainAsync().ConfigureAwait(false);
            throw;
        }
    }

    private void PutHoles(CancellationToken ct)
    {
        var buf = ArrayPool<byte>.Shared.Rent(EbsBlockMap.EntrySize * 16384);
        var holes = new Pending[64];
        int count = 0;
        try
        {
            for (long first = 0; first < _blockCount; first += 16384)
            {
                int n = (int)Math.Min(16384, _blockCount - first);
                RandomAccess.Read(_work!, buf.AsSpan(0, n * EbsBlockMap.EntrySize), EbsBlockMap.EntryOffset(first));
                for (int i = 0; i < n; i++)
                {
                    long index = first + i;
                    if (GetBit(_visited, index)) continue;
                    if (!EbsBlockMap.IsZero(buf.AsSpan(i * EbsBlockMap.EntrySize, EbsBlockMap.EntrySize)))
                    {
                        holes[count++] = new Pending((int)index, 0, 0, default);
                        if (count == holes.Length) { PutMany(holes, default); count = 0; }
                    }
                }
                ct.ThrowIfCancellationRequested();
            }
            PutMany(holes.AsSpan(0, count), default);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        ThrowIfFailed();
    }

    /// <summary>Waits until no put is in flight; rethrows the first put failure.</summary>
    private async Task DrainAsync()
    {
        if (_slots is null) return;
        int n = Math.Clamp(_options.MaxInFlight, 1, 1024);
        for (int i = 0; i < n; i++) await _slots.WaitAsync().ConfigureAwait(false);
        _slots.Release(n);
        ThrowIfFailed();
    }

    /// <summary>ChangedBlocksCount and the LINEAR checksum: SHA-256 over the raw digests of the written blocks in index order.</summary>
    private (int Count, byte[] Linear) Linear()
    {
        using var linear = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        int count = 0;
        var buf = ArrayPool<byte>.Shared.Rent(EbsBlockMap.EntrySize * 16384);
        try
        {
            for (long first = 0; first < _blockCount; first += 16384)
            {
                int n = (int)Math.Min(16384, _blockCount - first);
                RandomAccess.Read(_work!, buf.AsSpan(0, n * EbsBlockMap.EntrySize), EbsBlockMap.EntryOffset(first));
                for (int i = 0; i < n; i++)
                {
                    if (!GetBit(_written, first + i)) continue;
                    var e = buf.AsSpan(i * EbsBlockMap.EntrySize, EbsBlockMap.EntrySize);
                    linear.AppendData(EbsBlockMap.IsZero(e) ? EbsBlockMap.ZeroBlockSha256 : e[BlockHash.Size..]);
                    count++;
                }
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        return (count, linear.GetHashAndReset());
    }

    private static void SetBit(ulong[] bits, long i) => Interlocked.Or(ref bits[i >> 6], 1UL << (int)(i & 63));
    private static void ClearBit(ulong[] bits, long i) => Interlocked.And(ref bits[i >> 6], ~(1UL << (int)(i & 63)));
    private static bool GetBit(ulong[] bits, long i) => (Volatile.Read(ref bits[i >> 6]) & (1UL << (int)(i & 63))) != 0;
    private static long CountBits(ulong[] bits)
    {
        long n = 0;
        foreach (var w in bits) n += System.Numerics.BitOperations.PopCount(w);
        return n;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public void Dispose()
    {
        _journal?.Dispose();
        _work?.Dispose();
        _lockFile?.Dispose();
        _cts.Dispose();
    }
}
