using System.Globalization;
using System.Net;
using System.Text;
using BlockRepl.Engine;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Serilog;
using Serilog.Events;

namespace BlockRepl.Daemon;

/// <summary>
/// <c>blockrepl daemon [--config FILE] [--key=value …]</c>: the generic host with systemd integration (Type=notify,
/// stop timeout), Serilog (console lines for journald, optional rolling file), the replication loop as a hosted
/// service, and Kestrel on loopback for <c>/status</c>, <c>/metrics</c>, <c>/pause</c> and <c>/resume</c>.
/// </summary>
public static class DaemonHost
{
    /// <summary>Runs until SIGTERM/SIGINT or <paramref name="ct"/>; configuration errors throw <see cref="UsageException"/> before anything starts.</summary>
    public static async Task<int> RunAsync(string[] argv, CancellationToken ct)
    {
        string? configPath = null;
        var overrides = new List<string>();
        for (int i = 0; i < argv.Length; i++)
        {
            string a = argv[i];
            if (a == "--config") configPath = i + 1 < argv.Length ? argv[++i] : throw new UsageException("--config needs a file name");
            else if (a.StartsWith("--config=", StringComparison.Ordinal)) configPath = a["--config=".Length..];
            else if (a is "--verbose" or "--no-progress") continue;
            else if (a.StartsWith("--", StringComparison.Ordinal) && a.Contains('=')) overrides.Add(a);
            else throw new UsageException($"daemon: unexpected argument '{a}' (use --config FILE and --setting=value overrides)");
        }
        var config = DaemonConfig.Load(configPath, overrides);
        config.Validate();
        string serverId = Engine.Servers.ServerIdentity.LoadOrCreate(config.StateDirectory).Id;

        var logConfig = new LoggerConfiguration()
            .MinimumLevel.Is(argv.Contains("--verbose") ? LogEventLevel.Debug : LogEventLevel.Information)
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            // journald stamps time and unit itself: one plain line per event.
            .WriteTo.Console(outputTemplate: "{Level:u3} {Message:lj}{NewLine}{Exception}", standardErrorFromLevel: LogEventLevel.Verbose);
        if (!string.IsNullOrEmpty(config.LogFile))
            logConfig = logConfig.WriteTo.File(config.LogFile, rollingInterval: RollingInterval.Day, retainedFileCountLimit: 7,
                outputTemplate: "{Timestamp:yyyy-MM-dd'T'HH:mm:ss.fffzzz} {Level:u3} {Message:lj}{NewLine}{Exception}");
        var log = logConfig.CreateLogger();

        await using var replicator = new ServerReplicator(config, serverId, log);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Host.UseSystemd();
        builder.Host.UseSerilog(log, dispose: true);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Services.AddSingleton(replicator);
        builder.Services.AddHostedService<ReplicationWorker>();
        // With the status endpoint off Kestrel is not started at all (it would otherwise bind its default port).
        if (config.StatusEndPoint is { } ep) builder.WebHost.UseKestrel(k => k.Listen(ep));
        else builder.Services.AddSingleton<Microsoft.AspNetCore.Hosting.Server.IServer, NoServer>();
        var app = builder.Build();
        MapEndpoints(app, replicator);

        log.Information("blockrepl daemon {Name} (server {Id}): {Count} volume(s) to {Targets}, every {Interval}; status on {Status}",
            replicator.Status.Name, serverId, config.Volumes.Count,
            string.Join(" and ", new[] { config.Repository, config.Ebs }.Where(t => t is not null)), config.Interval,
            config.StatusEndPoint?.ToString() ?? "(off)");
        try
        {
            await app.StartAsync(ct).ConfigureAwait(false);
        }
        catch (IOException e) when (e.InnerException is System.Net.Sockets.SocketException || e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException($"statusListen {config.StatusEndPoint}: the address is in use (another daemon?)");
        }
        await app.WaitForShutdownAsync(ct).ConfigureAwait(false);
        replicator.SaveStatus();
        return 0;
    }

    private static void MapEndpoints(WebApplication app, ServerReplicator replicator)
    {
        app.MapGet("/status", (HttpContext c) =>
        {
            replicator.RefreshProgress();
            replicator.Status.Refresh(DateTimeOffset.UtcNow);
            return Results.Bytes(replicator.Status.ToJson(), "application/json");
        });
        app.MapGet("/metrics", () =>
        {
            replicator.RefreshProgress();
            replicator.Status.Refresh(DateTimeOffset.UtcNow);
            return Results.Text(Metrics.Format(replicator.Status), "text/plain; version=0.0.4", Encoding.UTF8);
        });
        app.MapPost("/pause", () => { replicator.SetPaused(true); return Results.Ok(); });
        app.MapPost("/resume", () => { replicator.SetPaused(false); return Results.Ok(); });
    }
}

