using System.Text.Json;
using System.Text.Json.Serialization;
using BlockRepl.Storage;

namespace BlockRepl.Daemon;

/// <summary>One volume's part of a server recovery point.</summary>
public sealed class ServerPointVolume
{
    public required string Name { get; init; }
    public required string Source { get; init; }
    public long SizeBytes { get; init; }
    /// <summary>The volume's recovery point in the repository (null when the server replicates to EBS only).</summary>
    public string? RecoveryPoint { get; init; }
    public string? EbsSnapshot { get; init; }
    public required string Mode { get; init; }
    /// <summary>The instant the volume's recovery point shows.</summary>
    public DateTimeOffset ViewTime { get; init; }
    /// <summary>True when it was read from a point-in-time view (a QEMU checkpoint, a reflink clone); false: fuzzy.</summary>
    public bool Consistent { get; init; }
    /// <summary>The view it was read from (<see cref="Engine.Sources.ViewKinds"/>); null in points written before views had names.</summary>
    public string? View { get; init; }
}

/// <summary>
/// A server recovery point: the recovery points of all its volumes from one cycle, published after all of them
/// are durable (docs/daemon.md §5). Stored as <c>points/SERVERID/CYCLE.json</c>, created once, never changed.
/// </summary>
public sealed class ServerPoint
{
    public int Version { get; init; } = 1;
    public required string Id { get; init; }
    public required string ServerId { get; init; }
    public required string Name { get; init; }
    /// <summary>The earliest instant any volume shows: the recovery point holds every write before it.</summary>
    public DateTimeOffset Time { get; init; }
    /// <summary>True when every volume was read from a point-in-time view; false marks the point fuzzy.</summary>
    public bool Consistent { get; init; }
    public List<ServerPointVolume> Volumes { get; init; } = [];
}

public static class ServerPoints
{
    public const string Prefix = "points/";

    public static string Key(string serverId, string id) => $"{Prefix}{serverId}/{id}.json";

    public static Task PublishAsync(IBackend backend, ServerPoint point, CancellationToken ct) =>
        backend.PutAsync(Key(point.ServerId, point.Id), JsonSerializer.SerializeToUtf8Bytes(point, PointJsonContext.Default.ServerPoint), ct).AsTask();

    /// <summary>The server's recovery points, oldest first (ids sort by time).</summary>
    public static async Task<List<ServerPoint>> ListAsync(IBackend backend, string serverId, CancellationToken ct)
    {
        var points = new List<ServerPoint>();
        await foreach (var o in backend.ListAsync($"{Prefix}{serverId}/", ct).ConfigureAwait(false))
        {
            try
            {
                var p = JsonSerializer.Deserialize(await backend.ReadAllAsync(o.Key, ct).ConfigureAwait(false), PointJsonContext.Default.ServerPoint);
                if (p is not null) points.Add(p);
            }
            catch (JsonException)
            {
                // An unreadable point is skipped: the volumes' own recovery points are still listed by `snapshots`.
            }
        }
        points.Sort((a, b) => string.CompareOrdinal(a.Id, b.Id));
        return points;
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ServerPoint))]
internal sealed partial class PointJsonContext : JsonSerializerContext;
