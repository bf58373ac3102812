using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Seeding;
using BlockRepl.Engine.Sources;
using BlockRepl.Storage;
using Serilog;

namespace BlockRepl.Cli;

/// <summary>
/// <c>blockrepl seed export|import</c> (docs/seed.md): the initial copy of a volume shipped on a removable disk, after
/// which backups and the daemon continue incrementally over the network from the seed's change map.
/// </summary>
internal static class SeedCommands
{
    public static Task<int> RunAsync(string[] argv, CancellationToken ct) => argv.FirstOrDefault() switch
    {
        "export" => ExportAsync(argv[1..], ct),
        "import" => ImportAsync(argv[1..], ct),
        null => throw new UsageException("seed needs a subcommand: blockrepl seed export <source> --to DIR [--repo TARGET] | seed import --from DIR --repo TARGET"),
        var other => throw new UsageException($"unknown seed subcommand '{other}': use 'seed export' or 'seed import'"),
    };

    public static async Task<int> ExportAsync(string[] argv, CancellationToken ct)
    {
        var a = Commands.Parse(argv, ["--to", "--repo", "--state-dir", "--host", "--tag", "--chunk-size"], ["--drop-cache", "--direct-io"]);
        if (a.Positionals.Count != 1)
            throw new UsageException("seed export needs exactly one source: blockrepl seed export <image|device|nbd://…|qcow2:…|qmp:…> --to DIR [--repo TARGET]");
        string dir = a.Required("--to", "DIR: the directory (e.g. on a removable disk) to write the seed into");
        string? target = a.Value("--repo");
        if (target is not null && EbsCommands.IsEbs(target))
            throw new UsageException("seed export --repo names the repository the seed will be imported into; seeds for ebs:// targets are not supported yet");
        string host = Commands.Host(a);
        string stateDir = a.Value("--state-dir") ?? StateDirectory.Default;
        bool json = a.Flag("--json");

        // Read before anything is created, so a typo in --to or --repo leaves nothing behind.
        var existing = ExistingSeed(dir);
        int chunkSize = await ChunkSizeAsync(a, target, existing, ct).ConfigureAwait(false);
        using var source = BlockSource.OpenAny(a.Positionals[0]);
        if (a.Flag("--direct-io") && !source.TryEnableDirectIo())
            Log.Warning("{Source}: the filesystem refuses O_DIRECT; reading through the page cache", source.Path);

        string repoPath = SeedDescriptor.RepositoryIn(dir);
        var (repo, _) = await RepositoryLocator.OpenOrInitAsync(repoPath, chunkSize, ct).ConfigureAwait(false);
        await using (repo.ConfigureAwait(false))
        {
            if (existing is not null && repo.Config.RepoId != existing.RepoId)
                throw new RepositoryException($"seed '{dir}': its repository is not the one its descriptor names; export into a new directory");
            if (repo.ChunkSize != chunkSize)
                throw new RepositoryException($"seed '{dir}' uses chunk size {Format.Bytes(repo.ChunkSize)}, not {Format.Bytes(chunkSize)}; export into a new directory");
            var options = new BackupOptions
            {
                Tags = ["seed", .. a.Values("--tag")],
                StateDir = stateDir,
                Workers = Commands.Workers(a),
                DropSourceCache = a.Flag("--drop-cache"),
                DirectIo = a.Flag("--direct-io"),
                Host = host,
                AdoptSeed = false,
            };
            bool show = !a.Flag("--no-progress");
            var (backup, _) = await ReplicationRun.RunAsync(source, repo, options, null, p => new ProgressPrinter(p, show), Log.Logger, ct).ConfigureAwait(false);
            var result = backup!;
            var seed = await SeedExport.RecordAsync(dir, existing, repo, source, result.Manifest, stateDir, host, target, ct).ConfigureAwait(false);
            if (json)
            {
                Commands.WriteBackupJson(result, extra: w =>
                {
                    w.WriteStartObject("seedExport");
                    w.WriteString("dir", Path.GetFullPath(dir));
                    w.WriteString("seedId", seed.SeedId);
                    w.WriteString("repoId", seed.RepoId);
                    w.WriteNumber("chunkSize", seed.ChunkSize);
                    if (target is null) w.WriteNull("target"); else w.WriteString("target", target);
                    w.WriteNumber("volumes", seed.Volumes.Count);
                    w.WriteString("stateDir", Path.GetFullPath(stateDir));
                    w.WriteEndObject();
                });
            }
            else
            {
                Commands.PrintBackup(result);
                Console.WriteLine($"seed {seed.SeedId} written to {dir} ({seed.Volumes.Count} volume(s), chunk size {Format.Bytes(seed.ChunkSize)})");
                Console.WriteLine($"  next: ship it, run 'blockrepl seed import --from {dir} --repo {target ?? "TARGET"}' at the destination, then back up into that repository");
                Console.WriteLine($"        with --state-dir {stateDir} (or the daemon): the first run is an incremental since this export");
            }
        }
        return ExitCodes.Ok;
    }

