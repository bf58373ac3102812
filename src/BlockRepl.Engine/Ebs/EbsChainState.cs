using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using BlockRepl.Native.Linux;

namespace BlockRepl.Engine.Ebs;

/// <summary>A completed snapshot of a chain, as recorded in the chain state.</summary>
public sealed class EbsSnapshotRecord
{
    public required string Id { get; init; }
    public string? Parent { get; init; }
    public DateTimeOffset Time { get; init; }
    public required string Mode { get; init; }
    public int ChangedBlocks { get; init; }
    public long VolumeSizeGiB { get; init; }
}

/// <summary>A snapshot started but not yet sealed in the state: what a restarted run resumes.</summary>
public sealed class EbsPending
{
    public required string ClientToken { get; init; }
    public string? ParentSnapshotId { get; init; }
    public string? SnapshotId { get; set; }
    public DateTimeOffset Started { get; init; }
    public long VolumeSizeGiB { get; init; }
    public long VolumeBytes { get; init; }
    public required string Mode { get; init; }
    public int TimeoutMinutes { get; init; }
    /// <summary>CompleteSnapshot was sent (the journal was fsynced first): only waiting and sealing are left.</summary>
    public bool CompleteRequested { get; set; }
    /// <summary>The change-tracking checkpoint of the read that filled the snapshot; recorded with CompleteRequested.</summary>
    public string? TrackingCheckpoint { get; set; }
}

/// <summary>
/// The state of one EBS snapshot chain of one source, kept in the state directory (docs/ebs.md §2): which
/// snapshot is the latest completed one, and the pending one if a run was interrupted. Written atomically
/// (temp + fsync + rename) at every transition.
/// </summary>
public sealed class EbsChainState
{
    public int Version { get; set; } = 1;
    public required string ChainId { get; init; }
    public required string Region { get; init; }
    public required string Endpoint { get; init; }
    public required string Source { get; init; }
    public bool Encrypted { get; set; }
    public string? KmsKeyArn { get; set; }
    public string? LastSnapshotId { get; set; }
    public long LastVolumeBytes { get; set; }
    /// <summary>The change-tracking checkpoint (docs/tracking.md) the last snapshot's block map was taken at, or null.</summary>
    public string? TrackingCheckpoint { get; set; }
    public List<EbsSnapshotRecord> History { get; set; } = [];
    public EbsPending? Pending { get; set; }

    /// <summary>How many completed snapshots the history keeps.</summary>
    public const int HistoryLimit = 1000;

    /// <summary>The file stem of a chain's state, map, journal and lock.</summary>
    public static string Stem(string region, string endpoint, string sourceKey)
    {
        var h = SHA256.HashData(Encoding.UTF8.GetBytes(region + "\n" + endpoint + "\n" + sourceKey));
        return $"ebs-{region}-{Convert.ToHexStringLower(h.AsSpan(0, 12))}";
    }

    public static EbsChainState? Load(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            var s = JsonSerializer.Deserialize(File.ReadAllBytes(path), EbsStateJsonContext.Default.EbsChainState);
            if (s is null || s.Version != 1) throw new RepositoryException($"EBS chain state '{path}' has an unknown version; move it away to start a new chain");
            return s;
        }
        catch (JsonException e)
        {
            throw new RepositoryException($"EBS chain state '{path}' is corrupt ({e.Message}); move it away to start a new chain (the snapshots in EBS stay intact)");
        }
    }

    public void Save(string path) => StateFile.WriteAtomically(path, fs => JsonSerializer.Serialize(fs, this, EbsStateJsonContext.Default.EbsChainState));

    /// <summary>The chain states in a state directory (for `restore latest`, listings).</summary>
    public static IEnumerable<(string Path, EbsChainState State)> All(string stateDir)
    {
        if (!Directory.Exists(stateDir)) yield break;
        foreach (var f in Directory.EnumerateFiles(stateDir, "ebs-*.json").Order(StringComparer.Ordinal))
        {
            EbsChainState? s;
            try { s = Load(f); } catch (RepositoryException) { continue; }
            if (s is not null) yield return (f, s);
        }
    }
}

/// <summary>Small state files in the state directory, replaced whole.</summary>
internal static class StateFile
{
    /// <summary>Writes through <paramref name="write"/> into PATH.tmp, fsyncs, renames over PATH and fsyncs the directory.</summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        string tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            write(fs);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        LinuxFile.FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(EbsChainState))]
internal sealed partial class EbsStateJsonContext : JsonSerializerContext;