/// <summary>The server when <c>statusListen</c> is empty: accepts the application and listens nowhere.</summary>
internal sealed class NoServer : Microsoft.AspNetCore.Hosting.Server.IServer
{
    public Microsoft.AspNetCore.Http.Features.IFeatureCollection Features { get; } = new Microsoft.AspNetCore.Http.Features.FeatureCollection();
    public Task StartAsync<TContext>(Microsoft.AspNetCore.Hosting.Server.IHttpApplication<TContext> application, CancellationToken cancellationToken) where TContext : notnull => Task.CompletedTask;
    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public void Dispose() { }
}

/// <summary>The hosted service around <see cref="ServerReplicator.RunAsync"/>.</summary>
internal sealed class ReplicationWorker(ServerReplicator replicator) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.Factory.StartNew(() => replicator.RunAsync(stoppingToken), stoppingToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
}

/// <summary>Prometheus text exposition (version 0.0.4) of the status.</summary>
public static class Metrics
{
    private static readonly string[] States =
    [
        ReplicationStates.NotReady, ReplicationStates.InitialSync, ReplicationStates.Continuous, ReplicationStates.Backlog,
        ReplicationStates.Rescan, ReplicationStates.Stalled, ReplicationStates.Paused,
    ];

    public static string Format(ServerStatus s)
    {
        var b = new StringBuilder();
        lock (s.Gate)
        {
            string server = $"server=\"{Escape(s.ServerId)}\",name=\"{Escape(s.Name)}\"";
            Gauge(b, "blockrepl_lag_seconds", "Seconds since the instant the server's last recovery point shows.", server, s.LagSeconds);
            Gauge(b, "blockrepl_achieved_rpo_seconds", "Largest lag just before a new recovery point, over the last hour.", server, s.AchievedRpoSeconds);
            Gauge(b, "blockrepl_paused", "1 while replication is paused.", server, s.Paused ? 1 : 0);
            Counter(b, "blockrepl_cycles_total", "Completed replication cycles.", server, s.Cycles);
            Counter(b, "blockrepl_errors_total", "Failed volume replications.", server, s.Errors);
            Header(b, "blockrepl_ready_for_test", "1 once every volume has a recovery point (READY_FOR_TEST).", "gauge");
            Line(b, "blockrepl_ready_for_test", server, s.Lifecycle == "READY_FOR_TEST" ? 1 : 0);

            void PerVolume(string name, string help, string type, Func<VolumeStatus, double?> value)
            {
                Header(b, name, help, type);
                foreach (var v in s.Volumes) if (value(v) is { } x) Line(b, name, $"{server},volume=\"{Escape(v.Name)}\"", x);
            }
            PerVolume("blockrepl_volume_lag_seconds", "Seconds since the instant the volume's last recovery point shows.", "gauge", v => v.LagSeconds);
            PerVolume("blockrepl_volume_total_bytes", "Size of the volume.", "gauge", v => v.TotalBytes);
            PerVolume("blockrepl_volume_replicated_bytes", "Bytes of the volume the target holds.", "gauge", v => v.ReplicatedBytes);
            PerVolume("blockrepl_volume_backlog_bytes", "Bytes the current cycle still has to read.", "gauge", v => v.BacklogBytes);
            PerVolume("blockrepl_volume_rescanned_bytes_total", "Bytes read by RESCAN cycles.", "counter", v => v.RescannedBytes);
            PerVolume("blockrepl_volume_changed_bytes_last_cycle", "Changed bytes the last cycle replicated.", "gauge", v => v.ChangedBytesLastCycle);
            PerVolume("blockrepl_volume_throughput_bytes_per_second", "Read throughput of the last cycle.", "gauge", v => v.ThroughputBytesPerSecond);
            PerVolume("blockrepl_volume_cycles_total", "Completed cycles of the volume.", "counter", v => v.Cycles);
            PerVolume("blockrepl_volume_errors_total", "Failed cycles of the volume.", "counter", v => v.Errors);
            Header(b, "blockrepl_volume_state", "1 for the volume's replication state.", "gauge");
            foreach (var v in s.Volumes)
                foreach (var st in States)
                    Line(b, "blockrepl_volume_state", $"{server},volume=\"{Escape(v.Name)}\",state=\"{st}\"", v.State == st ? 1 : 0);
        }
        return b.ToString();
    }

    private static void Gauge(StringBuilder b, string name, string help, string labels, double? value)
    {
        Header(b, name, help, "gauge");
        if (value is { } v) Line(b, name, labels, v);
    }

    private static void Counter(StringBuilder b, string name, string help, string labels, double value)
    {
        Header(b, name, help, "counter");
        Line(b, name, labels, value);
    }

    private static void Header(StringBuilder b, string name, string help, string type) =>
        b.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n').Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

    private static void Line(StringBuilder b, string name, string labels, double value) =>
        b.Append(name).Append('{').Append(labels).Append("} ").Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');

    private static string Escape(string s) => s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
