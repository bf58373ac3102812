using System.Text.Json;
using System.Text.RegularExpressions;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Jobs;
using BlockRepl.Storage.Ebs;

namespace BlockRepl.Cli;

/// <summary>The EBS side of the CLI: <c>ebs://REGION</c> targets for backup, restore from snapshots, ebs-copy.</summary>
internal static partial class EbsCommands
{
    public const string Scheme = "ebs://";

    /// <summary>Options every command that writes an EBS snapshot accepts.</summary>
    public static readonly string[] TargetValueOptions =
        ["--ebs-endpoint-url", "--ebs-tag", "--ebs-description", "--ebs-kms-key", "--ebs-timeout", "--ebs-parent", "--profile"];
    public static readonly string[] TargetFlags = ["--ebs-encrypted", "--ebs-no-wait", "--ebs-new-chain"];

    public static bool IsEbs(string location) => EbsTargets.IsEbs(location);

    [GeneratedRegex("^snap-[0-9a-f]{1,59}$")]
    private static partial Regex SnapshotPattern();

    /// <summary><c>ebs://REGION</c> → the region (with a clear error for anything else).</summary>
    public static string Region(string location) => EbsTargets.Region(location);

    public static string SnapshotId(string text)
    {
        if (!SnapshotPattern().IsMatch(text)) throw new UsageException($"'{text}' is not an EBS snapshot id (snap-…)");
        return text;
    }

    public static IEbsClient Client(string region, string? endpointUrl, string? profile) => EbsTargets.CreateClient(region, endpointUrl, profile);

    public static EbsTargetOptions TargetOptions(Args a, string host)
    {
        var tags = new List<EbsTag>();
        foreach (var t in a.Values("--ebs-tag"))
        {
            int eq = t.IndexOf('=');
            if (eq <= 0 || eq > 127 || t.Length - eq - 1 > 255) throw new UsageException($"--ebs-tag '{t}': give KEY=VALUE (key ≤ 127, value ≤ 255 characters)");
            tags.Add(new EbsTag(t[..eq], t[(eq + 1)..]));
        }
        int? timeout = null;
        if (a.Value("--ebs-timeout") is { } tv)
        {
            if (!int.TryParse(tv, out int m) || m is < 10 or > 4320) throw new UsageException($"--ebs-timeout '{tv}': minutes from 10 to 4320");
            timeout = m;
        }
        string? kms = a.Value("--ebs-kms-key");
        if (kms is not null && !kms.StartsWith("arn:", StringComparison.Ordinal)) throw new UsageException($"--ebs-kms-key '{kms}': give a KMS key ARN");
        string? parent = a.Value("--ebs-parent");
        if (parent is not null) SnapshotId(parent);
        string? description = a.Value("--ebs-description");
        if (description is { Length: > 255 }) throw new UsageException("--ebs-description: at most 255 characters");
        return new EbsTargetOptions
        {
            Tags = tags,
            Description = description,
            Encrypted = a.Flag("--ebs-encrypted"),
            KmsKeyArn = kms,
            TimeoutMinutes = timeout,
            Wait = !a.Flag("--ebs-no-wait"),
            ParentSnapshotId = parent,
            NewChain = a.Flag("--ebs-new-chain"),
            Host = host,
        };
    }

    public static void Print(EbsResult r)
    {
        Console.WriteLine($"EBS snapshot {r.SnapshotId} {r.Status} ({r.Mode}{(r.ParentSnapshotId is null ? "" : $", parent {r.ParentSnapshotId}")}{(r.Resumed ? ", resumed" : "")}) in {r.Region}");
        if (r.RescanReason is not null) Console.WriteLine($"  rescan    {r.RescanReason}");
        Console.WriteLine($"  blocks    {r.ChangedBlocks} written of 512 KiB ({r.BlocksPut} put this run, {r.ZeroBlocksPut} zero{(r.Resumed ? $", {r.ResumedBlocks} from the interrupted run" : "")}); volume {r.VolumeSizeGiB} GiB");
        Console.WriteLine($"  requests  {r.Requests} ({r.Retries} retried, {r.Throttled} throttled; concurrency {r.Concurrency}) in {Format.Duration(r.Seconds)}{(r.WaitSeconds > 0 ? $", {Format.Duration(r.WaitSeconds)} waiting for completion" : "")}");
    }

