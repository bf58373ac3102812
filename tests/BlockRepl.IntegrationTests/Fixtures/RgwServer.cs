using System.Diagnostics;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests.Fixtures;

/// <summary>
/// Ceph's RADOS Gateway (Debian's radosgw 16.2, single-node cluster on memstore) as a real S3 server
/// on 127.0.0.1, started with <c>scripts/rgw/start-rgw.sh</c> on free ports and a private home, and
/// stopped on dispose. Share it with <c>[Collection("rgw")]</c>; isolate tests with
/// <see cref="CreateBucketAsync"/>. Known deviations from AWS (conditional writes ignored on versioned
/// buckets, lock headers ignored on multipart and copy): ../shared/ref/rgw.md §0.
/// A failed start throws with the daemon log tails; it never skips.
/// </summary>
public sealed class RgwServer : IS3TestServer, IAsyncLifetime
{
    private const int Attempts = 2;
    private string? _home;
    private string? _scripts;
    private IReadOnlyDictionary<string, string>? _clientEnv;

    public string Endpoint { get; private set; } = string.Empty;

    public string AccessKey { get; } = "BLOCKREPLTESTKEY0001";

    public string SecretKey { get; } = "blockrepl-test-secret-0000000000000000001";

    public string Region => S3TestServers.Region;

    public IReadOnlyDictionary<string, string> ClientEnvironment =>
        _clientEnv ?? throw new InvalidOperationException("RgwServer is not started");

    /// <summary>The cluster's base directory (logs in <c>cluster/log</c> while it runs).</summary>
    public string Home => _home ?? throw new InvalidOperationException("RgwServer is not started");

    /// <summary>Wall time of the successful start (for the record; about 3–5 s).</summary>
    public TimeSpan StartTime { get; private set; }

    public Task<string> CreateBucketAsync(string namePrefix, bool versioning = false, bool objectLock = false) =>
        S3TestServers.CreateBucketAsync(this, namePrefix, versioning, objectLock);

    public async Task InitializeAsync()
    {
        _scripts = Path.Combine(S3TestServers.RepoRoot(), "scripts", "rgw");
        var failures = new List<string>();
        for (int attempt = 1; attempt <= Attempts; attempt++)
        {
            int rgwPort = S3TestServers.FreePort();
            int monPort = S3TestServers.FreePort();
            int osdPortMin = S3TestServers.FreePort(span: 100);
            string home = Directory.CreateTempSubdirectory("blockrepl-rgw-").FullName;
            var env = new Dictionary<string, string>
            {
                ["RGW_HOME"] = home,
                ["RGW_PORT"] = rgwPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["MON_PORT"] = monPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["OSD_PORT_MIN"] = osdPortMin.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["S3_ACCESS_KEY"] = AccessKey,
                ["S3_SECRET_KEY"] = SecretKey,
                // A killed test host must not leave a cluster behind: the script's watchdog stops it.
                ["RGW_OWNER_PID"] = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            var sw = Stopwatch.StartNew();
            var r = await Task.Run(() => Processes.Run(
                Path.Combine(_scripts, "start-rgw.sh"), string.Empty, check: false, timeout: TimeSpan.FromMinutes(3), env: env)).ConfigureAwait(false);
            sw.Stop();
            if (r.ExitCode == 0 && r.Stdout.Contains($"S3 READY http://127.0.0.1:{rgwPort}", StringComparison.Ordinal))
            {
                _home = home;
                Endpoint = $"http://127.0.0.1:{rgwPort}";
                StartTime = sw.Elapsed;
                _clientEnv = S3TestServers.ClientEnvironment(this);
                return;
            }

            failures.Add($"attempt {attempt} (RGW_HOME={home}, ports rgw {rgwPort} mon {monPort} osd {osdPortMin}+, exit {r.ExitCode}, {sw.Elapsed.TotalSeconds:0.0} s):\n--- stdout\n{r.Stdout}\n--- stderr (daemon log tails)\n{r.Stderr}");
            // The script already stopped its daemons (keeping the logs); make sure, then keep only
            // the last attempt's home for inspection.
            await StopAsync(home, keepData: true).ConfigureAwait(false);
            bool portClash = r.Stderr.Contains("in use", StringComparison.Ordinal);
            if (!portClash)
            {
                break;
            }

            TryDelete(home);
        }

        throw new InvalidOperationException(
            "RADOS Gateway did not start (scripts/rgw/start-rgw.sh; needs the Debian packages radosgw ceph-mon ceph-osd, "
            + "which scripts/test.sh installs).\n" + string.Join("\n", failures));
    }

    public async Task DisposeAsync()
    {
        if (_home is null)
        {
            return;
        }

        string home = _home;
        _home = null;
        var r = await StopAsync(home, keepData: false).ConfigureAwait(false);
        if (r.ExitCode != 0)
        {
            throw new InvalidOperationException($"stop-rgw.sh failed for {home} (exit {r.ExitCode}): {r.Stderr}{r.Stdout}");
        }

        TryDelete(home);
    }

    private Task<(int ExitCode, string Stdout, string Stderr)> StopAsync(string home, bool keepData)
    {
        var env = new Dictionary<string, string> { ["RGW_HOME"] = home, ["KEEP_DATA"] = keepData ? "1" : "0" };
        return Task.Run(() => Processes.Run(
            Path.Combine(_scripts!, "stop-rgw.sh"), string.Empty, check: false, timeout: TimeSpan.FromMinutes(1), env: env));
    }

    private static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>One <see cref="RgwServer"/> shared by every test class marked <c>[Collection("rgw")]</c>.</summary>
[CollectionDefinition("rgw")]
public sealed class RgwCollection : ICollectionFixture<RgwServer>
{
}
