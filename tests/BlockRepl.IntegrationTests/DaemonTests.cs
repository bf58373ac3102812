using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>A `blockrepl daemon` process with its loopback status endpoint, for tests.</summary>
internal sealed class DaemonProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private static readonly HttpClient s_http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public Uri Url { get; }
    public int Pid => _process.Id;
    public string Output { get { lock (_output) return _output.ToString(); } }

    private DaemonProcess(Process process, Uri url)
    {
        _process = process;
        Url = url;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_output) _output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>Writes the configuration and starts the daemon on it.</summary>
    public static DaemonProcess Start(string configPath, object config, int port, IDictionary<string, string>? env = null)
    {
        File.WriteAllText(configPath, JsonSerializer.Serialize(config));
        var p = CliRunner.Start(["daemon", "--config", configPath], env);
        return new DaemonProcess(p, new Uri($"http://127.0.0.1:{port}"));
    }

    public async Task<JsonElement?> TryStatusAsync()
    {
        try { return JsonDocument.Parse(await s_http.GetStringAsync(new Uri(Url, "/status"))).RootElement.Clone(); }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return null; }
    }

    public async Task<string> MetricsAsync() => await s_http.GetStringAsync(new Uri(Url, "/metrics"));

    public async Task PostAsync(string path) => (await s_http.PostAsync(new Uri(Url, path), null)).EnsureSuccessStatusCode();

    /// <summary>Polls the status until <paramref name="condition"/> holds (the daemon must not exit meanwhile).</summary>
    public async Task<JsonElement> WaitForAsync(Func<JsonElement, bool> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = Stopwatch.StartNew();
        JsonElement? last = null;
        while (deadline.Elapsed < (timeout ?? TimeSpan.FromMinutes(2)))
        {
            if (_process.HasExited) Assert.Fail($"the daemon exited ({_process.ExitCode}) while waiting for {what}:\n{Output}");
            last = await TryStatusAsync();
            if (last is { } s && condition(s)) return s;
            await Task.Delay(100);
        }
        Assert.Fail($"timed out waiting for {what}; last status: {last}\n{Output}");
        return default;
    }

    public void KillHard()
    {
        _process.Kill();
        _process.WaitForExit();
    }

    /// <summary>SIGTERM, then waits for the exit code.</summary>
    public int Terminate()
    {
        Processes.Run("kill", $"-TERM {_process.Id}");
        Assert.True(_process.WaitForExit(60_000), $"the daemon did not stop within 60 s of SIGTERM:\n{Output}");
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        _process.Dispose();
    }

    public static JsonElement Volume(JsonElement status, int i = 0) => status.GetProperty("volumes")[i];
    public static string State(JsonElement status, int i = 0) => Volume(status, i).GetProperty("state").GetString()!;
    public static long Cycles(JsonElement status, int i = 0) => Volume(status, i).GetProperty("cycles").GetInt64();
}