    public static void Write(Utf8JsonWriter w, EbsResult r)
    {
        w.WriteStartObject();
        w.WriteString("snapshotId", r.SnapshotId);
        if (r.ParentSnapshotId is null) w.WriteNull("parentSnapshotId"); else w.WriteString("parentSnapshotId", r.ParentSnapshotId);
        w.WriteString("region", r.Region);
        w.WriteString("endpoint", r.Endpoint);
        w.WriteString("mode", r.Mode);
        w.WriteString("status", r.Status);
        w.WriteBoolean("resumed", r.Resumed);
        w.WriteNumber("resumedBlocks", r.ResumedBlocks);
        w.WriteNumber("changedBlocks", r.ChangedBlocks);
        w.WriteNumber("blocksPut", r.BlocksPut);
        w.WriteNumber("zeroBlocksPut", r.ZeroBlocksPut);
        w.WriteNumber("bytesPut", r.BytesPut);
        w.WriteNumber("volumeBytes", r.ScannedBytes);
        w.WriteNumber("volumeSizeGiB", r.VolumeSizeGiB);
        w.WriteNumber("requests", r.Requests);
        w.WriteNumber("retries", r.Retries);
        w.WriteNumber("throttled", r.Throttled);
        w.WriteNumber("concurrency", r.Concurrency);
        w.WriteNumber("seconds", r.Seconds);
        w.WriteNumber("waitSeconds", r.WaitSeconds);
        if (r.RescanReason is null) w.WriteNull("rescanReason"); else w.WriteString("rescanReason", r.RescanReason);
        w.WriteEndObject();
    }

