using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Sources;
using Microsoft.Extensions.Configuration;

namespace BlockRepl.Daemon;

/// <summary>One volume of the server: what to read, under a short stable name.</summary>
public sealed class VolumeConfig
{
    public string Name { get; set; } = "";
    /// <summary>An image file, a block device, an NBD URI, <c>qcow2:PATH</c> or <c>qmp:SOCKET?node=NODE</c>.</summary>
    public string Source { get; set; } = "";
    /// <summary><c>auto</c> (default), <c>reflink</c> or <c>none</c>: how each cycle fixes the instant it reads (docs/daemon.md §4).</summary>
    public string PointInTime { get; set; } = "auto";
    /// <summary>A mount point frozen (FIFREEZE) while the volume's clone is taken, at most 10 s; null for none.</summary>
    public string? Freeze { get; set; }
    /// <summary>The parsed <see cref="PointInTime"/>, valid after <see cref="DaemonConfig.Validate"/>.</summary>
    public PointInTimeMode PointInTimeMode { get; set; }
}

/// <summary>
/// The daemon's configuration (docs/daemon.md §2): a JSON file (default <c>/etc/blockrepl/blockrepl.json</c>), then
/// <c>BLOCKREPL_*</c> environment variables (<c>BLOCKREPL_STATUS__LISTEN</c>), then <c>--key=value</c> arguments.
/// </summary>
public sealed partial class DaemonConfig
{
    public const string DefaultPath = "/etc/blockrepl/blockrepl.json";

    /// <summary>Display name of the server (default: the host name). Its identity is generated once, in the state directory.</summary>
    public string? Name { get; set; }
    public string? StateDir { get; set; }
    public List<VolumeConfig> Volumes { get; set; } = [];
    /// <summary>A repository (directory or s3://bucket/prefix) for the recovery points.</summary>
    public string? Repository { get; set; }
    public string? EndpointUrl { get; set; }
    /// <summary>An EBS snapshot chain per volume (<c>ebs://REGION</c>).</summary>
    public string? Ebs { get; set; }
    public string? EbsEndpointUrl { get; set; }
    public string? Profile { get; set; }
    /// <summary>Pause between the end of one cycle and the start of the next (<c>5s</c>, <c>1m</c>, <c>00:00:05</c>).</summary>
    public string Interval { get; set; } = "5s";
    /// <summary>Hashing/compression threads of a cycle (bounded CPU on the source server).</summary>
    public int Workers { get; set; } = 1;
    /// <summary>Read with O_DIRECT (falls back to reads with fadvise(DONTNEED)): the server's page cache is left alone.</summary>
    public bool DirectIo { get; set; } = true;
    /// <summary>Loopback address of the status and metrics endpoint; empty to disable.</summary>
    public string StatusListen { get; set; } = "127.0.0.1:9184";
    /// <summary>Rolling log file (daily, 7 kept); empty for console (journald) only.</summary>
    public string? LogFile { get; set; }

    /// <summary>Bandwidth cap with a time-of-day schedule (docs/bandwidth.md), e.g. <c>20Mbps Mon-Fri 08:00-18:00; unlimited</c>.</summary>
    public string? Bandwidth { get; set; }
    public Engine.Throttling.BandwidthSchedule? BandwidthSchedule { get; private set; }

    /// <summary>Which server recovery points are kept; see <see cref="RetentionPolicy.Default"/>.</summary>
    public RetentionPolicy Retention { get; private set; } = RetentionPolicy.Default;
    private string? _allFor, _hourlyFor, _dailyFor;

    /// <summary>How often the daemon prunes the repository (docs/daemon.md §5); null: never. Valid after <see cref="Validate"/>.</summary>
    public TimeSpan? PruneEvery { get; private set; } = TimeSpan.FromHours(24);
    /// <summary>Prune repacks a pack whose dead bytes exceed this fraction.</summary>
    public double PruneMaxRepackWaste { get; private set; } = new PruneOptions().MaxRepackWaste;
    /// <summary>Prune deletes locks not refreshed for 30 minutes (holders that died) instead of skipping.</summary>
    public bool PruneRemoveStaleLocks { get; private set; }
    private string? _pruneEvery, _pruneWaste, _pruneStale;

    /// <summary>The parsed <see cref="Interval"/>, valid after <see cref="Validate"/>.</summary>
    public TimeSpan IntervalSpan { get; private set; } = TimeSpan.FromSeconds(5);
    public IPEndPoint? StatusEndPoint { get; private set; }
    public string StateDirectory => StateDir ?? Engine.Jobs.StateDirectory.Default;