    /// <summary>The seed already at <paramref name="dir"/>, null for a new or empty directory (or one a killed first export left).</summary>
    private static SeedDescriptor? ExistingSeed(string dir)
    {
        if (File.Exists(dir)) throw new RepositoryException($"seed directory '{dir}' is a file; give a directory");
        if (File.Exists(SeedDescriptor.PathIn(dir))) return SeedDescriptor.Read(dir);
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName)
                .Any(n => n != SeedDescriptor.RepositoryDir && n != SeedDescriptor.FileName + ".tmp"))
            throw new RepositoryException($"'{dir}' is not empty and not a seed; choose an empty or new directory");
        return null;
    }

    /// <summary>The chunk size of the target repository when it is reachable (so chunk ids match), else --chunk-size or the default.</summary>
    private static async Task<int> ChunkSizeAsync(Args a, string? target, SeedDescriptor? existing, CancellationToken ct)
    {
        int? wanted = a.Value("--chunk-size") is null ? null : Commands.ChunkSize(a);
        int? targetSize = null;
        if (target is not null && !RepositoryLocator.IsS3(target) && !Directory.Exists(target))
            Log.Information("{Target} does not exist here: the seed uses chunk size {Size}, and the import creates the repository with it",
                target, Format.Bytes(existing?.ChunkSize ?? wanted ?? ChunkGeometry.DefaultChunkSize));
        else if (target is not null)
        {
            try
            {
                await using var t = await RepositoryLocator.OpenAsync(target, loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
                targetSize = t.ChunkSize;
            }
            catch (Exception e) when (e is RepositoryException or StorageException or CorruptDataException or UnsupportedFormatException or IOException)
            {
                Log.Warning("{Target} cannot be opened from here ({Error}); the seed uses chunk size {Size}, and the import refuses a repository with another",
                    target, e.Message, Format.Bytes(existing?.ChunkSize ?? wanted ?? ChunkGeometry.DefaultChunkSize));
            }
        }
        if (targetSize is { } ts && wanted is { } w && ts != w)
            throw new UsageException($"--chunk-size {Format.Bytes(w)} differs from {target}'s {Format.Bytes(ts)}; leave --chunk-size out so chunk ids match");
        if (existing is not null && targetSize is { } ts2 && ts2 != existing.ChunkSize)
            throw new RepositoryException($"seed uses chunk size {Format.Bytes(existing.ChunkSize)}, {target} uses {Format.Bytes(ts2)}; export into a new directory");
        return existing?.ChunkSize ?? targetSize ?? wanted ?? ChunkGeometry.DefaultChunkSize;
    }

    public static async Task<int> ImportAsync(string[] argv, CancellationToken ct)
    {
        var a = Commands.Parse(argv, ["--from", "--repo", "--to", "--storage-class"], []);
        if (a.Positionals.Count > 0) throw new UsageException($"seed import takes no arguments (got '{a.Positionals[0]}')");
        string dir = a.Required("--from", "DIR: the seed directory 'seed export' wrote");
        if (a.Value("--repo") is not null && a.Value("--to") is not null) throw new UsageException("give the target once: --repo TARGET");
        string target = a.Value("--repo") ?? a.Value("--to")
            ?? throw new UsageException("missing --repo TARGET: the repository (a directory or s3://…) to import the seed into");
        if (EbsCommands.IsEbs(target))
            throw new UsageException("seed import into ebs:// is not supported yet; import into a repository (a directory or s3://…), and the first EBS snapshot is taken over the network");
        string? storageClass = Commands.StorageClass(a);
        var seed = SeedDescriptor.Read(dir);
        await using var seedRepo = await RepositoryLocator.OpenAsync(SeedDescriptor.RepositoryIn(dir), true, ct).ConfigureAwait(false);
        if (seedRepo.Config.RepoId != seed.RepoId)
            throw new CorruptDataException($"seed '{dir}'", "its repository is not the one its descriptor names");
        var points = new List<Manifest>();
        foreach (var v in seed.Volumes)
        {
            byte[] body;
            try { body = await seedRepo.Backend.ReadAllAsync(Repo.SnapshotKey(v.Snapshot), ct).ConfigureAwait(false); }
            catch (ObjectNotFoundException) { throw new CorruptDataException($"seed '{dir}'", $"recovery point {v.Snapshot[..8]} of {v.Source} is missing from its repository"); }
            if (SeedDescriptor.ManifestHash(body) != v.ManifestSha256)
                throw new CorruptDataException($"seed '{dir}'", $"the manifest of recovery point {v.Snapshot[..8]} does not match the descriptor");
            points.Add(Manifest.Deserialize(body, $"manifest {Repo.SnapshotKey(v.Snapshot)} in {seedRepo.Location}"));
        }

        var (dest, created) = await RepositoryLocator.OpenOrInitAsync(target, seed.ChunkSize, ct, a.Value("--endpoint-url"), storageClass).ConfigureAwait(false);
        await using (dest.ConfigureAwait(false))
        {
            if (dest.ChunkSize != seed.ChunkSize)
                throw new RepositoryException($"{dest.Location} uses chunk size {Format.Bytes(dest.ChunkSize)}, the seed {Format.Bytes(seed.ChunkSize)}, so chunk ids cannot match; "
                    + $"export the seed again with --repo {target}, or import into a new repository");
            if (created) Log.Information("Created repository {Repo}", dest.Location);
            var job = new CopyJob(seedRepo, dest, Log.Logger);
            CopyResult r = await Commands.WithProgress(job.Progress, a, () => job.RunAsync(points, ct)).ConfigureAwait(false);
            // Read back what the target now holds: adoption on the source server requires these exact manifests.
            foreach (var v in seed.Volumes)
                if (SeedDescriptor.ManifestHash(await dest.Backend.ReadAllAsync(Repo.SnapshotKey(v.Snapshot), ct).ConfigureAwait(false)) != v.ManifestSha256)
                    throw new CorruptDataException($"recovery point {v.Snapshot[..8]} in {dest.Location}", "differs from the seed's after the import");
            bool already = r.Copied.Count == 0;
            if (a.Flag("--json"))
            {
                Commands.WriteJson(w =>
                {
                    w.WriteStartObject();
                    w.WriteString("seed", Path.GetFullPath(dir));
                    w.WriteString("seedId", seed.SeedId);
                    w.WriteString("to", dest.Location);
                    w.WriteBoolean("created", created);
                    w.WriteBoolean("alreadyImported", already);
                    w.WriteStartArray("volumes");
                    foreach (var v in seed.Volumes)
                    {
                        w.WriteStartObject();
                        w.WriteString("source", v.Source);
                        w.WriteString("snapshot", v.Snapshot);
                        w.WriteNumber("size", v.Size);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    Commands.WriteCopyFields(w, r);
                    w.WriteEndObject();
                });
            }
            else if (already)
                Console.WriteLine($"seed {seed.SeedId} is already imported into {dest.Location}: nothing to do");
            else
            {
                Console.WriteLine($"imported seed {seed.SeedId} into {dest.Location}{(created ? " (new repository)" : "")}: {r.Copied.Count} recovery point(s), {r.Skipped.Count} already there");
                Console.WriteLine($"  moved   {r.BlobsCopied} chunk(s) and {r.TreeNodesCopied} tree node(s), {Format.Bytes(r.RawBytes)} raw, {Format.Bytes(r.StoredBytes)} stored in {r.ObjectsWritten} objects, in {Format.Duration(r.Seconds)}");
                Console.WriteLine($"  next: on {seed.Host}, back up into {target} with the export's --state-dir (or run the daemon): the first run is an incremental since the export");
            }
        }
        return ExitCodes.Ok;
    }
}