    /// <summary>
    /// <c>restore SNAP --repo ebs://REGION --to T</c>: <paramref name="which"/> is a snapshot id, or <c>latest</c> (the newest
    /// snapshot of the chains this state directory knows in that region).
    /// </summary>
    public static async Task<int> RestoreAsync(Args a, string location, string which, string target, string stateDir, Func<JobProgress, Func<Task<EbsRestoreResult>>, Task<EbsRestoreResult>> withProgress, CancellationToken ct)
    {
        string region = Region(location);
        using var client = Client(region, a.Value("--ebs-endpoint-url") ?? a.Value("--endpoint-url"), a.Value("--profile"));
        string endpoint = client.Endpoint.GetLeftPart(UriPartial.Authority);
        var chains = EbsChainState.All(stateDir).Where(c => c.State.Region == region && c.State.Endpoint == endpoint).Select(c => c.State).ToList();
        string id;
        if (which == "latest")
        {
            var last = chains.SelectMany(c => c.History.Select(h => (c, h))).OrderBy(x => x.h.Time).LastOrDefault();
            if (last.h is null) throw new NotFoundException($"no EBS snapshot of this machine's chains in {region} ({stateDir}); give a snapshot id");
            id = last.h.Id;
        }
        else id = SnapshotId(which);
        long? size = null;
        if (a.Value("--size") is { } sv) size = Args.ParseSize(sv, "--size");
        else
        {
            var chain = chains.FirstOrDefault(c => c.History.Any(h => h.Id == id));
            if (chain is not null && chain.History.Last().Id == id) size = chain.LastVolumeBytes;
        }
        var job = new EbsRestoreJob(client, Serilog.Log.Logger, a.Value("--workers") is null ? 16 : Commands.Workers(a));
        var r = await withProgress(job.Progress, () => job.RunAsync(id, target, size, ct)).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            Commands.WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteString("snapshotId", r.SnapshotId);
                w.WriteString("target", r.Target);
                w.WriteNumber("size", r.Size);
                w.WriteNumber("blocks", r.Blocks);
                w.WriteNumber("writtenBytes", r.WrittenBytes);
                w.WriteNumber("unchangedBytes", r.UnchangedBytes);
                w.WriteBoolean("inPlace", r.InPlace);
                w.WriteNumber("seconds", r.Seconds);
                w.WriteEndObject();
            });
        }
        else
        {
            Console.WriteLine($"restored EBS snapshot {r.SnapshotId} ({Format.Bytes(r.Size)}, {r.Blocks} blocks) to {r.Target} in {Format.Duration(r.Seconds)} ({Format.Rate(r.Size, r.Seconds)})");
            Console.WriteLine($"  written {Format.Bytes(r.WrittenBytes)}, already identical {Format.Bytes(r.UnchangedBytes)}{(r.InPlace ? " (updated in place)" : " (new sparse file)")}");
        }
        return ExitCodes.Ok;
    }

    /// <summary><c>ebs-copy SNAP --from ebs://A --to ebs://B</c>.</summary>
    public static async Task<int> CopyAsync(string[] argv, Func<JobProgress, Func<Task<EbsCopyResult>>, Args, Task<EbsCopyResult>> withProgress, CancellationToken ct)
    {
        var a = Args.Parse(argv,
            new HashSet<string>(["--from", "--to", "--from-endpoint-url", "--to-endpoint-url", "--state-dir", "--workers", "--profile", "--to-profile",
                "--ebs-tag", "--ebs-description", "--ebs-kms-key", "--ebs-timeout"]),
            new HashSet<string>(["--json", "--verbose", "--no-progress", "--ebs-encrypted", "--ebs-no-wait"]));
        if (a.Positionals.Count != 1) throw new UsageException("ebs-copy needs one snapshot: blockrepl ebs-copy <snap-id> --from ebs://REGION --to ebs://REGION");
        string id = SnapshotId(a.Positionals[0]);
        string from = a.Required("--from", "ebs://REGION: where the snapshot is");
        string to = a.Required("--to", "ebs://REGION: where to copy it");
        if (!IsEbs(from) || !IsEbs(to)) throw new UsageException("ebs-copy copies between EBS endpoints: --from ebs://REGION --to ebs://REGION (use 'copy' for repositories)");
        using var src = Client(Region(from), a.Value("--from-endpoint-url"), a.Value("--profile"));
        using var dst = Client(Region(to), a.Value("--to-endpoint-url"), a.Value("--to-profile") ?? a.Value("--profile"));
        if (src.Endpoint == dst.Endpoint && src.Region == dst.Region) throw new UsageException("ebs-copy: --from and --to are the same endpoint and region");
        string stateDir = a.Value("--state-dir") ?? StateDirectory.Default;
        var job = new EbsCopyJob(src, dst, stateDir, Serilog.Log.Logger);
        var options = TargetOptions(a, Environment.MachineName);
        var r = await withProgress(job.Progress, () => job.RunAsync(id, options, ct), a).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            Commands.WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteString("sourceSnapshotId", r.SourceSnapshotId);
                w.WriteString("snapshotId", r.SnapshotId);
                if (r.ParentSnapshotId is null) w.WriteNull("parentSnapshotId"); else w.WriteString("parentSnapshotId", r.ParentSnapshotId);
                if (r.SourceParentSnapshotId is null) w.WriteNull("baseSourceSnapshotId"); else w.WriteString("baseSourceSnapshotId", r.SourceParentSnapshotId);
                w.WriteString("mode", r.Mode);
                w.WriteNumber("blocksCopied", r.BlocksCopied);
                w.WriteNumber("zeroBlocks", r.ZeroBlocks);
                w.WriteNumber("volumeSizeGiB", r.VolumeSizeGiB);
                w.WriteString("status", r.Status);
                w.WriteNumber("seconds", r.Seconds);
                w.WriteEndObject();
            });
        }
        else if (r.Mode == "ALREADY_COPIED")
            Console.WriteLine($"{r.SourceSnapshotId} was already copied to {r.SnapshotId}");
        else
            Console.WriteLine($"copied {r.SourceSnapshotId} to {r.SnapshotId} in {Region(to)} ({r.Mode}{(r.SourceParentSnapshotId is null ? "" : $" since {r.SourceParentSnapshotId}")}): {r.BlocksCopied} blocks moved in {Format.Duration(r.Seconds)}, {r.Status}");
        return ExitCodes.Ok;
    }

    /// <summary><c>snapshots --repo ebs://REGION</c>: the chains this state directory replicates in that region.</summary>
    public static int Snapshots(Args a, string location, string stateDir)
    {
        string region = Region(location);
        var chains = EbsChainState.All(stateDir).Where(c => c.State.Region == region).Select(c => c.State).ToList();
        if (a.Flag("--json"))
        {
            Commands.WriteJson(w =>
            {
                w.WriteStartArray();
                foreach (var c in chains)
                    foreach (var h in c.History)
                    {
                        w.WriteStartObject();
                        w.WriteString("id", h.Id);
                        w.WriteString("time", h.Time);
                        w.WriteString("source", c.Source);
                        w.WriteString("endpoint", c.Endpoint);
                        w.WriteString("mode", h.Mode);
                        if (h.Parent is null) w.WriteNull("parent"); else w.WriteString("parent", h.Parent);
                        w.WriteNumber("changedBlocks", h.ChangedBlocks);
                        w.WriteNumber("volumeSizeGiB", h.VolumeSizeGiB);
                        w.WriteEndObject();
                    }
                w.WriteEndArray();
            });
            return ExitCodes.Ok;
        }
        if (chains.Count == 0) { Console.WriteLine($"no EBS chains in {region} recorded in {stateDir}"); return ExitCodes.Ok; }
        foreach (var c in chains)
        {
            Console.WriteLine($"chain {c.ChainId[..8]} of {c.Source} at {c.Endpoint}{(c.Pending is null ? "" : $" (pending {c.Pending.SnapshotId})")}");
            Console.WriteLine($"  {"SNAPSHOT",-22}  {"TIME (UTC)",-19}  {"MODE",-11}  {"BLOCKS",8}  PARENT");
            foreach (var h in c.History)
                Console.WriteLine($"  {h.Id,-22}  {h.Time.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {h.Mode,-11}  {h.ChangedBlocks,8}  {h.Parent ?? "-"}");
        }
        return ExitCodes.Ok;
    }
}