    /// <summary>Loads the file (required when named explicitly), the environment and the arguments.</summary>
    public static DaemonConfig Load(string? path, IEnumerable<string> args)
    {
        string file = path ?? DefaultPath;
        if (path is not null && !File.Exists(path)) throw new UsageException($"configuration file '{path}' does not exist");
        var builder = new ConfigurationBuilder();
        IConfiguration? fileOnly = null;
        IConfiguration c;
        try
        {
            if (File.Exists(file))
            {
                builder.AddJsonFile(Path.GetFullPath(file), optional: false, reloadOnChange: false);
                fileOnly = new ConfigurationBuilder().AddJsonFile(Path.GetFullPath(file), optional: false, reloadOnChange: false).Build();
            }
            builder.AddEnvironmentVariables("BLOCKREPL_").AddCommandLine([.. args]);
            c = builder.Build();
        }
        catch (Exception e) when (e is FormatException or InvalidDataException or System.Text.Json.JsonException)
        {
            throw new UsageException($"configuration file '{file}' is not valid JSON: {Flatten(e)}");
        }
        var config = new DaemonConfig
        {
            Name = c["name"],
            StateDir = c["stateDir"],
            Repository = c["repository"],
            EndpointUrl = c["endpointUrl"],
            Ebs = c["ebs"],
            EbsEndpointUrl = c["ebsEndpointUrl"],
            Profile = c["profile"],
            Interval = c["interval"] ?? "5s",
            StatusListen = c["statusListen"] ?? "127.0.0.1:9184",
            LogFile = c["logFile"],
            Bandwidth = c["bandwidth"],
        };
        config._fileOnly = fileOnly;
        foreach (var v in c.GetSection("volumes").GetChildren())
            config.Volumes.Add(new VolumeConfig
            {
                Name = v["name"] ?? "", Source = v["source"] ?? "", PointInTime = v["pointInTime"] ?? "auto",
                Freeze = string.IsNullOrEmpty(v["freeze"]) ? null : v["freeze"],
            });
        config._workersText = c["workers"];
        (config._allFor, config._hourlyFor, config._dailyFor) = (c["retention:allFor"], c["retention:hourlyFor"], c["retention:dailyFor"]);
        config._directIoText = c["directIo"];
        // "prune": "never" is short for {"every": "never"}.
        config._pruneEvery = c["prune"] ?? c["prune:every"];
        (config._pruneWaste, config._pruneStale) = (c["prune:maxRepackWaste"], c["prune:removeStaleLocks"]);
        config._file = File.Exists(file) ? file : null;
        return config;
    }

    private IConfiguration? _fileOnly;
    private string? _workersText, _directIoText, _file;

    private static string Flatten(Exception e) => (e.InnerException is { } i ? i.Message : e.Message).ReplaceLineEndings(" ");

    [GeneratedRegex("^[a-z0-9][a-z0-9_-]{0,62}$")]
    private static partial Regex VolumeName();

    private static readonly HashSet<string> Known =
        ["name", "stateDir", "volumes", "retention", "prune", "repository", "endpointUrl", "ebs", "ebsEndpointUrl", "profile", "interval", "workers", "directIo", "statusListen", "logFile", "bandwidth"];

    private static readonly HashSet<string> VolumeKnown = ["name", "source", "pointInTime", "freeze"];

