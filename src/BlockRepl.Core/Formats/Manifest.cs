using System.Text.Json;
using System.Text.Json.Serialization;

namespace BlockRepl.Core.Formats;

/// <summary>Figures of one backup run, stored in its manifest.</summary>
public sealed class ManifestStats
{
    public long ScannedBytes { get; set; }
    public long ZeroBytes { get; set; }
    /// <summary>Part of <see cref="ZeroBytes"/> skipped without reading (holes of sparse images).</summary>
    public long HoleBytes { get; set; }
    public long ChangedBytes { get; set; }
    public long NewBytes { get; set; }
    public long StoredBytes { get; set; }
    public long MetadataBytes { get; set; }
    public long ChangedChunks { get; set; }
    public long NewChunks { get; set; }
    public long ChangedBlocks { get; set; }
    public double Seconds { get; set; }
}

/// <summary>
/// A recovery point: immutable, written last, after every blob it references is durable.
/// Stored as JSON inside an <see cref="Envelope"/> with magic "BRSNAP".
/// </summary>
public sealed class Manifest
{
    public const ushort Version = 1;
    public static ReadOnlySpan<byte> Magic => "BRSNAP\0\0"u8;

    public required string Id { get; set; }
    public required DateTimeOffset Time { get; set; }
    public required string Host { get; set; }
    public required string Source { get; set; }
    /// <summary>Stable key of the source within a host (used to find the parent).</summary>
    public required string SourceKey { get; set; }
    public required long Size { get; set; }
    public required int ChunkSize { get; set; }
    public required int LeafFanout { get; set; }
    public required int NodeFanout { get; set; }
    /// <summary>Number of tree levels above the chunks (1 = the root is a leaf).</summary>
    public required int TreeLevels { get; set; }
    public required string Root { get; set; }
    public string? Parent { get; set; }
    /// <summary>FULL, INCREMENTAL or RESCAN.</summary>
    public required string Mode { get; set; }
    public string[] Tags { get; set; } = [];
    public ManifestStats Stats { get; set; } = new();

    public byte[] Serialize() => Envelope.Wrap(Magic, Version, JsonSerializer.SerializeToUtf8Bytes(this, FormatJsonContext.Default.Manifest));

    public static Manifest Deserialize(ReadOnlySpan<byte> file, string what)
    {
        var m = JsonEnvelope.Read(file, Magic, Version, FormatJsonContext.Default.Manifest, what);
        if ( m.Size < 0 || !ChunkGeometry.IsValidChunkSize(m.ChunkSize) || m.LeafFanout is <= 0 or > 65535 || m.NodeFanout is <= 1 or > 65535
            || m.TreeLevels != ChunkGeometry.TreeLevels(ChunkGeometry.ChunkCount(m.Size, m.ChunkSize), m.LeafFanout, m.NodeFanout))
            ThrowHelper.ThrowCorrupt(what, "invalid manifest fields");
        try { ChunkId.Parse(m.Root); }
        catch (FormatException) { ThrowHelper.ThrowCorrupt(what, "invalid root id"); }
        return m;
    }
}

/// <summary>Repository-wide settings, fixed at init. Stored as JSON in an envelope with magic "BRCONFIG".</summary>
public sealed class RepoConfig
{
    public const ushort Version = 1;
    public static ReadOnlySpan<byte> Magic => "BRCONFIG"u8;

    public required string RepoId { get; set; }
    public required int ChunkSize { get; set; }
    public required long PackTargetSize { get; set; }
    public required DateTimeOffset Created { get; set; }

    public byte[] Serialize() => Envelope.Wrap(Magic, Version, JsonSerializer.SerializeToUtf8Bytes(this, FormatJsonContext.Default.RepoConfig));

    public static RepoConfig Deserialize(ReadOnlySpan<byte> file, string what)
    {
        var c = JsonEnvelope.Read(file, Magic, Version, FormatJsonContext.Default.RepoConfig, what);
        if ( !ChunkGeometry.IsValidChunkSize(c.ChunkSize) || c.PackTargetSize < (1 << 20))
            ThrowHelper.ThrowCorrupt(what, "invalid config fields");
        return c;
    }
}

/// <summary>JSON payloads inside an <see cref="Envelope"/>: checked envelope, then a parse whose failure is corruption.</summary>
internal static class JsonEnvelope
{
    public static T Read<T>(ReadOnlySpan<byte> file, ReadOnlySpan<byte> magic, ushort version, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, string what)
        where T : class
    {
        var payload = Envelope.Unwrap(file, magic, version, what, out _);
        T? value = null;
        try { value = JsonSerializer.Deserialize(payload, type); }
        catch (JsonException e) { ThrowHelper.ThrowCorrupt(what, e.Message); }
        if (value is null) ThrowHelper.ThrowCorrupt(what, "empty payload");
        return value;
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = false, RespectNullableAnnotations = true)]
[JsonSerializable(typeof(Manifest))]
[JsonSerializable(typeof(RepoConfig))]
internal sealed partial class FormatJsonContext : JsonSerializerContext;