/// <summary>
/// Issue #6: `blockrepl daemon` end to end — configuration errors; continuous replication of a loop device under a
/// steady write load that survives kill -9 and ends with a replica equal to the device; status, metrics, pause.
/// </summary>
public sealed class DaemonTests : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-daemon");
    public void Dispose() => _dir.Dispose();

    [Fact]
    public void A_bad_configuration_is_refused_in_one_line_that_names_every_problem()
    {
        string path = _dir.File("bad.json");
        File.WriteAllText(path, """{ "volumes": [{ "name": "Root Disk", "source": "/nonexistent/disk.img" }], "statusListen": "0.0.0.0:9999", "interval": "soon", "colour": "blue", "bandwidth": "fast" }""");
        var r = CliRunner.Run("daemon", "--config", path);
        Cli.AssertOneLineError(r, 2);
        foreach (var part in new[] { "unknown setting 'colour'", "volumes[0].name 'Root Disk'", "does not exist", "no target", "interval 'soon'", "loopback only", "bandwidth: " })
            Assert.Contains(part, r.Stderr);

        File.WriteAllText(path, """{ "volumes": [{ "name": "root", "source": "/nonexistent/disk.img" }], "repository": "/tmp/r", "prune": { "every": "sometimes", "maxRepackWaste": "150%", "removeStaleLocks": "maybe" } }""");
        r = CliRunner.Run("daemon", "--config", path);
        Cli.AssertOneLineError(r, 2);
        foreach (var part in new[] { "prune.every 'sometimes'", "prune.maxRepackWaste '150%'", "prune.removeStaleLocks 'maybe'" })
            Assert.Contains(part, r.Stderr);

        Cli.AssertOneLineError(CliRunner.Run("daemon", "--config", _dir.File("missing.json")), 2, mentions: "does not exist");
        File.WriteAllText(path, "{ \"volumes\": [ ");
        Cli.AssertOneLineError(CliRunner.Run("daemon", "--config", path), 2, mentions: "not valid JSON");
    }

    [Fact]
    public void The_systemd_unit_in_the_repository_is_valid()
    {
        Assert.True(Processes.HasCommand("systemd-analyze"), "systemd-analyze (package systemd) is needed to check the unit");
        string unit = Path.Combine(RepoRoot(), "packaging", "systemd", "blockrepl.service");
        string text = File.ReadAllText(unit);
        Assert.Contains("Type=notify", text);
        Assert.Contains("ExecStart=/usr/local/bin/blockrepl daemon --config /etc/blockrepl/blockrepl.json", text);
        // The binary is not installed here: point ExecStart at one that exists, keep everything else.
        string Verify(string content)
        {
            string dir = _dir.File($"unit-{Guid.NewGuid():N}");
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "blockrepl.service"), content.Replace("/usr/local/bin/blockrepl", "/bin/true", StringComparison.Ordinal));
            var r = Processes.Run("systemd-analyze", $"verify {Processes.Quote(Path.Combine(dir, "blockrepl.service"))}", check: false);
            return (r.Stdout + r.Stderr).Trim();
        }
        Assert.Equal("", Verify(text));
        Assert.Contains("notfy", Verify(text.Replace("Type=notify", "Type=notfy", StringComparison.Ordinal))); // the check can fail
    }

    private static string RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "BlockRepl.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("BlockRepl.sln not found above the test binaries");
    }

    [Fact]
    public async Task A_loop_device_under_writes_replicates_continuously_survives_kill_9_and_ends_equal_to_the_device()
    {
        string image = _dir.File("disk.img");
        DiskImages.Mixed(image, 64L << 20, seed: 61);
        using var loop = LoopDevice.Attach(image);
        string repo = _dir.File("repo"), state = _dir.File("state");
        int port = DaemonProcess.FreePort();
        var config = new { name = "web-1", stateDir = state, repository = repo, interval = "500ms", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "disk", source = loop.DevicePath } } };

        using var stopWriting = new CancellationTokenSource();
        var writer = Task.Run(() => WriteSteadily(loop.DevicePath, stopWriting.Token));
        string serverId;
        using (var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port))
        {
            var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 3, "three cycles");
            Assert.Equal("READY_FOR_TEST", s.GetProperty("lifecycle").GetString());
            serverId = s.GetProperty("serverId").GetString()!;
            daemon.KillHard();
        }
        using (var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port))
        {
            // The same server continues incrementally from its change map: no new initial sync.
            var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 2, "two cycles after the restart");
            Assert.Equal(serverId, s.GetProperty("serverId").GetString());
            Assert.Equal("INCREMENTAL", DaemonProcess.Volume(s).GetProperty("lastMode").GetString());

            stopWriting.Cancel();
            await writer;
            var quiet = DateTimeOffset.UtcNow;
            s = await daemon.WaitForAsync(s => DaemonProcess.Volume(s).GetProperty("lastPointTime").GetDateTimeOffset() > quiet, "a recovery point after the writes stopped");
            Assert.Equal(0, daemon.Terminate());
            string last = DaemonProcess.Volume(s).GetProperty("lastRecoveryPoint").GetString()!;
            Cli.Restore(last, repo, _dir.File("replica.img"));
        }
        Assert.True(Files.ContentEquals(image, _dir.File("replica.img")), "the replica differs from the device at its last recovery point");
        // Every cycle published a server recovery point naming the volume's recovery point.
        Assert.True(Directory.EnumerateFiles(Path.Combine(repo, "points", serverId)).Count() >= 5);
        // And `fleet` lists the server with its record.
        var fleet = JsonDocument.Parse(CliRunner.Ok("fleet", "--repo", repo, "--json")).RootElement;
        Assert.Contains(fleet.EnumerateArray(), e => e.GetProperty("serverId").GetString() == serverId && e.GetProperty("name").GetString() == "web-1");
    }

    /// <summary>4 KiB writes at random offsets, about 40 per second, each flushed to the device.</summary>
    private static void WriteSteadily(string device, CancellationToken ct)
    {
        var rng = new Random(5);
        var block = new byte[4096];
        using var fs = new FileStream(device, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        long slots = fs.Length / block.Length;
        while (!ct.IsCancellationRequested)
        {
            rng.NextBytes(block);
            fs.Position = rng.NextInt64(slots) * block.Length;
            fs.Write(block);
            fs.Flush(flushToDisk: true);
            ct.WaitHandle.WaitOne(25);
        }
    }

    [Fact]
    public async Task The_bandwidth_cap_holds_the_initial_sync_to_its_rate()
    {
        string image = _dir.File("random.img");
        DiskImages.Random(image, 24L << 20, seed: 3); // incompressible: every byte read is a byte stored
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = _dir.File("state"), repository = _dir.File("repo"), interval = "1h", statusListen = $"127.0.0.1:{port}",
            bandwidth = "40Mbps", volumes = new[] { new { name = "vol", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1, "the initial sync");
        double seconds = DaemonProcess.Volume(s).GetProperty("lastCycleSeconds").GetDouble();
        double rate = (24L << 20) / seconds;
        // 40 Mbps = 5,000,000 B/s. The cap may only slow the sync down: more than 10 % above it means it did not hold.
        Assert.True(rate <= 5_000_000 * 1.10, $"the initial sync stored {rate / 1e6:0.00} MB/s under a 5 MB/s cap");
        Assert.Equal(0, daemon.Terminate());
    }

    [Fact]
    public async Task Status_metrics_and_pause_show_the_replication_and_the_cli_reads_them()
    {
        string image = _dir.File("vol.img");
        DiskImages.Mixed(image, 8L << 20, seed: 7);
        string state = _dir.File("state");
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = state, repository = _dir.File("repo"), interval = "200ms", statusListen = $"127.0.0.1:{port}",
            volumes = new[] { new { name = "data", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port);
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 2 && DaemonProcess.State(s) == "CONTINUOUS", "continuous replication");
        var v = DaemonProcess.Volume(s);
        Assert.Equal(8L << 20, v.GetProperty("totalBytes").GetInt64());
        Assert.Equal(8L << 20, v.GetProperty("replicatedBytes").GetInt64());
        Assert.False(v.GetProperty("lastPointConsistent").GetBoolean()); // a plain image file: fuzzy, and said so
        Assert.True(s.GetProperty("lagSeconds").GetDouble() >= 0);

        string metrics = await daemon.MetricsAsync();
        Assert.Contains("# TYPE blockrepl_lag_seconds gauge", metrics);
        Assert.Contains("volume=\"data\",state=\"CONTINUOUS\"} 1", metrics);
        Assert.Contains("blockrepl_volume_total_bytes{", metrics);
        Assert.Matches("blockrepl_volume_cycles_total\\{[^}]*volume=\"data\"\\} [1-9]", metrics);

        var table = CliRunner.Run("status", "--url", daemon.Url.ToString());
        Assert.True(table.ExitCode == 0, table.ToString());
        Assert.Contains("CONTINUOUS", table.Stdout);
        Assert.Contains("data", table.Stdout);
        var json = JsonDocument.Parse(CliRunner.Ok("status", "--url", daemon.Url.ToString(), "--json")).RootElement;
        Assert.Equal(s.GetProperty("serverId").GetString(), json.GetProperty("serverId").GetString());

        await daemon.PostAsync("/pause");
        await daemon.WaitForAsync(s => DaemonProcess.State(s) == "PAUSED", "PAUSED");
        long cycles = DaemonProcess.Cycles((await daemon.TryStatusAsync())!.Value);
        await daemon.PostAsync("/resume");
        await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) > cycles && DaemonProcess.State(s) == "CONTINUOUS", "a cycle after resuming");

        Assert.Equal(0, daemon.Terminate());
        // Stopped: the CLI falls back to the status the daemon saved, and says so.
        var saved = CliRunner.Run("status", "--url", daemon.Url.ToString(), "--state-dir", state);
        Assert.True(saved.ExitCode == 0, saved.ToString());
        Assert.Contains("does not answer", saved.Stdout);
    }
}