    /// <summary>
    /// <c>pointInTime</c> and <c>freeze</c> of one volume: <c>reflink</c> and a freeze need an image file, and the frozen
    /// filesystem must be a mount point that holds neither the image (the clone would wait for the thaw) nor the
    /// state directory (the freeze record is written there).
    /// </summary>
    private void ValidatePointInTime(VolumeConfig v, string where, List<string> problems)
    {
        if (Engine.Sources.PointInTime.ParseMode(v.PointInTime) is { } mode) v.PointInTimeMode = mode;
        else
        {
            problems.Add($"{where}.pointInTime '{v.PointInTime}': auto, reflink or none");
            return;
        }
        bool qemuOrNbd = NbdBlockSource.IsNbd(v.Source) || QemuSource.IsQemu(v.Source);
        var source = qemuOrNbd || string.IsNullOrWhiteSpace(v.Source) ? default : Native.Linux.LinuxFile.Stat(Path.GetFullPath(v.Source));
        bool notImage = qemuOrNbd || source.Kind == Native.Linux.FileKind.BlockDevice;
        if (mode == PointInTimeMode.Reflink && notImage)
            problems.Add($"{where}.pointInTime reflink: '{v.Source}' is not an image file (only image files can be cloned; QEMU sources use their checkpoints)");
        if (v.Freeze is null) return;
        if (notImage) problems.Add($"{where}.freeze: '{v.Source}' is not an image file; a freeze only lasts while an image's clone is taken");
        if (mode == PointInTimeMode.None) problems.Add($"{where}.freeze needs pointInTime auto or reflink: the freeze lasts only while the clone is taken");
        if (!Path.IsPathFullyQualified(v.Freeze))
        {
            problems.Add($"{where}.freeze '{v.Freeze}': give the absolute mount point, e.g. /mnt/data");
            return;
        }
        var mount = Native.Linux.LinuxFile.Stat(v.Freeze);
        var parent = Path.GetDirectoryName(v.Freeze.TrimEnd('/')) is { Length: > 0 } up ? Native.Linux.LinuxFile.Stat(up) : default;
        if (v.Freeze.TrimEnd('/').Length == 0) problems.Add($"{where}.freeze '/': the root filesystem holds the daemon's own files; freeze a filesystem mounted for the application");
        else if (mount.Kind != Native.Linux.FileKind.Directory) problems.Add($"{where}.freeze '{v.Freeze}' is not a directory");
        else if (parent.Device == mount.Device)
            problems.Add($"{where}.freeze '{v.Freeze}' is not a mount point (freezing it would freeze the filesystem around it)");
        else if (source.Kind == Native.Linux.FileKind.Regular && source.Device == mount.Device)
            problems.Add($"{where}.freeze '{v.Freeze}' holds the image itself: its clone would wait for the thaw; freeze the filesystem the application writes to (e.g. one inside the image)");
        else
        {
            string stateDir = Path.GetFullPath(StateDirectory);
            while (!Directory.Exists(stateDir) && Path.GetDirectoryName(stateDir) is { } up2) stateDir = up2;
            if (Native.Linux.LinuxFile.Stat(stateDir).Device == mount.Device)
                problems.Add($"{where}.freeze '{v.Freeze}' holds the state directory {StateDirectory}: put the state directory elsewhere");
        }
    }

