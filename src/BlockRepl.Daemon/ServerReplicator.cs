using System.Diagnostics;
using System.Text.Json;
using BlockRepl.Core.Formats;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Storage.Ebs;
using Serilog;

namespace BlockRepl.Daemon;

/// <summary>
/// The continuous loop (docs/daemon.md §4): each cycle replicates every volume of the server in turn to the
/// repository and/or its EBS chain, then publishes one server recovery point naming the volumes' recovery points;
/// then it waits <see cref="DaemonConfig.Interval"/>. A failure makes the volume STALLED with its reason and the
/// loop backs off (1 s doubling to 60 s) and tries again; the targets' journals and change maps make the retry
/// resume rather than restart, so nothing acknowledged is sent twice and no rescan follows an outage.
/// </summary>
public sealed class ServerReplicator : IAsyncDisposable
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(60);

    private readonly DaemonConfig _config;
    private readonly ILogger _log;
    private readonly string _stateDir;
    private readonly Queue<(DateTimeOffset Time, double Rpo)> _rpoWindow = new();
    private Repo? _repo;
    private readonly Dictionary<string, IBlockSource> _tracked = [];
    // One limiter for every upload of the server: the cap is the server's, whatever the targets.
    private readonly Engine.Throttling.BandwidthLimiter? _limiter;
    private List<ServerPoint>? _points;
    private IEbsClient? _ebsClient;
    private JobProgress? _active;
    private VolumeStatus? _activeVolume;
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);

    public ServerStatus Status { get; }

    public ServerReplicator(DaemonConfig config, string serverId, ILogger log)
    {
        _config = config;
        _log = log;
        _stateDir = config.StateDirectory;
        if (config.BandwidthSchedule is { IsUnlimited: false } schedule) _limiter = new Engine.Throttling.BandwidthLimiter(schedule);
        Status = new ServerStatus
        {
            ServerId = serverId,
            Name = config.Name ?? Environment.MachineName,
            Volumes = [.. config.Volumes.Select(v => new VolumeStatus { Name = v.Name, Source = v.Source })],
        };
        LoadPersistedStatus();
    }

    private string StatusPath => Path.Combine(_stateDir, "daemon-status.json");

    /// <summary>After a restart the last recovery points and their times come back, so lag is right from the start.</summary>
    private void LoadPersistedStatus()
    {
        try
        {
            if (!File.Exists(StatusPath)) return;
            var old = ServerStatus.FromJson(File.ReadAllBytes(StatusPath));
            if (old is null || old.ServerId != Status.ServerId) return;
            Status.LastPoint = old.LastPoint;
            Status.LastPointTime = old.LastPointTime;
            foreach (var v in Status.Volumes)
            {
                var o = old.Volumes.FirstOrDefault(x => x.Name == v.Name && x.Source == v.Source);
                if (o is null) continue;
                (v.LastRecoveryPoint, v.LastEbsSnapshot, v.LastPointTime, v.LastMode, v.LastPointConsistent, v.View, v.TotalBytes) =
                    (o.LastRecoveryPoint, o.LastEbsSnapshot, o.LastPointTime, o.LastMode, o.LastPointConsistent, o.View, o.TotalBytes);
                if (v.LastPointTime is not null) v.ReplicatedBytes = v.TotalBytes;
            }
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            _log.Warning("Ignoring the saved status {Path}: {Error}", StatusPath, e.Message);
        }
    }

    /// <summary>Pauses after the cycle in progress (PAUSED), or resumes at once.</summary>
    public void SetPaused(bool paused)
    {
        lock (Status.Gate) Status.Paused = paused;
        _log.Information(paused ? "Replication paused" : "Replication resumed");
        _wake.Release();
    }

    /// <summary>Fills the in-flight fields (percent, ETA, backlog) from the running job; called by status readers.</summary>
    public void RefreshProgress()
    {
        var p = _active;
        var v = _activeVolume;
        if (p is null || v is null) return;
        long total = p.TotalBytes, done = p.DoneBytes;
        lock (Status.Gate)
        {
            if (p.Phase is "rescan" && v.State is ReplicationStates.Continuous or ReplicationStates.Backlog) v.State = ReplicationStates.Rescan;
            v.BacklogBytes = Math.Max(0, total - done);
            if (v.State == ReplicationStates.InitialSync && total > 0)
            {
                v.ReplicatedBytes = done;
                v.Percent = Math.Round(100.0 * done / total, 1);
                double elapsed = (DateTimeOffset.UtcNow - _activeStarted).TotalSeconds;
                v.EtaSeconds = done > 0 && elapsed > 1 ? Math.Round((total - done) * elapsed / done, 0) : null;
            }
        }
    }

    private DateTimeOffset _activeStarted;

    public async Task RunAsync(CancellationToken ct)
    {
        Directory.CreateDirectory(_stateDir);
        CleanUpAfterKill();
        var backoff = TimeSpan.FromSeconds(1);
        while (!ct.IsCancellationRequested)
        {
            bool paused;
            lock (Status.Gate) paused = Status.Paused;
            if (paused)
            {
                SetAll(ReplicationStates.Paused, null);
                SaveStatus();
                await WaitAsync(Timeout.InfiniteTimeSpan, ct).ConfigureAwait(false);
                continue;
            }
            bool ok;
            try { ok = await RunCycleAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { break; }
            catch (Exception e)
            {
                // Whatever failed after the volumes (publishing the point, retention, the record) leaves the earlier
                // points intact: the server is STALLED with the reason, and the loop backs off and tries again.
                string reason = ExitReason(e);
                SetAll(ReplicationStates.Stalled, reason);
                lock (Status.Gate) Status.Errors++;
                if (e is UserErrorException or IOException or Storage.StorageException) _log.Warning("STALLED: {Reason}", reason);
                else _log.Error(e, "STALLED: {Reason}", reason);
                await DropTargetsAsync().ConfigureAwait(false);
                ok = false;
            }
            if (ok) await MaybePruneAsync(ct).ConfigureAwait(false);
            SaveStatus();
            if (ct.IsCancellationRequested) break;
            TimeSpan wait = ok ? _config.IntervalSpan : backoff;
            backoff = ok ? TimeSpan.FromSeconds(1) : TimeSpan.FromTicks(Math.Min(MaxBackoff.Ticks, backoff.Ticks * 2));
            lock (Status.Gate) Status.NextCycleInSeconds = wait.TotalSeconds;
            await WaitAsync(wait, ct).ConfigureAwait(false);
            lock (Status.Gate) Status.NextCycleInSeconds = null;
        }
    }

    /// <summary>
    /// What a killed daemon (or backup) can leave behind: a filesystem still frozen (its record in the state directory)
    /// and clones next to the images. Thawed and removed before the first cycle.
    /// </summary>
    private void CleanUpAfterKill()
    {
        FilesystemFreeze.ThawStale(_stateDir, _log);
        foreach (var v in _config.Volumes)
        {
            if (QemuSource.IsQemu(v.Source) || NbdBlockSource.IsNbd(v.Source)) continue;
            try { PointInTime.RemoveStaleClones(PointInTime.CloneDirectory(v.Source), _log); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _log.Warning("{Volume}: cannot look for stale clones: {Error}", v.Name, e.Message);
            }
        }
    }

    private async Task WaitAsync(TimeSpan wait, CancellationToken ct)
    {
        try { await _wake.WaitAsync(wait, ct).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
    }

    private void SetAll(string state, string? reason)
    {
        lock (Status.Gate)
            foreach (var v in Status.Volumes)
            {
                v.State = state;
                v.Reason = reason;
            }
    }

    /// <summary>A cycle waits this long for a prune by another process, then is STALLED with the holder named and backs off.</summary>
    private static readonly LockOptions s_cycleLocks = LockOptions.Default with { WaitForExclusive = TimeSpan.FromSeconds(30) };

    /// <summary>One cycle over every volume; false when a volume failed (the loop then backs off).</summary>
    private async Task<bool> RunCycleAsync(CancellationToken ct)
    {
        // One shared lock for the whole cycle (volumes, the server point, retention): no prune runs in between.
        var repo = await RepoAsync(ct).ConfigureAwait(false);
        await using var held = repo is null ? null : await repo.LockSharedAsync(s_cycleLocks, _log, ct).ConfigureAwait(false);
        string cycleId = $"{DateTimeOffset.UtcNow:yyyyMMdd'T'HHmmss'Z'}-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(3))}";
        var points = new List<ServerPointVolume>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        DateTimeOffset? oldestView = null;
        bool consistent = true;
        foreach (var volume in Status.Volumes)
        {
            if (ct.IsCancellationRequested) return false;
            var config = _config.Volumes.First(v => v.Name == volume.Name);
            try
            {
                var r = await ReplicateVolumeAsync(config, volume, cycleId, ct).ConfigureAwait(false);
                points.Add(r);
                oldestView = oldestView is null || r.ViewTime < oldestView ? r.ViewTime : oldestView;
                consistent &= r.Consistent;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                _log.Information("{Volume}: interrupted; the next start resumes", volume.Name);
                return false;
            }
            catch (Exception e)
            {
                string reason = ExitReason(e);
                lock (Status.Gate)
                {
                    volume.State = ReplicationStates.Stalled;
                    volume.Reason = reason;
                    volume.Errors++;
                    volume.LastError = reason;
                    Status.Errors++;
                }
                if (e is not (UserErrorException or IOException or EbsException or Storage.StorageException or Nbd.NbdException or Qemu.QmpException))
                    _log.Error(e, "{Volume}: STALLED: {Reason}", volume.Name, reason);
                else _log.Warning("{Volume}: STALLED: {Reason}", volume.Name, reason);
                await DropTargetsAsync().ConfigureAwait(false);
                return false;
            }
        }

        // Every volume has its recovery point: the server's recovery point names them all, and only now exists.
        var point = new ServerPoint
        {
            Id = cycleId,
            ServerId = Status.ServerId,
            Name = Status.Name,
            Time = oldestView ?? DateTimeOffset.UtcNow,
            Consistent = consistent,
            Volumes = points,
        };
        long volumesMs = clock.ElapsedMilliseconds;
        if (_repo is not null)
        {
            await ServerPoints.PublishAsync(_repo.Backend, point, ct).ConfigureAwait(false);
            // The server's points are listed once per repository opening and then kept in memory.
            _points ??= await ServerPoints.ListAsync(_repo.Backend, Status.ServerId, ct).ConfigureAwait(false);
            if (!_points.Any(p => p.Id == point.Id)) _points.Add(point);
            try
            {
                int dropped = await _config.Retention.ApplyAsync(_repo, _points, DateTimeOffset.UtcNow, ct).ConfigureAwait(false);
                if (dropped > 0) _log.Debug("Retention dropped {Count} server recovery point(s)", dropped);
            }
            catch (Exception e) when (e is IOException or Storage.StorageException)
            {
                // Harmless: the next cycle tries again; nothing kept was touched.
                _log.Warning("Retention: {Error}", e.Message);
                _points = null;
            }
        }
        var now = DateTimeOffset.UtcNow;
        lock (Status.Gate)
        {
            if (Status.LastPointTime is { } previous)
            {
                _rpoWindow.Enqueue((now, (now - previous).TotalSeconds));
                while (_rpoWindow.Count > 0 && now - _rpoWindow.Peek().Time > TimeSpan.FromHours(1)) _rpoWindow.Dequeue();
                Status.AchievedRpoSeconds = Math.Round(_rpoWindow.Max(x => x.Rpo), 3);
            }
            Status.LastPoint = cycleId;
            Status.LastPointTime = point.Time;
            Status.Cycles++;
        }
        Status.Refresh(now);
        long pointMs = clock.ElapsedMilliseconds;
        await PublishRecordAsync(ct).ConfigureAwait(false);
        _log.Debug("Cycle {Cycle}: volumes {Volumes} ms, server point and retention {Point} ms, record {Record} ms",
            cycleId, volumesMs, pointMs - volumesMs, clock.ElapsedMilliseconds - pointMs);
        return true;
    }

    private DateTimeOffset? _nextPrune;
    private string PrunePath => Path.Combine(_stateDir, "last-prune");

    /// <summary>
    /// Between cycles, every <see cref="DaemonConfig.PruneEvery"/> (counted from the last prune this server ran, kept in
    /// the state directory): prune the repository under its exclusive lock (docs/daemon.md §5). When another process
    /// holds a lock (another server's cycle, a backup) the prune is skipped and tried again in an hour; a failed prune
    /// is logged and never stops replication.
    /// </summary>
    private async Task MaybePruneAsync(CancellationToken ct)
    {
        if (_config.PruneEvery is not { } every || _repo is null) return;
        var now = DateTimeOffset.UtcNow;
        if (_nextPrune is null)
        {
            DateTimeOffset last = now;
            try
            {
                if (File.Exists(PrunePath)) last = DateTimeOffset.Parse(File.ReadAllText(PrunePath).Trim(), System.Globalization.CultureInfo.InvariantCulture);
                else SavePruneTime(now);
            }
            catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException) { SavePruneTime(now); }
            _nextPrune = last + every;
        }
        if (now < _nextPrune) return;
        var options = new PruneOptions
        {
            MaxRepackWaste = _config.PruneMaxRepackWaste,
            Locks = LockOptions.Default with { RemoveStale = _config.PruneRemoveStaleLocks },
        };
        try
        {
            _log.Information("Pruning {Repo}", _repo.Location);
            var r = await new PruneJob(_repo, options, _log).RunAsync(ct).ConfigureAwait(false);
            _log.Information("Prune: {Deleted} pack(s) deleted, {Repacked} repacked, {Reclaimed} bytes reclaimed in {Seconds:0.0} s",
                r.DeletedPacks.Count, r.RepackedPacks.Count, r.BytesReclaimed, r.Seconds);
            SavePruneTime(now);
            _nextPrune = now + every;
        }
        catch (RepositoryLockedException e)
        {
            _log.Information("Prune skipped: {Reason}; trying again in an hour", e.Message);
            _nextPrune = now + TimeSpan.FromTicks(Math.Min(every.Ticks, TimeSpan.FromHours(1).Ticks));
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        catch (Exception e) when (e is UserErrorException or IOException or Storage.StorageException or Core.CorruptDataException or Core.UnsupportedFormatException)
        {
            // Nothing was lost (prune leaves the repository whole at every step); replication goes on.
            _log.Warning("Prune failed: {Error}; trying again in {Every}", ExitReason(e), every);
            _nextPrune = now + every;
        }
    }

    private void SavePruneTime(DateTimeOffset time)
    {
        try
        {
            string tmp = PrunePath + ".tmp";
            File.WriteAllText(tmp, time.ToString("O", System.Globalization.CultureInfo.InvariantCulture));
            File.Move(tmp, PrunePath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Warning("Cannot save the prune time to {Path}: {Error}", PrunePath, e.Message);
        }
    }

    private DateTimeOffset _recordPublished, _inventoryTime;
    private string? _recordState;
    private Engine.Servers.ServerInventory? _inventory;

    /// <summary>
    /// Keeps the server's record in the repository current (docs/servers.md) for `blockrepl fleet`: at most every
    /// 30 s, or at once when the state changed; the inventory is collected again every hour.
    /// </summary>
    private async Task PublishRecordAsync(CancellationToken ct)
    {
        if (_repo is null) return;
        var now = DateTimeOffset.UtcNow;
        if (_recordState == Status.State && now - _recordPublished < TimeSpan.FromSeconds(30)) return;
        if (_inventory is null || now - _inventoryTime > TimeSpan.FromHours(1))
        {
            _inventory = Engine.Servers.ServerInventory.Collect();
            _inventoryTime = now;
        }
        Engine.Servers.ServerRecord record;
        lock (Status.Gate)
        {
            record = new Engine.Servers.ServerRecord
            {
                ServerId = Status.ServerId,
                Name = Status.Name,
                Time = now,
                State = Status.State,
                LagSeconds = Status.LagSeconds,
                LastRecoveryPointTime = Status.LastPointTime,
                Volumes = [.. Status.Volumes.Select(v => new Engine.Servers.ServerVolumeRecord
                {
                    Name = v.Name, Source = v.Source, SizeBytes = v.TotalBytes, State = v.State, LagSeconds = v.LagSeconds,
                    ReplicatedBytes = v.ReplicatedBytes, BacklogBytes = v.BacklogBytes,
                })],
                Inventory = _inventory,
            };
        }
        try
        {
            await Engine.Servers.ServerRecords.PublishAsync(_repo.Backend, record, ct).ConfigureAwait(false);
            (_recordPublished, _recordState) = (now, record.State);
        }
        catch (Exception e) when (e is IOException or Storage.StorageException)
        {
            _log.Warning("Cannot publish the server record: {Error}", e.Message);
        }
    }

    private static string ExitReason(Exception e) => e switch
    {
        AggregateException { InnerException: { } i } => ExitReason(i),
        _ => e.Message.ReplaceLineEndings(" "),
    };

    private async Task<Repo?> RepoAsync(CancellationToken ct)
    {
        if (_config.Repository is null) return null;
        if (_repo is null)
        {
            var (repo, created) = await RepositoryLocator.OpenOrInitAsync(_config.Repository, ChunkGeometry.DefaultChunkSize, ct, _config.EndpointUrl, null,
                _limiter is null ? null : b => new Storage.ThrottledBackend(b, _limiter)).ConfigureAwait(false);
            if (created) _log.Information("Created repository {Repo}", repo.Location);
            _repo = repo;
        }
        return _repo;
    }

    /// <summary>After a failure the repository is opened afresh (its index may hold what the failed run claimed).</summary>
    private async Task DropTargetsAsync()
    {
        // After a failure everything is set up again: a broken QMP or NBD connection must not outlive it.
        foreach (var kept in _tracked.Values)
        {
            try { kept.Dispose(); }
            catch (Exception e) when (e is IOException or Qemu.QmpException or Nbd.NbdException or SourceException) { }
        }
        _tracked.Clear();
        if (_repo is not null)
        {
            _points = null;
            try { await _repo.DisposeAsync().ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or Storage.StorageException) { }
            _repo = null;
        }
    }

    private async Task<ServerPointVolume> ReplicateVolumeAsync(VolumeConfig config, VolumeStatus volume, string cycleId, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var repo = await RepoAsync(ct).ConfigureAwait(false);
        if (_config.Ebs is not null && _ebsClient is null)
        {
            _ebsClient = EbsTargets.CreateClient(EbsTargets.Region(_config.Ebs), _config.EbsEndpointUrl, _config.Profile);
            if (_limiter is not null) _ebsClient = new ThrottledEbsClient(_ebsClient, _limiter);
        }

        // A tracked (QEMU) source stays open between cycles: its QMP connection, NBD server and, for qcow2:, its
        // qemu-storage-daemon are set up once, so a cycle costs only its checkpoint. Files and devices are opened
        // afresh each cycle (cheap, and a resized image is seen at once), an image file as a reflink clone where
        // its filesystem makes them. The view is taken after this instant, so the point holds every write before it.
        var viewTime = DateTimeOffset.UtcNow;
        IBlockSource source;
        string view;
        if (_tracked.TryGetValue(config.Name, out var kept))
        {
            source = kept;
            view = ViewKinds.QemuCheckpoint;
        }
        else
        {
            var opened = PointInTime.Open(config.Source, config.PointInTimeMode, config.Freeze, _stateDir, _log);
            source = opened.Source;
            view = opened.View;
            if (source is ITrackedSource) _tracked[config.Name] = source;
            NoteView(volume, opened.FuzzyReason, config.PointInTimeMode);
        }
        using var perCycle = source is ITrackedSource ? null : source;
        // Decided here once per cycle, so a source that cannot bypass the page cache (NBD, QEMU, some filesystems)
        // is read buffered with DONTNEED after each read, without a warning every cycle.
        bool direct = _config.DirectIo && source.TryEnableDirectIo();
        // Without a checkpoint or a clone the read sees the volume changing under it: the point is fuzzy.
        bool consistent = view != ViewKinds.None;
        bool first;
        lock (Status.Gate)
        {
            first = volume.LastPointTime is null;
            volume.TotalBytes = source.Size;
            volume.State = first ? ReplicationStates.InitialSync
                : volume.State == ReplicationStates.Stalled && volume.LastMode is null ? ReplicationStates.InitialSync
                : (DateTimeOffset.UtcNow - volume.LastPointTime!.Value) > 3 * (_config.IntervalSpan + TimeSpan.FromSeconds(5)) ? ReplicationStates.Backlog
                : ReplicationStates.Continuous;
            volume.Reason = null;
        }

        using var ebs = _ebsClient is null ? null
            : new EbsReplicator(_ebsClient, new EbsTargetOptions { Host = Status.ServerId, Description = $"blockrepl {Status.Name} {config.Name}" }, _stateDir, _log);
        var options = new BackupOptions
        {
            StateDir = _stateDir,
            Workers = _config.Workers,
            DirectIo = direct,
            DropSourceCache = true,
            Host = Status.ServerId,
            Tags = [$"server:{Status.ServerId}", $"volume:{config.Name}", $"cycle:{cycleId}", .. consistent ? Array.Empty<string>() : ["fuzzy"]],
            Observer = ebs,
        };
        var (result, ebsResult) = await ReplicationRun.RunAsync(source, repo, options, ebs, p =>
        {
            Track(p, volume);
            return null;
        }, _log, ct).ConfigureAwait(false);
        _active = null;
        _activeVolume = null;

        string mode = result?.Manifest.Mode ?? ebsResult!.Mode;
        long read = result?.Manifest.Stats.ScannedBytes ?? ebsResult!.ScannedBytes;
        double seconds = clock.Elapsed.TotalSeconds;
        lock (Status.Gate)
        {
            volume.State = ReplicationStates.Continuous;
            volume.Reason = mode == "RESCAN" ? $"last cycle was a RESCAN: {result?.RescanReason ?? ebsResult?.RescanReason}" : null;
            if (mode == "RESCAN") volume.RescannedBytes += read;
            volume.LastMode = mode;
            volume.LastRecoveryPoint = result?.Manifest.Id ?? volume.LastRecoveryPoint;
            volume.LastEbsSnapshot = ebsResult?.SnapshotId ?? volume.LastEbsSnapshot;
            volume.LastPointTime = viewTime;
            volume.LastPointConsistent = consistent;
            volume.View = view;
            volume.ReplicatedBytes = volume.TotalBytes;
            volume.BacklogBytes = 0;
            volume.Percent = null;
            volume.EtaSeconds = null;
            volume.ChangedBytesLastCycle = result?.Manifest.Stats.ChangedBytes ?? ebsResult!.BytesPut;
            volume.LastCycleSeconds = Math.Round(seconds, 3);
            volume.ThroughputBytesPerSecond = seconds > 0 ? Math.Round(read / seconds) : 0;
            volume.Cycles++;
        }
        _log.Debug("{Volume}: {Mode} in {Seconds:0.00} s, {Changed} bytes changed", config.Name, mode, seconds, volume.ChangedBytesLastCycle);
        return new ServerPointVolume
        {
            Name = config.Name,
            Source = source.SourceKey,
            SizeBytes = source.Size,
            RecoveryPoint = result?.Manifest.Id,
            EbsSnapshot = ebsResult?.SnapshotId,
            Mode = mode,
            ViewTime = viewTime,
            Consistent = consistent,
            View = view,
        };
    }

    private readonly Dictionary<string, string?> _viewNoted = [];

    /// <summary>Why a volume is read fuzzy goes into its status every cycle, and into the log once (again only when it changes).</summary>
    private void NoteView(VolumeStatus volume, string? fuzzyReason, PointInTimeMode mode)
    {
        lock (Status.Gate) volume.ViewNote = fuzzyReason;
        if (_viewNoted.TryGetValue(volume.Name, out var noted) && noted == fuzzyReason) return;
        _viewNoted[volume.Name] = fuzzyReason;
        if (fuzzyReason is null) return;
        if (mode == PointInTimeMode.None) _log.Information("{Volume}: read live (pointInTime none); its recovery points are fuzzy", volume.Name);
        else _log.Warning("{Volume}: no point-in-time view: {Reason}; its recovery points are fuzzy", volume.Name, fuzzyReason);
    }

    private void Track(JobProgress progress, VolumeStatus volume)
    {
        _activeStarted = DateTimeOffset.UtcNow;
        _activeVolume = volume;
        _active = progress;
    }

    /// <summary>Writes the status for `blockrepl status` without the HTTP endpoint, and for the next start.</summary>
    public void SaveStatus()
    {
        Status.Refresh(DateTimeOffset.UtcNow);
        try
        {
            string tmp = StatusPath + ".tmp";
            File.WriteAllBytes(tmp, Status.ToJson());
            File.Move(tmp, StatusPath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Warning("Cannot save the status to {Path}: {Error}", StatusPath, e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await DropTargetsAsync().ConfigureAwait(false);
        _ebsClient?.Dispose();
        _limiter?.Dispose();
        _wake.Dispose();
    }
}
