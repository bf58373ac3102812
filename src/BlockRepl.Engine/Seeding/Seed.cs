using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using Serilog;

namespace BlockRepl.Engine.Seeding;

/// <summary>One volume carried by a seed: its recovery point in the seed's repository and the change map it was taken with.</summary>
public sealed class SeedVolume
{
    public required string Source { get; set; }
    public required string SourceKey { get; set; }
    public required long Size { get; set; }
    /// <summary>The recovery point (manifest id), the same in the seed's repository and in every repository it is imported into.</summary>
    public required string Snapshot { get; set; }
    /// <summary>Lower-case hex SHA-256 of the manifest file's bytes: adoption requires the identical manifest in the target.</summary>
    public required string ManifestSha256 { get; set; }
    public required DateTimeOffset Time { get; set; }
    /// <summary>The change-tracking checkpoint recorded with the map (tracked sources), or null.</summary>
    public string? Checkpoint { get; set; }
    /// <summary>The state directory on the source server holding the seed's change map.</summary>
    public required string StateDir { get; set; }
    /// <summary>The change map's file name in <see cref="StateDir"/> (docs/format.md §7, bound to the seed's repository).</summary>
    public required string ChangeMap { get; set; }
}

/// <summary>
/// The seed descriptor, <c>DIR/seed</c> (docs/seed.md §2): JSON in a checksummed <see cref="Envelope"/> with magic
/// "BRSEED", written atomically after the recovery points it names are committed in <c>DIR/repo</c>.
/// </summary>
public sealed class SeedDescriptor
{
    public const ushort Version = 1;
    public const string FileName = "seed";
    public const string RepositoryDir = "repo";
    public static ReadOnlySpan<byte> Magic => "BRSEED\0\0"u8;

    public required string SeedId { get; set; }
    public required DateTimeOffset Created { get; set; }
    public required DateTimeOffset Updated { get; set; }
    public required string Host { get; set; }
    /// <summary>The id of the seed's own repository (<c>DIR/repo</c>).</summary>
    public required string RepoId { get; set; }
    public required int ChunkSize { get; set; }
    /// <summary>The repository named with <c>--repo</c> at export (informational), or null.</summary>
    public string? Target { get; set; }
    public List<SeedVolume> Volumes { get; set; } = [];

    public static string PathIn(string dir) => Path.Combine(dir, FileName);
    public static string RepositoryIn(string dir) => Path.Combine(dir, RepositoryDir);

    /// <summary>Reads <c>DIR/seed</c>; a missing, torn or foreign file is a <see cref="RepositoryException"/> naming the directory.</summary>
    public static SeedDescriptor Read(string dir)
    {
        string path = PathIn(dir);
        if (!Directory.Exists(dir))
            throw new RepositoryException($"seed directory '{dir}' does not exist");
        if (!File.Exists(path))
            throw new RepositoryException($"'{dir}' is not a seed (no '{FileName}' descriptor); give the directory 'blockrepl seed export --to' wrote");
        try
        {
            var payload = Envelope.Unwrap(File.ReadAllBytes(path), Magic, Version, $"seed descriptor {path}", out _);
            var d = JsonSerializer.Deserialize(payload, SeedJsonContext.Default.SeedDescriptor);
            if (d is null || d.Volumes.Count == 0 || !ChunkGeometry.IsValidChunkSize(d.ChunkSize))
                throw new CorruptDataException($"seed descriptor {path}", "invalid fields");
            return d;
        }
        catch (JsonException e) { throw new CorruptDataException($"seed descriptor {path}", e.Message); }
    }

    /// <summary>Replaces <c>DIR/seed</c> atomically (temp + fsync + rename + directory fsync).</summary>
    public void Write(string dir) =>
        StateFile.WriteAtomically(PathIn(dir), s => s.Write(Envelope.Wrap(Magic, Version, JsonSerializer.SerializeToUtf8Bytes(this, SeedJsonContext.Default.SeedDescriptor))));

    /// <summary>Lower-case hex SHA-256 of a manifest file.</summary>
    public static string ManifestHash(ReadOnlySpan<byte> manifestFile) => Convert.ToHexStringLower(SHA256.HashData(manifestFile));
}