/// <summary>Issue #6: a target outage makes the volume STALLED with its reason; afterwards the daemon catches up incrementally.</summary>
[Collection("rgw")]
public sealed class DaemonOutageTests(RgwServer server) : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-daemon-outage");
    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_target_outage_is_STALLED_with_its_reason_then_caught_up_without_a_rescan()
    {
        string bucket = await server.CreateBucketAsync("daemon-outage");
        string image = _dir.File("vol.img");
        DiskImages.Mixed(image, 16L << 20, seed: 9);
        using var proxy = new FaultProxy(new Uri(server.Endpoint), seed: 3);
        int port = DaemonProcess.FreePort();
        var config = new { stateDir = _dir.File("state"), repository = $"s3://{bucket}/p", endpointUrl = proxy.Url.ToString(), interval = "300ms",
            statusListen = $"127.0.0.1:{port}", volumes = new[] { new { name = "vol", source = image } } };
        using var daemon = DaemonProcess.Start(_dir.File("blockrepl.json"), config, port, new Dictionary<string, string>(server.ClientEnvironment));
        await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) >= 1 && DaemonProcess.State(s) == "CONTINUOUS", "the initial sync");

        proxy.FailAll = true;
        WriteLoad.ScatteredWrites(image, 20, 4096, seed: 12);
        var stalled = await daemon.WaitForAsync(s => DaemonProcess.State(s) == "STALLED", "STALLED", TimeSpan.FromMinutes(3));
        Assert.False(string.IsNullOrEmpty(DaemonProcess.Volume(stalled).GetProperty("reason").GetString()));
        Assert.Contains("state=\"STALLED\"} 1", await daemon.MetricsAsync());
        long cycles = DaemonProcess.Cycles(stalled);

        var healed = DateTimeOffset.UtcNow;
        proxy.FailAll = false;
        var s = await daemon.WaitForAsync(s => DaemonProcess.Cycles(s) > cycles && DaemonProcess.State(s) == "CONTINUOUS"
            && DaemonProcess.Volume(s).GetProperty("lastPointTime").GetDateTimeOffset() > healed, "catching up", TimeSpan.FromMinutes(3));
        Assert.Equal("INCREMENTAL", DaemonProcess.Volume(s).GetProperty("lastMode").GetString());
        Assert.Equal(0, daemon.Terminate());

        var env = new Dictionary<string, string>(server.ClientEnvironment) { ["AWS_ENDPOINT_URL_S3"] = server.Endpoint };
        var r = CliRunner.Run(["restore", DaemonProcess.Volume(s).GetProperty("lastRecoveryPoint").GetString()!, "--repo", $"s3://{bucket}/p",
            "--to", _dir.File("replica.img"), "--no-progress"], env, TimeSpan.FromMinutes(2));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.True(Files.ContentEquals(image, _dir.File("replica.img")));
    }
}
