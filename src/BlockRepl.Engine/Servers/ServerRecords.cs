using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using BlockRepl.Core;
using BlockRepl.Storage;

namespace BlockRepl.Engine.Servers;

/// <summary>One replicated volume in a <see cref="ServerRecord"/>.</summary>
public sealed record ServerVolumeRecord
{
    public required string Name { get; init; }
    public required string Source { get; init; }
    public long SizeBytes { get; init; }
    /// <summary>MGN replication state of the volume (CONTINUOUS, INITIAL_SYNC, BACKLOG, RESCAN, STALLED, PAUSED, NOT_READY).</summary>
    public string? State { get; init; }
    public double? LagSeconds { get; init; }
    public long ReplicatedBytes { get; init; }
    public long BacklogBytes { get; init; }
}

/// <summary>
/// What a server says about itself in a target it replicates into (docs/servers.md §2): who it is, how its
/// replication goes, and its inventory. Published as a new write-once object each time.
/// </summary>
public sealed record ServerRecord
{
    /// <summary>The record format version this build writes and reads.</summary>
    public const int CurrentVersion = 1;

    public int Version { get; init; } = CurrentVersion;
    public required string ServerId { get; init; }
    /// <summary>The server's display name (its host name unless configured).</summary>
    public required string Name { get; init; }
    /// <summary>When the record was made; also the time in its key.</summary>
    public required DateTimeOffset Time { get; init; }
    /// <summary>The server's replication state, e.g. CONTINUOUS; null when it is not replicating (inventory only).</summary>
    public string? State { get; init; }
    public double? LagSeconds { get; init; }
    public DateTimeOffset? LastRecoveryPointTime { get; init; }
    public IReadOnlyList<ServerVolumeRecord> Volumes { get; init; } = [];
    public ServerInventory? Inventory { get; init; }

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, ServerJsonContext.Default.ServerRecord);

    /// <summary>Parses a record; <see cref="CorruptDataException"/> naming <paramref name="what"/> when it is not one.</summary>
    public static ServerRecord FromJson(ReadOnlySpan<byte> json, string what)
    {
        ServerRecord? r;
        try { r = JsonSerializer.Deserialize(json, ServerJsonContext.Default.ServerRecord); }
        catch (JsonException e) { throw new CorruptDataException(what, $"not a server record ({e.Message})"); }
        if (r is null) throw new CorruptDataException(what, "not a server record (null)");
        if (r.Version > CurrentVersion) throw new UnsupportedFormatException(what, r.Version, CurrentVersion);
        if (r.Version < 1) throw new CorruptDataException(what, $"version {r.Version}");
        return r;
    }
}

/// <summary>
/// The server records of a repository backend: <c>servers/&lt;serverId&gt;/&lt;yyyyMMddTHHmmssfffZ&gt;-&lt;4 hex&gt;.json</c>
/// (docs/servers.md). Objects are write-once: each update is a new object, and the older ones beyond the newest
/// <see cref="Keep"/> are deleted after it, so a reader always finds at least one whole record.
/// </summary>
public static class ServerRecords
{
    public const string Prefix = "servers/";

    /// <summary>Records kept per server after a publish.</summary>
    public const int Keep = 3;

    private const string TimeFormat = "yyyyMMdd'T'HHmmssfff'Z'";

    /// <summary>The key of a record of <paramref name="serverId"/> made at <paramref name="time"/>, with a random suffix.</summary>
    public static string KeyFor(string serverId, DateTimeOffset time) =>
        $"{Prefix}{serverId}/{time.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture)}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(2))}.json";