    /// <summary>Checks everything that can be checked before starting; throws one line naming every problem.</summary>
    public void Validate()
    {
        var problems = new List<string>();
        // A misspelt setting in the file would otherwise be ignored silently.
        if (_fileOnly is not null)
            foreach (var s in _fileOnly.GetChildren())
                if (!Known.Contains(s.Key, StringComparer.OrdinalIgnoreCase))
                    problems.Add($"unknown setting '{s.Key}'");
        if (Volumes.Count == 0) problems.Add("no volumes: add \"volumes\": [{\"name\": \"root\", \"source\": \"/dev/vda\"}]");
        var names = new HashSet<string>();
        for (int i = 0; i < Volumes.Count; i++)
        {
            var v = Volumes[i];
            if (!VolumeName().IsMatch(v.Name)) problems.Add($"volumes[{i}].name '{v.Name}': use lower-case letters, digits, '-' and '_' (at most 63)");
            else if (!names.Add(v.Name)) problems.Add($"volumes[{i}].name '{v.Name}' is used twice");
            if (string.IsNullOrWhiteSpace(v.Source)) problems.Add($"volumes[{i}].source is empty");
            else if (!NbdBlockSource.IsNbd(v.Source) && !QemuSource.IsQemu(v.Source) && !File.Exists(v.Source))
                problems.Add($"volumes[{i}].source '{v.Source}' does not exist");
            try { ValidatePointInTime(v, $"volumes[{i}]", problems); }
            catch (Native.Linux.NativeIoException e) { problems.Add($"volumes[{i}]: {e.Message}"); }
        }
        // A misspelt per-volume setting would otherwise be ignored silently too.
        if (_fileOnly is not null)
            foreach (var (vs, i) in _fileOnly.GetSection("volumes").GetChildren().Select((x, i) => (x, i)))
                foreach (var s in vs.GetChildren())
                    if (!VolumeKnown.Contains(s.Key, StringComparer.OrdinalIgnoreCase))
                        problems.Add($"volumes[{i}]: unknown setting '{s.Key}'");
        if (string.IsNullOrWhiteSpace(Repository) && string.IsNullOrWhiteSpace(Ebs))
            problems.Add("no target: set \"repository\" (a directory or s3://bucket/prefix) and/or \"ebs\" (ebs://REGION)");
        if (Repository is not null && EbsTargets.IsEbs(Repository)) problems.Add($"repository '{Repository}' is an EBS target: put it in \"ebs\"");
        if (!string.IsNullOrWhiteSpace(Ebs))
        {
            try { EbsTargets.Region(Ebs); }
            catch (UsageException e) { problems.Add("ebs " + e.Message); }
        }
        if (ParseDuration(Interval) is { } interval && interval >= TimeSpan.Zero && interval <= TimeSpan.FromDays(1)) IntervalSpan = interval;
        else problems.Add($"interval '{Interval}': give a duration such as 5s, 2m or 1h (at most 1 day)");
        TimeSpan Span(string? text, TimeSpan fallback, string name)
        {
            if (text is null) return fallback;
            if (ParseDuration(text) is { } t && t >= TimeSpan.Zero) return t;
            problems.Add($"retention.{name} '{text}': give a duration such as 1h, 24h or 7d");
            return fallback;
        }
        var defaults = RetentionPolicy.Default;
        Retention = new RetentionPolicy(Span(_allFor, defaults.AllFor, "allFor"), Span(_hourlyFor, defaults.HourlyFor, "hourlyFor"), Span(_dailyFor, defaults.DailyFor, "dailyFor"));
        if (_pruneEvery is not null)
        {
            if (_pruneEvery.Trim().Equals("never", StringComparison.OrdinalIgnoreCase)) PruneEvery = null;
            else if (ParseDuration(_pruneEvery) is { } every && every >= TimeSpan.FromMinutes(1)) PruneEvery = every;
            else problems.Add($"prune.every '{_pruneEvery}': give a duration of at least 1m, such as 24h, or \"never\"");
        }
        if (_pruneWaste is not null)
        {
            if (double.TryParse(_pruneWaste.Trim().TrimEnd('%'), NumberStyles.Float, CultureInfo.InvariantCulture, out double pct) && pct is >= 0 and <= 100)
                PruneMaxRepackWaste = pct / 100;
            else problems.Add($"prune.maxRepackWaste '{_pruneWaste}': a percentage from 0 to 100, e.g. 25%");
        }
        if (_pruneStale is not null)
        {
            if (bool.TryParse(_pruneStale, out bool b)) PruneRemoveStaleLocks = b;
            else problems.Add($"prune.removeStaleLocks '{_pruneStale}': true or false");
        }
        if (!string.IsNullOrWhiteSpace(Bandwidth))
        {
            try { BandwidthSchedule = Engine.Throttling.BandwidthSchedule.Parse(Bandwidth); }
            catch (Engine.Throttling.BandwidthScheduleException e) { problems.Add($"bandwidth: {e.Message}"); }
        }
        if (_workersText is not null)
        {
            if (int.TryParse(_workersText, NumberStyles.None, CultureInfo.InvariantCulture, out int w) && w is >= 1 and <= 64) Workers = w;
            else problems.Add($"workers '{_workersText}': a number from 1 to 64");
        }
        if (_directIoText is not null)
        {
            if (bool.TryParse(_directIoText, out bool d)) DirectIo = d;
            else problems.Add($"directIo '{_directIoText}': true or false");
        }
        if (!string.IsNullOrEmpty(StatusListen))
        {
            if (!IPEndPoint.TryParse(StatusListen, out var ep) || ep.Port == 0)
                problems.Add($"statusListen '{StatusListen}': give a loopback address and port, e.g. 127.0.0.1:9184");
            else if (!IPAddress.IsLoopback(ep.Address))
                problems.Add($"statusListen '{StatusListen}': the status endpoint has no authentication, so it listens on loopback only (127.0.0.1 or [::1])");
            else StatusEndPoint = ep;
        }
        if (problems.Count > 0)
            throw new UsageException($"configuration{(_file is null ? "" : $" '{_file}'")}: {string.Join("; ", problems)}");
    }

    /// <summary><c>5s</c>, <c>250ms</c>, <c>2m</c>, <c>1h</c>, <c>1d</c> or a TimeSpan (<c>00:00:05</c>).</summary>
    public static TimeSpan? ParseDuration(string text)
    {
        text = text.Trim();
        var m = Regex.Match(text, "^([0-9]+(?:\\.[0-9]+)?)(ms|s|m|h|d)$");
        if (m.Success)
        {
            double n = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            return m.Groups[2].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(n),
                "s" => TimeSpan.FromSeconds(n),
                "m" => TimeSpan.FromMinutes(n),
                "h" => TimeSpan.FromHours(n),
                _ => TimeSpan.FromDays(n),
            };
        }
        return TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out var t) ? t : null;
    }
}