/// <summary>
/// The pending-seed record a seed export leaves in the source server's state directory (docs/seed.md §4):
/// <c>STATEDIR/seed-&lt;sha256(sourceKey)[..24]&gt;.json</c>. A later run into another repository that has no change
/// map there adopts the seed's map once the seed's recovery point is in that repository (<see cref="SeedAdoption"/>).
/// </summary>
public sealed class SeedRecord
{
    public int Version { get; set; } = 1;
    public required string SeedId { get; set; }
    public required string SeedDir { get; set; }
    /// <summary>The seed repository's id: the one the seed's change map is bound to.</summary>
    public required string RepoId { get; set; }
    public required int ChunkSize { get; set; }
    public required SeedVolume Volume { get; set; }

    public static string PathFor(string stateDir, string sourceKey) =>
        Path.Combine(stateDir, $"seed-{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sourceKey)).AsSpan(0, 12))}.json");

    public void Write(string stateDir) =>
        StateFile.WriteAtomically(PathFor(stateDir, Volume.SourceKey), s => JsonSerializer.Serialize(s, this, SeedJsonContext.Default.SeedRecord));

    /// <summary>The pending record for <paramref name="sourceKey"/>, or null (none, or unreadable: then there is nothing to adopt).</summary>
    public static SeedRecord? TryRead(string stateDir, string sourceKey)
    {
        try
        {
            var r = JsonSerializer.Deserialize(File.ReadAllBytes(PathFor(stateDir, sourceKey)), SeedJsonContext.Default.SeedRecord);
            return r is { Version: 1 } && r.Volume.SourceKey == sourceKey ? r : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { return null; }
    }
}

/// <summary>The bookkeeping of <c>blockrepl seed export</c> after its backup into the seed's repository committed.</summary>
public static class SeedExport
{
    /// <summary>
    /// Records <paramref name="point"/> of <paramref name="source"/>: first the pending record in the state directory
    /// (so the server can adopt the map later), then the descriptor in <paramref name="dir"/>, atomically and last,
    /// with this volume added or replaced. A kill before the descriptor leaves the previous seed state (or no seed).
    /// </summary>
    public static async Task<SeedDescriptor> RecordAsync(string dir, SeedDescriptor? existing, Repo seedRepo, IBlockSource source,
        Manifest point, string stateDir, string host, string? target, CancellationToken ct)
    {
        byte[] body = await seedRepo.Backend.ReadAllAsync(Repo.SnapshotKey(point.Id), ct).ConfigureAwait(false);
        string mapName = Repository.ChangeMap.FileName(seedRepo.Config.RepoId, source.SourceKey);
        string fullStateDir = Path.GetFullPath(stateDir);
        var volume = new SeedVolume
        {
            Source = source.Path,
            SourceKey = source.SourceKey,
            Size = point.Size,
            Snapshot = point.Id,
            ManifestSha256 = SeedDescriptor.ManifestHash(body),
            Time = point.Time,
            Checkpoint = TrackingRecord.Read(Path.Combine(fullStateDir, mapName + TrackingRecord.Extension), point.Id),
            StateDir = fullStateDir,
            ChangeMap = mapName,
        };
        var now = DateTimeOffset.UtcNow;
        var d = existing ?? new SeedDescriptor
        {
            SeedId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)),
            Created = now,
            Updated = now,
            Host = host,
            RepoId = seedRepo.Config.RepoId,
            ChunkSize = seedRepo.ChunkSize,
        };
        d.Updated = now;
        d.Host = host;
        d.Target = target ?? d.Target;
        d.Volumes.RemoveAll(x => x.SourceKey == source.SourceKey);
        d.Volumes.Add(volume);
        new SeedRecord { SeedId = d.SeedId, SeedDir = Path.GetFullPath(dir), RepoId = d.RepoId, ChunkSize = d.ChunkSize, Volume = volume }.Write(fullStateDir);
        d.Write(dir);
        return d;
    }
}

/// <summary>What <see cref="SeedAdoption.TryAdoptAsync"/> decided: adopted, or why not (null note: no seed pending).</summary>
public readonly record struct SeedAdoptionResult(bool Adopted, string? Note);

