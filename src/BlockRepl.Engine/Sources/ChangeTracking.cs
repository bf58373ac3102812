using BlockRepl.Engine.Jobs;

namespace BlockRepl.Engine.Sources;

/// <summary>A byte range of a volume.</summary>
public readonly record struct ByteRange(long Offset, long Length)
{
    public long End => Offset + Length;
}

/// <summary>
/// A source that records which ranges change between checkpoints (QEMU persistent dirty bitmaps, docs/tracking.md),
/// so an incremental reads only those. Each target remembers the checkpoint its block map was taken at; a run
/// asks for the changes since the oldest of them, reads a point-in-time view fixed by the new checkpoint, and
/// the targets record the new one.
/// </summary>
/// <remarks>
/// Sequence: <see cref="BeginCheckpointAsync"/> before the first read, then either <see cref="CommitCheckpointAsync"/> once
/// every target has recorded the new checkpoint durably, or <see cref="AbortCheckpointAsync"/> (also what disposing does
/// without a commit). Nothing the source recorded is dropped before a commit, so a failed or killed run leaves
/// every change to be found again by the next one.
/// </remarks>
public interface ITrackedSource : IBlockSource
{
    /// <summary>
    /// Fixes the point in time this run reads and starts recording the changes after it. <paramref name="bases"/>
    /// are the checkpoints the targets' maps were taken at (null: the target has none). The answer lists the
    /// ranges changed since all of them, rounded out to <paramref name="alignment"/> (the coarsest unit a target
    /// compares: 512 KiB for an EBS chain, the chunk size for a repository), or null with the reason when the
    /// source cannot tell (then every range must be read and compared by hash).
    /// </summary>
    Task<ChangeSet> BeginCheckpointAsync(IReadOnlyList<string?> bases, int alignment, CancellationToken ct);

    /// <summary>Every target recorded <see cref="ChangeSet.Checkpoint"/>: retires what the new checkpoint supersedes.</summary>
    Task CommitCheckpointAsync(CancellationToken ct);

    /// <summary>The run failed: releases the point-in-time view and keeps every recorded change.</summary>
    Task AbortCheckpointAsync();
}

/// <summary>What <see cref="ITrackedSource.BeginCheckpointAsync"/> answered.</summary>
/// <param name="Checkpoint">The new checkpoint; targets record it with their map.</param>
/// <param name="Changed">Changed ranges since the bases, sorted, not overlapping, on the asked alignment; null when unknown.</param>
/// <param name="LossReason">Why <paramref name="Changed"/> is null when a base was given (tracking lost), else null.</param>
public sealed record ChangeSet(string Checkpoint, IReadOnlyList<ByteRange>? Changed, string? LossReason);

/// <summary>
/// What one run reads: every data range of the source, or only the changed ranges a tracked source reported.
/// </summary>
public sealed class ReadPlan
{
    private ReadPlan(IReadOnlyList<ByteRange>? ranges, string? checkpoint, string? lossReason, int alignment = SourceReader.BatchAlignment)
    {
        Ranges = ranges;
        Alignment = alignment;
        Checkpoint = checkpoint;
        LossReason = lossReason;
        foreach (var r in ranges ?? []) PlannedBytes += r.Length;
    }

    /// <summary>Every range (holes skipped); unvisited ranges read as zeros.</summary>
    public static ReadPlan Full { get; } = new(null, null, null);

    /// <summary>The changed ranges only (holes inside them are passed on as zeros); unvisited ranges are unchanged.</summary>
    public IReadOnlyList<ByteRange>? Ranges { get; }
    public bool ChangedOnly => Ranges is not null;
    /// <summary>What changed ranges are rounded to: a power of two dividing 512 KiB.</summary>
    public int Alignment { get; }
    /// <summary>Bytes the changed ranges cover (0 for a full read).</summary>
    public long PlannedBytes { get; }
    /// <summary>The checkpoint targets record with their maps (null for an untracked source).</summary>
    public string? Checkpoint { get; }
    /// <summary>Why a tracked source had to be read in full although a target had a base: reported as RESCAN.</summary>
    public string? LossReason { get; }

    /// <summary>
    /// Begins the checkpoint of a tracked source for targets whose maps were taken at <paramref name="bases"/>.
    /// <paramref name="mapsUsable"/> is false when some target has no map to compare with (a first or a rescanning
    /// run): then everything is read whatever the source reports. Untracked sources are always read in full.
    /// </summary>
    public static async Task<ReadPlan> BeginAsync(IBlockSource source, IReadOnlyList<string?> bases, bool mapsUsable, int alignment, CancellationToken ct)
    {
        if (source is not ITrackedSource tracked) return Full;
        if (alignment <= 0 || alignment > SourceReader.BatchAlignment || SourceReader.BatchAlignment % alignment != 0)
            throw new ArgumentOutOfRangeException(nameof(alignment), alignment, "a power of two up to 512 KiB");
        var changes = await tracked.BeginCheckpointAsync(bases, alignment, ct).ConfigureAwait(false);
        return changes.Changed is not null && mapsUsable
            ? new ReadPlan(changes.Changed, changes.Checkpoint, null, alignment)
            : new ReadPlan(null, changes.Checkpoint, changes.LossReason);
    }

    /// <summary>
    /// Why a target whose map was usable is nevertheless rescanned by this plan, or null: the source lost track of
    /// changes, or the target recorded no checkpoint (<paramref name="targetBase"/> null). Null for untracked sources.
    /// </summary>
    public string? RescanReason(string? targetBase) =>
        Checkpoint is null || ChangedOnly ? null
        : LossReason ?? (targetBase is null ? "no change-tracking checkpoint is recorded with the last run's block map" : null);
}

/// <summary>
/// Runs the targets of one read of a source: for a tracked source the new checkpoint is committed only when every
/// target recorded it; on any failure the source keeps every recorded change for the next run.
/// </summary>
public static class TrackedRun
{
    public static async Task<T> RunAsync<T>(IBlockSource source, Func<Task<T>> run, CancellationToken ct)
    {
        if (source is not ITrackedSource tracked) return await run().ConfigureAwait(false);
        T result;
        try { result = await run().ConfigureAwait(false); }
        catch
        {
            await tracked.AbortCheckpointAsync().ConfigureAwait(false);
            throw;
        }
        await tracked.CommitCheckpointAsync(ct).ConfigureAwait(false);
        return result;
    }
}

/// <summary>
/// The side file next to a target's block map naming the change-tracking checkpoint the map was taken at
/// (docs/tracking.md §3): <c>{"checkpoint": "...", "snapshot": "..."}</c>. It is written after the map and counts
/// only while <c>snapshot</c> is the map's own recovery point, so a crash between the two never pairs a map with
/// a later checkpoint than its own.
/// </summary>
internal static class TrackingRecord
{
    public const string Extension = ".cbt";

    public static string? Read(string path, string mapSnapshot)
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            var root = doc.RootElement;
            return root.TryGetProperty("snapshot", out var s) && s.GetString() == mapSnapshot
                && root.TryGetProperty("checkpoint", out var c) ? c.GetString() : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    public static void Write(string path, string checkpoint, string mapSnapshot) =>
        Ebs.StateFile.WriteAtomically(path, s =>
        {
            using var w = new System.Text.Json.Utf8JsonWriter(s);
            w.WriteStartObject();
            w.WriteNumber("version", 1);
            w.WriteString("checkpoint", checkpoint);
            w.WriteString("snapshot", mapSnapshot);
            w.WriteEndObject();
        });
}
