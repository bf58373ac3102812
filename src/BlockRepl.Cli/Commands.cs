using System.Text.Json;
using BlockRepl.Core.Formats;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using Serilog;

namespace BlockRepl.Cli;

internal static class Commands
{
    private static readonly HashSet<string> Common = ["--verbose", "--no-progress", "--json"];

    internal static Args Parse(string[] argv, string[] values, string[] flags) =>
        Args.Parse(argv, new HashSet<string>(values.Append("--workers").Append("--endpoint-url")), new HashSet<string>(flags.Concat(Common)));

    /// <summary>Runs a job while its progress is shown on stderr (unless --no-progress).</summary>
    internal static Task<T> WithProgress<T>(JobProgress progress, Args a, Func<Task<T>> run) =>
        WithProgress(progress, !a.Flag("--no-progress"), run);

    internal static async Task<T> WithProgress<T>(JobProgress progress, bool show, Func<Task<T>> run)
    {
        using (new ProgressPrinter(progress, show))
            return await run().ConfigureAwait(false);
    }

    /// <summary>Writes one indented JSON document to stdout, then a newline.</summary>
    internal static void WriteJson(Action<Utf8JsonWriter> write)
    {
        using (var w = new Utf8JsonWriter(Console.OpenStandardOutput(), new JsonWriterOptions { Indented = true }))
            write(w);
        Console.WriteLine();
    }

    internal static int Workers(Args a)
    {
        var w = a.Value("--workers");
        if (w is null) return Environment.ProcessorCount;
        return int.TryParse(w, out int n) && n is > 0 and <= 256 ? n : throw new UsageException($"--workers: '{w}' is not a number from 1 to 256");
    }

    /// <summary><c>--host NAME</c>: the host recorded in the manifest (default: this machine's name).</summary>
    internal static string Host(Args a)
    {
        var v = a.Value("--host");
        if (v is null) return Environment.MachineName;
        if (string.IsNullOrWhiteSpace(v) || v.Length > 255 || v.Any(char.IsControl))
            throw new UsageException($"--host '{v}': give a non-empty name of at most 255 printable characters");
        return v.Trim();
    }

    /// <summary><c>--storage-class CLASS</c>: the S3 storage class of packs; null when absent.</summary>
    internal static string? StorageClass(Args a)
    {
        var v = a.Value("--storage-class");
        if (v is null) return null;
        if (!BlockRepl.Storage.S3.S3StorageClasses.IsKnown(v))
            throw new UsageException($"--storage-class {v}: not an S3 storage class; use one of {string.Join(", ", BlockRepl.Storage.S3.S3StorageClasses.Known)}");
        return v.Trim().ToUpperInvariant();
    }

    /// <summary><c>--lock-wait 10m</c>: how long a writer waits for a running prune before failing (exit 9); 0 fails at once.</summary>
    private static LockOptions Locks(Args a)
    {
        var v = a.Value("--lock-wait");
        if (v is null) return LockOptions.Default;
        return Daemon.DaemonConfig.ParseDuration(v) is { } t && t >= TimeSpan.Zero
            ? LockOptions.Default with { WaitForExclusive = t }
            : throw new UsageException($"--lock-wait '{v}': give a duration such as 0s, 30s or 10m");
    }

    internal static int ChunkSize(Args a)
    {
        var v = a.Value("--chunk-size");
        if (v is null) return ChunkGeometry.DefaultChunkSize;
        long size = Args.ParseSize(v, "--chunk-size");
        if (size > int.MaxValue || !ChunkGeometry.IsValidChunkSize((int)size))
            throw new UsageException($"--chunk-size {v}: use a power of two from 4K to 512K");
        return (int)size;
    }

