using System.Net.Http;
using BlockRepl.Daemon;
using BlockRepl.Engine;

namespace BlockRepl.Cli;

/// <summary><c>blockrepl daemon</c> and <c>blockrepl status</c> (docs/daemon.md).</summary>
internal static class DaemonCommands
{
    public static Task<int> DaemonAsync(string[] argv, CancellationToken ct) => DaemonHost.RunAsync(argv, ct);

    /// <summary>
    /// Asks the running daemon (its loopback endpoint, from --url or the configuration) for its status; when it does
    /// not answer, shows the status it last saved in the state directory, saying so.
    /// </summary>
    public static async Task<int> StatusAsync(string[] argv, CancellationToken ct)
    {
        var a = Args.Parse(argv, new HashSet<string> { "--config", "--url", "--state-dir" }, new HashSet<string> { "--json", "--verbose", "--no-progress" });
        if (a.Positionals.Count > 0) throw new UsageException($"status takes no arguments (got '{a.Positionals[0]}')");
        DaemonConfig? config = null;
        if (a.Value("--url") is null || a.Value("--state-dir") is null)
        {
            try { config = DaemonConfig.Load(a.Value("--config"), []); }
            catch (UsageException) when (a.Value("--config") is null) { }
        }
        string url = a.Value("--url") ?? $"http://{(string.IsNullOrEmpty(config?.StatusListen) ? "127.0.0.1:9184" : config!.StatusListen)}";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var baseUri) || baseUri.Scheme != "http")
            throw new UsageException($"--url '{url}': give the daemon's status address, e.g. http://127.0.0.1:9184");

        ServerStatus? status = null;
        string? note = null;
        using (var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) })
        {
            try
            {
                var bytes = await http.GetByteArrayAsync(new Uri(baseUri, "/status"), ct).ConfigureAwait(false);
                status = ServerStatus.FromJson(bytes);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException)
            {
                string stateDir = a.Value("--state-dir") ?? config?.StateDirectory ?? Engine.Jobs.StateDirectory.Default;
                string saved = Path.Combine(stateDir, "daemon-status.json");
                if (!File.Exists(saved))
                    throw new NotFoundException($"no daemon answers at {baseUri} ({e.Message.ReplaceLineEndings(" ")}) and no saved status in {stateDir}");
                status = ServerStatus.FromJson(File.ReadAllBytes(saved));
                note = $"the daemon does not answer at {baseUri}; its status as saved {File.GetLastWriteTimeUtc(saved):u}";
            }
        }
        if (status is null) throw new NotFoundException($"the daemon at {baseUri} sent no status");
        if (a.Flag("--json"))
        {
            Console.Out.Write(System.Text.Encoding.UTF8.GetString(status.ToJson()));
            Console.WriteLine();
            return ExitCodes.Ok;
        }
        if (note is not null) Console.WriteLine($"({note})");
        Console.WriteLine($"server {status.Name} ({status.ServerId}): {status.State}, {status.Lifecycle}{(status.Paused ? ", paused" : "")}");
        Console.WriteLine($"  lag {Seconds(status.LagSeconds)}, achieved RPO {Seconds(status.AchievedRpoSeconds)}, {status.Cycles} cycles, {status.Errors} errors"
            + (status.LastPoint is null ? "" : $", last point {status.LastPoint} ({status.LastPointTime:u})"));
        Console.WriteLine();
        Console.WriteLine($"  {"VOLUME",-12} {"STATE",-13} {"SIZE",10} {"REPLICATED",10} {"BACKLOG",10} {"LAG",8} {"LAST",-11} {"VIEW",-16} DETAIL");
        foreach (var v in status.Volumes)
        {
            string detail = v.State == ReplicationStates.InitialSync && v.Percent is { } p
                ? $"{p:0.0} %" + (v.EtaSeconds is { } eta ? $", ETA {Format.Duration(eta)}" : "")
                : v.Reason ?? (v.LastPointConsistent == false ? $"fuzzy: {v.ViewNote ?? "no point-in-time view"}" : "");
            Console.WriteLine($"  {v.Name,-12} {v.State,-13} {Format.Bytes(v.TotalBytes),10} {Format.Bytes(v.ReplicatedBytes),10} {Format.Bytes(v.BacklogBytes),10} {Seconds(v.LagSeconds),8} {v.LastMode ?? "-",-11} {v.View ?? "-",-16} {detail}");
        }
        return ExitCodes.Ok;
    }

    private static string Seconds(double? s) => s is { } v ? Format.Duration(v) : "-";
}