    /// <summary>Parses a record key into (server id, time); false for anything else under <c>servers/</c>.</summary>
    public static bool TryParseKey(string key, out string serverId, out DateTimeOffset time)
    {
        serverId = "";
        time = default;
        if (!key.StartsWith(Prefix, StringComparison.Ordinal)) return false;
        var parts = key[Prefix.Length..].Split('/');
        if (parts.Length != 2 || !ServerIdentity.IsValidId(parts[0])) return false;
        string name = parts[1];
        // 19 time characters (yyyyMMddTHHmmssfffZ), '-', 4 hex digits, ".json"
        if (name.Length != 19 + 1 + 4 + 5 || name[19] != '-' || !name.EndsWith(".json", StringComparison.Ordinal)
            || name.AsSpan(20, 4).IndexOfAnyExcept("0123456789abcdef") >= 0)
            return false;
        if (!DateTime.TryParseExact(name[..19], TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var t))
            return false;
        serverId = parts[0];
        time = new DateTimeOffset(t, TimeSpan.Zero);
        return true;
    }

    /// <summary>
    /// Writes <paramref name="record"/> as a new object (create-only), then deletes that server's older records
    /// beyond the newest <see cref="Keep"/>, never the one just written. Returns the new key. A crash between the
    /// two steps leaves extra records, which the next publish removes.
    /// </summary>
    public static async Task<string> PublishAsync(IBackend backend, ServerRecord record, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(record);
        if (!ServerIdentity.IsValidId(record.ServerId))
            throw new ArgumentException($"server id '{record.ServerId}' is not s- and 16 lower-case hex digits", nameof(record));
        byte[] json = record.ToJson();
        string key;
        for (int attempt = 0; ; attempt++)
        {
            key = KeyFor(record.ServerId, record.Time);
            try
            {
                await backend.PutAsync(key, json, ct).ConfigureAwait(false);
                break;
            }
            // Two records of one server in the same millisecond with the same 16-bit suffix: draw another.
            catch (ObjectExistsException) when (attempt < 8) { }
        }

        var keys = new List<string>();
        await foreach (var o in backend.ListAsync($"{Prefix}{record.ServerId}/", ct).ConfigureAwait(false))
            if (TryParseKey(o.Key, out _, out _)) keys.Add(o.Key);
        // Fixed-width UTC times: ordinal key order is time order, ties broken by the suffix.
        keys.Sort(StringComparer.Ordinal);
        foreach (string old in keys.Take(Math.Max(0, keys.Count - Keep)))
            if (old != key) await backend.DeleteAsync(old, ct).ConfigureAwait(false);
        return key;
    }

    /// <summary>
    /// The newest readable record of every server under <c>servers/</c> (by the time in the key, ties by key
    /// order), sorted by name then id. Unreadable records are skipped, each reported to
    /// <paramref name="onUnreadable"/> (key, error), and that server's next-newest record is used instead.
    /// </summary>
    public static async Task<List<ServerRecord>> ListLatestAsync(IBackend backend, CancellationToken ct = default, Action<string, Exception>? onUnreadable = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var byServer = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        await foreach (var o in backend.ListAsync(Prefix, ct).ConfigureAwait(false))
        {
            if (!TryParseKey(o.Key, out string id, out _)) continue;
            if (!byServer.TryGetValue(id, out var list)) byServer[id] = list = [];
            list.Add(o.Key);
        }
        var result = new List<ServerRecord>(byServer.Count);
        foreach (var (id, keys) in byServer)
        {
            keys.Sort(StringComparer.Ordinal);
            for (int i = keys.Count - 1; i >= 0; i--)
            {
                string key = keys[i];
                try
                {
                    var r = ServerRecord.FromJson(await backend.ReadAllAsync(key, ct).ConfigureAwait(false), $"server record {key}");
                    if (r.ServerId != id) throw new CorruptDataException($"server record {key}", $"it names server {r.ServerId}");
                    result.Add(r);
                    break;
                }
                // Deleted by a concurrent publish between list and read: an older one may also be gone, go on.
                catch (ObjectNotFoundException) { }
                catch (Exception e) when (e is CorruptDataException or UnsupportedFormatException or StorageException { Transient: false })
                {
                    onUnreadable?.Invoke(key, e);
                }
            }
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name) is var c && c != 0 ? c : string.CompareOrdinal(a.ServerId, b.ServerId));
        return result;
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(ServerRecord))]
[JsonSerializable(typeof(ServerInventory))]
[JsonSerializable(typeof(List<ServerRecord>))]
public sealed partial class ServerJsonContext : JsonSerializerContext;