    public static async Task<int> InitAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--chunk-size", "--storage-class"], []);
        if (a.Positionals.Count > 0) throw new UsageException($"init takes no arguments (got '{a.Positionals[0]}')");
        string location = a.Required("--repo", "<dir>: where to create the repository");
        await using var repo = await RepositoryLocator.InitAsync(location, ChunkSize(a), ct, a.Value("--endpoint-url"), StorageClass(a)).ConfigureAwait(false);
        Console.WriteLine($"created repository {repo.Location} (chunk size {Format.Bytes(repo.ChunkSize)}, id {repo.Config.RepoId[..8]})");
        return ExitCodes.Ok;
    }

    public static async Task<int> BackupAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--to", "--tag", "--state-dir", "--chunk-size", "--storage-class", "--host", "--bwlimit", "--point-in-time", "--lock-wait", .. EbsCommands.TargetValueOptions],
            ["--drop-cache", "--direct-io", .. EbsCommands.TargetFlags]);
        if (a.Positionals.Count != 1) throw new UsageException("backup needs exactly one source: blockrepl backup <image|device> --repo <dir|s3://…|ebs://REGION>");
        // Targets: at most one repository and one EBS chain, fed by the same read.
        var targets = a.Values("--repo").Concat(a.Values("--to")).ToList();
        if (targets.Count == 0) throw new UsageException("missing --repo <dir>: the repository to back up into (or ebs://REGION for an EBS snapshot chain)");
        var ebsTargets = targets.Where(EbsCommands.IsEbs).ToList();
        var repoTargets = targets.Where(t => !EbsCommands.IsEbs(t)).ToList();
        if (ebsTargets.Count > 1 || repoTargets.Count > 1)
            throw new UsageException("backup writes to at most one repository and one EBS chain (e.g. --repo /backup --to ebs://us-east-1)");
        string? location = repoTargets.FirstOrDefault();
        bool json = a.Flag("--json");
        string host = Host(a);
        string stateDir = a.Value("--state-dir") ?? StateDirectory.Default;
        var ebsOptions = EbsCommands.TargetOptions(a, host);
        using var limiter = BandwidthOptions.Limiter(a.Value("--bwlimit"));
        using var ebsClient = ebsTargets.Count == 0 ? null
            : BandwidthOptions.Throttle(EbsCommands.Client(EbsCommands.Region(ebsTargets[0]), a.Value("--ebs-endpoint-url") ?? (location is null ? a.Value("--endpoint-url") : null), a.Value("--profile")), limiter);
        using var ebs = ebsClient is null ? null : new EbsReplicator(ebsClient, ebsOptions, stateDir, Log.Logger);
        string pitText = a.Value("--point-in-time") ?? "auto";
        var pit = PointInTime.ParseMode(pitText) ?? throw new UsageException($"--point-in-time '{pitText}': auto, reflink or none");
        // auto: a reflink clone of an image file where its filesystem makes them (XFS reflink=1, btrfs), else a live read.
        using var view = PointInTime.Open(a.Positionals[0], pit, freeze: null, stateDir, Log.Logger);
        if (view.FuzzyReason is not null && pit == PointInTimeMode.Auto) Log.Debug("{Source}: read live: {Reason}", view.Source.Path, view.FuzzyReason);
        var source = view.Source;
        if (a.Flag("--direct-io") && !source.TryEnableDirectIo())
            Log.Warning("{Source}: the filesystem refuses O_DIRECT; reading through the page cache", source.Path);

        var options = new BackupOptions
        {
            Tags = [.. a.Values("--tag")],
            StateDir = stateDir,
            Workers = Workers(a),
            DropSourceCache = a.Flag("--drop-cache"),
            DirectIo = a.Flag("--direct-io"),
            Host = host,
            Observer = ebs,
        };
        bool show = !a.Flag("--no-progress");
        if (location is null)
        {
            var (_, r) = await ReplicationRun.RunAsync(source, null, options, ebs, p => new ProgressPrinter(p, show), Log.Logger, ct).ConfigureAwait(false);
            if (json) WriteJson(w => EbsCommands.Write(w, r!));
            else EbsCommands.Print(r!);
            return ExitCodes.Ok;
        }

        string? storageClass = StorageClass(a);
        var (repo, created) = await RepositoryLocator.OpenOrInitAsync(location, ChunkSize(a), ct, a.Value("--endpoint-url"), storageClass,
            limiter is null ? null : b => new BlockRepl.Storage.ThrottledBackend(b, limiter)).ConfigureAwait(false);
        await using (repo.ConfigureAwait(false))
        {
            if (created) Log.Information("Created repository {Repo}", repo.Location);
            var (backup, ebsResult) = await ReplicationRun.RunAsync(source, repo, options, ebs, p => new ProgressPrinter(p, show), Log.Logger, ct, Locks(a)).ConfigureAwait(false);
            var result = backup!;
            Log.Debug("GC: {Allocated} bytes allocated, {Gen0}/{Gen1}/{Gen2} collections, heap {Heap}", GC.GetTotalAllocatedBytes(), GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetGCMemoryInfo().HeapSizeBytes);
            if (json) WriteBackupJson(result, ebsResult, view.View);
            else
            {
                PrintBackup(result, view.View);
                if (ebsResult is not null) EbsCommands.Print(ebsResult);
            }
        }
        return ExitCodes.Ok;
    }

    internal static void PrintBackup(BackupResult r, string? view = null)
    {
        var m = r.Manifest;
        var s = m.Stats;
        Console.WriteLine($"recovery point {m.Id[..8]} saved ({m.Mode}{(m.Parent is null ? "" : $", parent {m.Parent[..8]}")}) of {m.Source}");
        if (view is not null) Console.WriteLine($"  view      {(view == ViewKinds.None ? "none: read live (fuzzy)" : view)}");
        if (r.RescanReason is not null) Console.WriteLine($"  rescan    {r.RescanReason}");
        else if (r.SeedNote is not null) Console.WriteLine($"  seed      {r.SeedNote}");
        Console.WriteLine($"  scanned   {Format.Bytes(s.ScannedBytes)} in {Format.Duration(s.Seconds)} ({Format.Rate(s.ScannedBytes, s.Seconds)}), {r.CpuSeconds:0.00} CPU s");
        Console.WriteLine($"  zero      {Format.Bytes(s.ZeroBytes)}");
        Console.WriteLine($"  changed   {Format.Bytes(s.ChangedBytes)} ({s.ChangedChunks} chunks of {Format.Bytes(m.ChunkSize)}, {s.ChangedBlocks} blocks of 512 KiB)");
        Console.WriteLine($"  new       {Format.Bytes(s.NewBytes)} ({s.NewChunks} chunks not already in the repository)");
        double ratio = s.NewBytes > 0 ? (double)(s.StoredBytes - s.MetadataBytes) / s.NewBytes : 0;
        Console.WriteLine($"  stored    {Format.Bytes(s.StoredBytes)} (compression {ratio:0.00}, {r.ObjectsWritten} objects)");
    }

    internal static void WriteBackupJson(BackupResult r, EbsResult? ebs = null, string? view = null, Action<Utf8JsonWriter>? extra = null)
    {
        var m = r.Manifest;
        var s = m.Stats;
        WriteJson(w =>
        {
            w.WriteStartObject();
            w.WriteString("id", m.Id);
            if (view is not null) w.WriteString("view", view);
            w.WriteString("time", m.Time);
            w.WriteString("mode", m.Mode);
            if (m.Parent is null) w.WriteNull("parent"); else w.WriteString("parent", m.Parent);
            w.WriteString("source", m.Source);
            w.WriteNumber("size", m.Size);
            w.WriteNumber("chunkSize", m.ChunkSize);
            w.WriteNumber("scannedBytes", s.ScannedBytes);
            w.WriteNumber("zeroBytes", s.ZeroBytes);
            w.WriteNumber("holeBytes", s.HoleBytes);
            w.WriteNumber("changedBytes", s.ChangedBytes);
            w.WriteNumber("changedChunks", s.ChangedChunks);
            w.WriteNumber("changedBlocks", s.ChangedBlocks);
            w.WriteNumber("newBytes", s.NewBytes);
            w.WriteNumber("newChunks", s.NewChunks);
            w.WriteNumber("storedBytes", s.StoredBytes);
            w.WriteNumber("metadataBytes", s.MetadataBytes);
            w.WriteNumber("packsWritten", r.PacksWritten);
            w.WriteNumber("putRequests", r.ObjectsWritten);
            // PUT requests per GiB changed (issue #3: "stays low"); null when nothing changed.
            if (s.ChangedBytes > 0) w.WriteNumber("putRequestsPerGiBChanged", Math.Round(r.ObjectsWritten / (s.ChangedBytes / (double)(1L << 30)), 3));
            else w.WriteNull("putRequestsPerGiBChanged");
            w.WriteNumber("seconds", s.Seconds);
            w.WriteNumber("cpuSeconds", Math.Round(r.CpuSeconds, 3));
            w.WriteNumber("mbPerSecond", s.Seconds > 0 ? Math.Round(s.ScannedBytes / s.Seconds / 1e6, 1) : 0);
            if (r.RescanReason is null) w.WriteNull("rescanReason"); else w.WriteString("rescanReason", r.RescanReason);
            if (r.SeedNote is null) w.WriteNull("seed"); else w.WriteString("seed", r.SeedNote);
            WriteStrings(w, "tags", m.Tags);
            if (ebs is not null)
            {
                w.WritePropertyName("ebs");
                EbsCommands.Write(w, ebs);
            }
            extra?.Invoke(w);
            w.WriteEndObject();
        });
    }

    public static async Task<int> SnapshotsAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--state-dir"], []);
        if (a.Positionals.Count > 0) throw new UsageException($"snapshots takes no arguments (got '{a.Positionals[0]}')");
        if (a.Value("--repo") is { } ebsRepo && EbsCommands.IsEbs(ebsRepo))
            return EbsCommands.Snapshots(a, ebsRepo, a.Value("--state-dir") ?? StateDirectory.Default);
        await using var repo = await RepositoryLocator.OpenAsync(a.Required("--repo", "<dir>"), loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var corrupt = new List<string>();
        var list = await repo.ListSnapshotsAsync((key, e) => corrupt.Add(e.Message), ct).ConfigureAwait(false);
        // Show every readable recovery point, then fail on the unreadable ones.
        try { PrintSnapshots(list, a.Flag("--json"), repo.Location); }
        finally { Console.Out.Flush(); }
        if (corrupt.Count > 0)
            throw new VerifyFailedException(corrupt.Count == 1 ? corrupt[0] : $"{corrupt.Count} manifests are unreadable, first: {corrupt[0]}");
        return ExitCodes.Ok;
    }

    private static void PrintSnapshots(List<Manifest> list, bool json, string location)
    {
        if (json)
        {
            WriteJson(w =>
            {
                w.WriteStartArray();
                foreach (var m in list)
                {
                    w.WriteStartObject();
                    w.WriteString("id", m.Id);
                    w.WriteString("time", m.Time);
                    w.WriteString("host", m.Host);
                    w.WriteString("source", m.Source);
                    w.WriteNumber("size", m.Size);
                    w.WriteString("mode", m.Mode);
                    if (m.Parent is null) w.WriteNull("parent"); else w.WriteString("parent", m.Parent);
                    w.WriteNumber("changedBytes", m.Stats.ChangedBytes);
                    w.WriteNumber("newBytes", m.Stats.NewBytes);
                    w.WriteNumber("storedBytes", m.Stats.StoredBytes);
                    WriteStrings(w, "tags", m.Tags);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            });
            return;
        }
        if (list.Count == 0) { Console.WriteLine($"no recovery points in {location}"); return; }
        Console.WriteLine($"{"ID",-8}  {"TIME (UTC)",-19}  {"MODE",-11}  {"SIZE",10}  {"CHANGED",10}  {"STORED",10}  SOURCE  TAGS");
        foreach (var m in list)
            Console.WriteLine($"{m.Id[..8],-8}  {m.Time.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {m.Mode,-11}  {Format.Bytes(m.Size),10}  {Format.Bytes(m.Stats.ChangedBytes),10}  {Format.Bytes(m.Stats.StoredBytes),10}  {m.Source}  {string.Join(',', m.Tags)}");
        Console.WriteLine($"{list.Count} recovery point(s)");
    }

    public static async Task<int> RestoreAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--to", "--state-dir", "--size", "--ebs-endpoint-url", "--profile"], []);
        if (a.Positionals.Count != 1) throw new UsageException("restore needs one recovery point: blockrepl restore <id|latest> --repo <dir> --to <file|device>");
        string location = a.Required("--repo", "<dir>");
        string target = a.Required("--to", "<file|device>: where to write the volume");
        if (EbsCommands.IsEbs(location))
            return await EbsCommands.RestoreAsync(a, location, a.Positionals[0], target, a.Value("--state-dir") ?? StateDirectory.Default,
                (p, run) => WithProgress(p, a, run), ct).ConfigureAwait(false);
        if (a.Value("--size") is not null) throw new UsageException("--size applies only to restores from ebs://");
        await using var repo = await RepositoryLocator.OpenAsync(location, true, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var m = await repo.FindSnapshotAsync(a.Positionals[0], ct).ConfigureAwait(false);
        // Without --workers the job picks its own reader count (ranged reads in flight, PackRangeOptions).
        var job = new RestoreJob(repo, Log.Logger, a.Value("--workers") is null ? 0 : Workers(a));
        RestoreResult r = await WithProgress(job.Progress, a, () => job.RunAsync(m, target, ct)).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteString("id", m.Id);
                w.WriteString("target", r.Target);
                w.WriteNumber("size", r.Size);
                w.WriteNumber("writtenBytes", r.WrittenBytes);
                w.WriteNumber("unchangedBytes", r.UnchangedBytes);
                w.WriteNumber("zeroBytes", r.ZeroBytes);
                w.WriteBoolean("inPlace", r.InPlace);
                w.WriteNumber("seconds", Math.Round(r.Seconds, 3));
                w.WriteNumber("cpuSeconds", Math.Round(r.CpuSeconds, 3));
                w.WriteNumber("mbPerSecond", r.Seconds > 0 ? Math.Round(r.Size / r.Seconds / 1e6, 1) : 0);
                w.WriteEndObject();
            });
        }
        else
        {
            Console.WriteLine($"restored {m.Id[..8]} ({Format.Bytes(m.Size)}) to {r.Target} in {Format.Duration(r.Seconds)} ({Format.Rate(r.Size, r.Seconds)})");
            Console.WriteLine($"  written {Format.Bytes(r.WrittenBytes)}, already identical {Format.Bytes(r.UnchangedBytes)}, zero {Format.Bytes(r.ZeroBytes)}{(r.InPlace ? " (updated in place)" : " (new sparse file)")}");
        }
        return ExitCodes.Ok;
    }

    public static Task<int> EbsCopyAsync(string[] argv, CancellationToken ct) =>
        EbsCommands.CopyAsync(argv, (p, run, a) => WithProgress(p, a, run), ct);

    public static async Task<int> CopyAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--from", "--to", "--from-endpoint-url", "--to-endpoint-url", "--storage-class", "--lock-wait"], []);
        string from = a.Required("--from", "<repo>: the repository to copy recovery points from");
        string to = a.Required("--to", "<repo>: the repository to copy them into (created if missing or empty)");
        // --endpoint-url (accepted by every command) applies to whichever side is on S3.
        string? common = a.Value("--endpoint-url");
        string? fromEndpoint = a.Value("--from-endpoint-url") ?? (RepositoryLocator.IsS3(from) ? common : null);
        string? toEndpoint = a.Value("--to-endpoint-url") ?? (RepositoryLocator.IsS3(to) ? common : null);
        string? storageClass = StorageClass(a);   // for the packs written to --to
        if (storageClass is not null && !RepositoryLocator.IsS3(to))
            throw new UsageException("--storage-class applies only when --to is an s3:// repository");
        await using var source = await RepositoryLocator.OpenAsync(from, true, ct, fromEndpoint).ConfigureAwait(false);
        var manifests = await CopyJob.SelectAsync(source, a.Positionals, ct).ConfigureAwait(false);
        var (dest, created) = await RepositoryLocator.OpenOrInitAsync(to, source.ChunkSize, ct, toEndpoint, storageClass).ConfigureAwait(false);
        await using (dest.ConfigureAwait(false))
        {
            if (created) Log.Information("Created repository {Repo}", dest.Location);
            var job = new CopyJob(source, dest, Log.Logger);
            CopyResult r;
            // A writer: the destination's shared lock keeps a prune there from deleting what the copy deduplicates against.
            await using (var held = await dest.LockSharedAsync(Locks(a), Log.Logger, ct).ConfigureAwait(false))
            {
                using var lockedCt = CancellationTokenSource.CreateLinkedTokenSource(ct, held.Lost);
                r = await WithProgress(job.Progress, a, () => job.RunAsync(manifests, lockedCt.Token)).ConfigureAwait(false);
            }
            if (a.Flag("--json"))
            {
                WriteJson(w =>
                {
                    w.WriteStartObject();
                    w.WriteString("from", source.Location);
                    w.WriteString("to", dest.Location);
                    w.WriteBoolean("created", created);
                    w.WriteNumber("manifestsCopied", r.Copied.Count);
                    w.WriteNumber("manifestsSkipped", r.Skipped.Count);
                    WriteCopyFields(w, r);
                    w.WriteEndObject();
                });
            }
            else
            {
                Console.WriteLine($"copied {r.Copied.Count} recovery point(s) from {source.Location} to {dest.Location}{(created ? " (new repository)" : "")}, {r.Skipped.Count} already there");
                Console.WriteLine($"  moved   {r.BlobsCopied} chunk(s) and {r.TreeNodesCopied} tree node(s), {Format.Bytes(r.RawBytes)} raw, {Format.Bytes(r.StoredBytes)} stored in {r.ObjectsWritten} objects, in {Format.Duration(r.Seconds)}");
            }
        }
        return ExitCodes.Ok;
    }

    public static async Task<int> ForgetAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo"], ["--dry-run"]);
        bool dryRun = a.Flag("--dry-run");
        await using var repo = await RepositoryLocator.OpenAsync(a.Required("--repo", "<dir>"), loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var forgotten = await ForgetJob.RunAsync(repo, a.Positionals, dryRun, ct).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("dryRun", dryRun);
                WriteStrings(w, "forgotten", forgotten.Select(m => m.Id));
                w.WriteEndObject();
            });
        }
        else
        {
            foreach (var m in forgotten)
                Console.WriteLine($"{(dryRun ? "would forget" : "forgot")} {m.Id[..8]}  {m.Time.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {m.Source}");
            Console.WriteLine($"{forgotten.Count} recovery point(s) {(dryRun ? "would be " : "")}forgotten; run 'blockrepl prune --repo {repo.Location}' to reclaim their space");
        }
        return ExitCodes.Ok;
    }

    /// <summary><c>--max-repack-waste 25%</c> (or <c>25</c>): a percentage of a pack's blob bytes.</summary>
    private static double RepackWaste(Args a)
    {
        var v = a.Value("--max-repack-waste");
        if (v is null) return new PruneOptions().MaxRepackWaste;
        string t = v.Trim().TrimEnd('%');
        return double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double pct) && pct is >= 0 and <= 100
            ? pct / 100 : throw new UsageException($"--max-repack-waste '{v}': give a percentage from 0 to 100, e.g. 25%");
    }

    public static async Task<int> PruneAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--max-repack-waste", "--stale-lock-age"], ["--dry-run", "--remove-stale-locks"]);
        if (a.Positionals.Count > 0) throw new UsageException($"prune takes no arguments (got '{a.Positionals[0]}'); to delete recovery points use 'blockrepl forget'");
        var locks = LockOptions.Default with { RemoveStale = a.Flag("--remove-stale-locks") };
        if (a.Value("--stale-lock-age") is { } age)
            locks = locks with { StaleAfter = Daemon.DaemonConfig.ParseDuration(age) is { } t && t > TimeSpan.Zero ? t : throw new UsageException($"--stale-lock-age '{age}': give a duration such as 30m or 2h") };
        var options = new PruneOptions { DryRun = a.Flag("--dry-run"), MaxRepackWaste = RepackWaste(a), Locks = locks };
        await using var repo = await RepositoryLocator.OpenAsync(a.Required("--repo", "<dir>"), loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var job = new PruneJob(repo, options, Log.Logger);
        PruneResult r = await WithProgress(job.Progress, a, () => job.RunAsync(ct)).ConfigureAwait(false);
        if (a.Flag("--json")) WriteJson(w => WritePruneJson(w, r));
        else PrintPrune(r, options.DryRun);
        return ExitCodes.Ok;
    }

    /// <summary>A JSON array of strings.</summary>
    internal static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values) w.WriteStringValue(v);
        w.WriteEndArray();
    }

    /// <summary>What a copy moved, as `copy --json` and `seed import --json` print it.</summary>
    internal static void WriteCopyFields(Utf8JsonWriter w, CopyResult r)
    {
        WriteStrings(w, "copied", r.Copied);
        WriteStrings(w, "skipped", r.Skipped);
        w.WriteNumber("blobsCopied", r.BlobsCopied);
        w.WriteNumber("treeNodesCopied", r.TreeNodesCopied);
        w.WriteNumber("rawBytes", r.RawBytes);
        w.WriteNumber("storedBytes", r.StoredBytes);
        w.WriteNumber("putRequests", r.ObjectsWritten);
        w.WriteNumber("seconds", Math.Round(r.Seconds, 3));
    }

    internal static void WritePruneJson(Utf8JsonWriter w, PruneResult r)
    {
        w.WriteStartObject();
        w.WriteBoolean("dryRun", r.DryRun);
        w.WriteNumber("snapshots", r.Snapshots);
        w.WriteNumber("packsBefore", r.PacksBefore);
        w.WriteNumber("bytesBefore", r.BytesBefore);
        w.WriteNumber("liveBlobs", r.LiveBlobs);
        WriteStrings(w, "deletedPacks", r.DeletedPacks);
        WriteStrings(w, "repackedPacks", r.RepackedPacks);
        WriteStrings(w, "deletedIndexFiles", r.DeletedIndexFiles);
        w.WriteNumber("packsWritten", r.PacksWritten);
        w.WriteNumber("indexFilesWritten", r.IndexFilesWritten);
        w.WriteNumber("blobsRepacked", r.BlobsRepacked);
        w.WriteNumber("bytesDeleted", r.BytesDeleted);
        w.WriteNumber("bytesWritten", r.BytesWritten);
        w.WriteNumber("bytesReclaimed", r.BytesReclaimed);
        WriteStrings(w, "staleLocksRemoved", r.StaleLocksRemoved);
        w.WriteNumber("seconds", Math.Round(r.Seconds, 3));
        w.WriteEndObject();
    }

    private static void PrintPrune(PruneResult r, bool dryRun)
    {
        foreach (var l in r.StaleLocksRemoved) Console.WriteLine($"removed stale {l}");
        string would = dryRun ? "would " : "";
        if (dryRun)
        {
            foreach (var k in r.DeletedPacks) Console.WriteLine($"would delete {k}");
            foreach (var k in r.RepackedPacks) Console.WriteLine($"would repack {k}");
            foreach (var k in r.DeletedIndexFiles) Console.WriteLine($"would delete {k}");
        }
        Console.WriteLine($"{r.Snapshots} recovery point(s) use {r.LiveBlobs} blob(s) in {r.PacksBefore} pack(s) ({Format.Bytes(r.BytesBefore)} with index files)");
        if (r.DeletedPacks.Count == 0 && r.RepackedPacks.Count == 0 && r.DeletedIndexFiles.Count == 0)
        {
            Console.WriteLine("nothing to prune");
            return;
        }
        Console.WriteLine($"  {would}delete  {r.DeletedPacks.Count} unused pack(s) and {r.DeletedIndexFiles.Count} index file(s)");
        Console.WriteLine($"  {would}repack  {r.RepackedPacks.Count} pack(s){(dryRun ? $", copying {Format.Bytes(r.BytesWritten)} of live blobs" : $" into {r.PacksWritten} new pack(s) ({r.BlobsRepacked} blobs, {Format.Bytes(r.BytesWritten)} written)")}");
        Console.WriteLine($"  {(dryRun ? "would reclaim" : "reclaimed")} {Format.Bytes(r.BytesReclaimed)}{(dryRun ? " (about)" : "")} in {Format.Duration(r.Seconds)}");
    }

    public static async Task<int> VerifyAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo"], ["--read-data"]);
        if (a.Positionals.Count > 0) throw new UsageException($"verify takes no arguments (got '{a.Positionals[0]}')");
        string location = a.Required("--repo", "<dir>");
        await using var probe = await RepositoryLocator.OpenAsync(location, loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var job = new VerifyJob(probe.Backend);
        VerifyReport report = await WithProgress(job.Progress, a, () => job.RunAsync(a.Flag("--read-data"), ct)).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("ok", report.Ok);
                w.WriteNumber("snapshots", report.Snapshots);
                w.WriteNumber("packs", report.Packs);
                w.WriteNumber("blobs", report.Blobs);
                w.WriteNumber("bytesRead", report.BytesRead);
                WriteStrings(w, "problems", report.Problems);
                w.WriteStartObject("affected");
                foreach (var (id, list) in report.Affected) WriteStrings(w, id, list);
                w.WriteEndObject();
                w.WriteEndObject();
            });
        }
        else
        {
            foreach (var n in report.Notes) Console.WriteLine($"note: {n}");
            foreach (var p in report.Problems) Console.WriteLine($"error: {p}");
            foreach (var (id, list) in report.Affected)
                Console.WriteLine($"recovery point {id[..8]} is damaged ({list.Count} problem(s)): it cannot be fully restored");
            Console.WriteLine(report.Ok
                ? $"repository ok: {report.Snapshots} recovery point(s), {report.Packs} pack(s), {report.Blobs} blob(s){(report.BytesRead > 0 ? $", {Format.Bytes(report.BytesRead)} read and verified" : "")}"
                : $"repository has {report.Problems.Count} problem(s)");
        }
        if (!report.Ok)
            throw new VerifyFailedException($"verify found {report.Problems.Count} problem(s) in {location}; {report.Affected.Count} recovery point(s) affected");
        return ExitCodes.Ok;
    }
}
