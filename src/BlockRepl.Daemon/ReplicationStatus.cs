using System.Text.Json;
using System.Text.Json.Serialization;

namespace BlockRepl.Daemon;

/// <summary>Replication states, as AWS MGN / Elastic Disaster Recovery name them (docs/daemon.md §3).</summary>
public static class ReplicationStates
{
    public const string NotReady = "NOT_READY";
    public const string InitialSync = "INITIAL_SYNC";
    public const string Continuous = "CONTINUOUS";
    public const string Backlog = "BACKLOG";
    public const string Rescan = "RESCAN";
    public const string Stalled = "STALLED";
    public const string Paused = "PAUSED";

    /// <summary>The server's state is its most pressing volume's: STALLED before PAUSED before RESCAN …</summary>
    public static int Severity(string state) => state switch
    {
        Stalled => 6,
        Paused => 5,
        Rescan => 4,
        InitialSync => 3,
        Backlog => 2,
        NotReady => 1,
        _ => 0,
    };
}

/// <summary>One volume's replication, as `blockrepl status` and the metrics show it.</summary>
public sealed class VolumeStatus
{
    public required string Name { get; init; }
    public required string Source { get; init; }
    public string State { get; set; } = ReplicationStates.NotReady;
    /// <summary>Why the volume is STALLED (or why the last cycle was a RESCAN).</summary>
    public string? Reason { get; set; }
    public long TotalBytes { get; set; }
    /// <summary>Bytes of the volume the target holds: during the initial sync what has been read so far, then all of it.</summary>
    public long ReplicatedBytes { get; set; }
    /// <summary>Bytes the current cycle still has to read (changed ranges of a tracked source, else the rest of the volume).</summary>
    public long BacklogBytes { get; set; }
    /// <summary>Bytes read by RESCAN cycles since the daemon started.</summary>
    public long RescannedBytes { get; set; }
    public double? Percent { get; set; }
    public double? EtaSeconds { get; set; }
    public string? LastRecoveryPoint { get; set; }
    public string? LastEbsSnapshot { get; set; }
    public string? LastMode { get; set; }
    /// <summary>The instant the last recovery point shows (the checkpoint of a tracked source, else the start of its read).</summary>
    public DateTimeOffset? LastPointTime { get; set; }
    /// <summary>False when the source gave no point-in-time view: the recovery point was read while the volume changed.</summary>
    public bool? LastPointConsistent { get; set; }
    /// <summary>The view the last cycle read (qemu-checkpoint, reflink, reflink+fsfreeze, none).</summary>
    public string? View { get; set; }
    /// <summary>Why the volume has no point-in-time view (its points are fuzzy), e.g. its filesystem cannot make reflink clones.</summary>
    public string? ViewNote { get; set; }
    public double? LagSeconds { get; set; }
    public long ChangedBytesLastCycle { get; set; }
    public double LastCycleSeconds { get; set; }
    public double ThroughputBytesPerSecond { get; set; }
    public long Cycles { get; set; }
    public long Errors { get; set; }
    public string? LastError { get; set; }
}

/// <summary>The server's replication as a whole; one lock guards every field (updates are rare and small).</summary>
public sealed class ServerStatus
{
    public required string ServerId { get; init; }
    public required string Name { get; init; }
    public string State { get; set; } = ReplicationStates.NotReady;
    /// <summary>NOT_READY until every volume has a recovery point, then READY_FOR_TEST (like MGN's lifecycle).</summary>
    public string Lifecycle { get; set; } = "NOT_READY";
    public DateTimeOffset Started { get; init; } = DateTimeOffset.UtcNow;
    public bool Paused { get; set; }
    public long Cycles { get; set; }
    public long Errors { get; set; }
    public string? LastPoint { get; set; }
    public DateTimeOffset? LastPointTime { get; set; }
    public double? LagSeconds { get; set; }
    /// <summary>The largest lag just before a recovery point replaced the previous one, over the last hour.</summary>
    public double? AchievedRpoSeconds { get; set; }
    public double? NextCycleInSeconds { get; set; }
    public List<VolumeStatus> Volumes { get; init; } = [];

    [JsonIgnore] public Lock Gate { get; } = new();

    /// <summary>Refreshes derived fields (lags, server state) under the lock; call before reading.</summary>
    public void Refresh(DateTimeOffset now)
    {
        lock (Gate)
        {
            foreach (var v in Volumes)
                v.LagSeconds = v.LastPointTime is { } t ? Math.Round((now - t).TotalSeconds, 3) : null;
            LagSeconds = LastPointTime is { } p ? Math.Round((now - p).TotalSeconds, 3) : null;
            State = Volumes.Count == 0 ? ReplicationStates.NotReady
                : Volumes.MaxBy(v => ReplicationStates.Severity(v.State))!.State;
            Lifecycle = Volumes.Count > 0 && Volumes.All(v => v.LastRecoveryPoint is not null || v.LastEbsSnapshot is not null) ? "READY_FOR_TEST" : "NOT_READY";
        }
    }

    public byte[] ToJson()
    {
        lock (Gate) return JsonSerializer.SerializeToUtf8Bytes(this, StatusJsonContext.Default.ServerStatus);
    }

    public static ServerStatus? FromJson(ReadOnlySpan<byte> json) => JsonSerializer.Deserialize(json, StatusJsonContext.Default.ServerStatus);
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ServerStatus))]
internal sealed partial class StatusJsonContext : JsonSerializerContext;
