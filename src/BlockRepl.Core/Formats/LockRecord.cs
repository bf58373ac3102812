using System.Text.Json;
using System.Text.Json.Serialization;

namespace BlockRepl.Core.Formats;

/// <summary>What a <see cref="LockRecord"/> stands for (docs/format.md §8).</summary>
public enum LockKind
{
    /// <summary>A writer (backup, copy, a daemon cycle): many may hold one at once; prune may not run.</summary>
    [JsonStringEnumMemberName("shared")] Shared,
    /// <summary>Prune: nobody else may hold a lock while it runs.</summary>
    [JsonStringEnumMemberName("exclusive")] Exclusive,
    /// <summary>Not a lock: the mark a prune leaves before it deletes anything, so writers reload their index.</summary>
    [JsonStringEnumMemberName("pruned")] Pruned,
}

/// <summary>
/// A repository lock, <c>locks/&lt;id&gt;</c>: who holds it and since when, JSON in an <see cref="Envelope"/> with magic
/// "BRLOCK". Written create-only and never changed: a refresh writes a new record with a later
/// <see cref="Refreshed"/> and deletes the old one.
/// </summary>
public sealed class LockRecord
{
    public const ushort Version = 1;
    public static ReadOnlySpan<byte> Magic => "BRLOCK\0\0"u8;

    public required string Host { get; set; }
    public required int Pid { get; set; }
    [JsonConverter(typeof(JsonStringEnumConverter<LockKind>))]
    public required LockKind Kind { get; set; }
    /// <summary>When the holder first took the lock.</summary>
    public required DateTimeOffset Created { get; set; }
    /// <summary>When this record was written (the holder refreshes its lock by writing a new record).</summary>
    public required DateTimeOffset Refreshed { get; set; }

    /// <summary>
    /// True when the holder has not refreshed it for <paramref name="staleAfter"/>, or when it was taken on this host
    /// (<paramref name="localHost"/>) by a process that no longer exists (<paramref name="processAlive"/>).
    /// A <see cref="LockKind.Pruned"/> mark is never stale: it is not a lock.
    /// </summary>
    public bool IsStale(DateTimeOffset now, TimeSpan staleAfter, string localHost, Func<int, bool> processAlive)
    {
        if (Kind == LockKind.Pruned) return false;
        if (now - Refreshed > staleAfter) return true;
        return string.Equals(Host, localHost, StringComparison.Ordinal) && !processAlive(Pid);
    }

    public byte[] Serialize() => Envelope.Wrap(Magic, Version, JsonSerializer.SerializeToUtf8Bytes(this, LockJsonContext.Default.LockRecord));

    public static LockRecord Deserialize(ReadOnlySpan<byte> file, string what)
    {
        var r = JsonEnvelope.Read(file, Magic, Version, LockJsonContext.Default.LockRecord, what);
        if (string.IsNullOrEmpty(r.Host) || r.Pid <= 0 || !Enum.IsDefined(r.Kind))
            ThrowHelper.ThrowCorrupt(what, "invalid lock fields");
        return r;
    }

    /// <summary>"HOST pid N since T": how errors and warnings name a holder.</summary>
    public override string ToString() => $"{Host} pid {Pid} since {Created.UtcDateTime:yyyy-MM-dd HH:mm:ss}Z";
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = false, RespectNullableAnnotations = true)]
[JsonSerializable(typeof(LockRecord))]
internal sealed partial class LockJsonContext : JsonSerializerContext;