/// <summary>
/// Binds a seed's change map to the repository it was imported into (docs/seed.md §5). Only valid when that repository
/// holds the seed's recovery point with the identical manifest (same id, same SHA-256 of its bytes), the same chunk size
/// and volume size, and the seed's map is intact and names that point; anything else leaves the run to its usual
/// RESCAN (or FULL), which dedup keeps from re-uploading what the repository already has.
/// </summary>
public static class SeedAdoption
{
    /// <param name="mapPath">The change map path for <paramref name="repo"/> and the source (it does not exist yet).</param>
    public static async Task<SeedAdoptionResult> TryAdoptAsync(Repo repo, string stateDir, string sourceKey, long size, string mapPath, ILogger log, CancellationToken ct)
    {
        var record = SeedRecord.TryRead(stateDir, sourceKey);
        if (record is null || record.RepoId == repo.Config.RepoId) return default;
        var v = record.Volume;
        string point = v.Snapshot[..Math.Min(8, v.Snapshot.Length)];
        string? why = await WhyNotAsync(repo, record, size, ct).ConfigureAwait(false);
        string seedMap = Path.Combine(stateDir, v.ChangeMap);
        ChangeMap.Header? header = null;
        if (why is null)
        {
            using var h = ChangeMap.TryOpen(seedMap, record.ChunkSize, size, record.RepoId, out header, out string? mapReason);
            if (h is null) why = $"the seed's change map cannot be used ({mapReason})";
            else if (header!.SnapshotId != v.Snapshot) why = "the seed's change map was taken at another recovery point than the seed's";
        }
        if (why is not null)
        {
            log.Warning("Seed {Seed} of {Source} not adopted for {Repo}: {Reason}", record.SeedDir, v.Source, repo.Location, why);
            return new SeedAdoptionResult(false, why);
        }

        // The seed's entries stay as they are (same chunk ids, same fingerprints); only the header is re-bound.
        string work = mapPath + ".new";
        long chunkCount = ChunkGeometry.ChunkCount(size, record.ChunkSize);
        using (var h = MapFiles.CopyUnsealed(seedMap, work, ChangeMap.HeaderSize, ChangeMap.EntryOffset(chunkCount)))
            ChangeMap.Seal(h, work, chunkCount, header! with { RepoId = repo.Config.RepoId, EntriesChecksum = 0 });
        File.Move(work, mapPath, overwrite: true);
        LinuxFile.FsyncDirectory(stateDir);
        if (TrackingRecord.Read(seedMap + TrackingRecord.Extension, v.Snapshot) is { } checkpoint)
            TrackingRecord.Write(mapPath + TrackingRecord.Extension, checkpoint, v.Snapshot);
        // The target's map is durable: the seed's copy and the pending record are spent.
        foreach (var f in new[] { SeedRecord.PathFor(stateDir, sourceKey), seedMap + TrackingRecord.Extension, seedMap })
            TryDelete(f);
        log.Information("Adopted the change map of seed {Seed} (recovery point {Point}) for {Repo}: the run is incremental since the export",
            record.SeedDir, point, repo.Location);
        return new SeedAdoptionResult(true, $"adopted the change map of the seed's recovery point {point}");
    }

    private static async Task<string?> WhyNotAsync(Repo repo, SeedRecord record, long size, CancellationToken ct)
    {
        var v = record.Volume;
        string point = v.Snapshot[..Math.Min(8, v.Snapshot.Length)];
        if (record.ChunkSize != repo.ChunkSize)
            return $"the seed's chunk size {record.ChunkSize} differs from {repo.Location}'s {repo.ChunkSize}";
        if (v.Size != size) return $"the volume size changed since the seed export ({v.Size} -> {size} bytes)";
        string key = Repo.SnapshotKey(v.Snapshot);
        if (await repo.Backend.StatAsync(key, ct).ConfigureAwait(false) is null)
            return $"the seed's recovery point {point} is not in {repo.Location} (run 'blockrepl seed import --from SEED --repo {repo.Location}' at the destination first)";
        byte[] body;
        try { body = await repo.Backend.ReadAllAsync(key, ct).ConfigureAwait(false); }
        catch (Storage.ObjectNotFoundException) { return $"the seed's recovery point {point} is not in {repo.Location}"; }
        if (SeedDescriptor.ManifestHash(body) != v.ManifestSha256)
            return $"recovery point {point} in {repo.Location} is not the seed's (its manifest differs)";
        return null;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SeedDescriptor))]
[JsonSerializable(typeof(SeedRecord))]
internal sealed partial class SeedJsonContext : JsonSerializerContext;
