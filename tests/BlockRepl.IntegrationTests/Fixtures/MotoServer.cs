using System.Diagnostics;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests.Fixtures;

/// <summary>
/// <c>moto_server</c> (Python moto 5.2, part of the machine image) on 127.0.0.1 and a free port: the
/// second, independent S3 implementation, for what RGW 16 gets wrong (conditional writes on versioned
/// and Object Lock buckets). It accepts any credentials. Share it with <c>[Collection("moto")]</c>.
/// A failed start throws with the server's output; it never skips.
/// </summary>
public sealed class MotoServer : IS3TestServer, IAsyncLifetime
{
    private const int MaxLogLines = 200;
    private static readonly TimeSpan s_startTimeout = TimeSpan.FromSeconds(60);
    private readonly Queue<string> _log = new();
    private Process? _process;
    private IReadOnlyDictionary<string, string>? _clientEnv;

    public string Endpoint { get; private set; } = string.Empty;

    public string AccessKey => "motoaccesskey";

    public string SecretKey => "motosecretkey";

    public string Region => S3TestServers.Region;

    public IReadOnlyDictionary<string, string> ClientEnvironment =>
        _clientEnv ?? throw new InvalidOperationException("MotoServer is not started");

    public TimeSpan StartTime { get; private set; }

    public Task<string> CreateBucketAsync(string namePrefix, bool versioning = false, bool objectLock = false) =>
        S3TestServers.CreateBucketAsync(this, namePrefix, versioning, objectLock);

    public async Task InitializeAsync()
    {
        string moto = Processes.HasCommand("moto_server")
            ? "moto_server"
            : throw new InvalidOperationException("moto_server is not on PATH (Python moto is part of the machine image)");
        int port = S3TestServers.FreePort();
        var sw = Stopwatch.StartNew();

        // bash owns moto_server and stops it as soon as this test host is gone (even after kill -9);
        // on dispose the whole tree is killed.
        var psi = new ProcessStartInfo("bash")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in new[]
        {
            "-c",
            "\"$1\" -H 127.0.0.1 -p \"$2\" & m=$!; " +
            "while kill -0 \"$3\" 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 1; done; " +
            "kill $m 2>/dev/null; wait $m",
            "moto-owner", moto, port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture),
        })
        {
            psi.ArgumentList.Add(a);
        }

        var process = new Process { StartInfo = psi };
        process.OutputDataReceived += (_, e) => AddLog(e.Data);
        process.ErrorDataReceived += (_, e) => AddLog(e.Data);
        process.Start();
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        Endpoint = $"http://127.0.0.1:{port}";

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        string last = "no answer";
        while (sw.Elapsed < s_startTimeout)
        {
            if (process.HasExited)
            {
                last = $"moto_server exited with {process.ExitCode}";
                break;
            }

            try
            {
                using var response = await http.GetAsync(new Uri(Endpoint + "/")).ConfigureAwait(false);
                string body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
                if (response.IsSuccessStatusCode && body.Contains("ListAllMyBucketsResult", StringComparison.Ordinal))
                {
                    StartTime = sw.Elapsed;
                    _clientEnv = S3TestServers.ClientEnvironment(this);
                    return;
                }

                last = $"HTTP {(int)response.StatusCode}: {body[..Math.Min(body.Length, 200)]}";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            catch (TaskCanceledException e)
            {
                last = e.Message;
            }

            await Task.Delay(100).ConfigureAwait(false);
        }

        await DisposeAsync().ConfigureAwait(false);
        throw new InvalidOperationException(
            $"moto_server did not answer on {Endpoint} within {sw.Elapsed.TotalSeconds:0.0} s ({last}). Output:\n{LogTail()}");
    }

    public async Task DisposeAsync()
    {
        var process = _process;
        _process = null;
        if (process is null)
        {
            return;
        }

        using (process)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }

            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
    }

    private void AddLog(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            _log.Enqueue(line);
            while (_log.Count > MaxLogLines)
            {
                _log.Dequeue();
            }
        }
    }

    private string LogTail()
    {
        lock (_log)
        {
            return string.Join('\n', _log);
        }
    }
}

/// <summary>One <see cref="MotoServer"/> shared by every test class marked <c>[Collection("moto")]</c>.</summary>
[CollectionDefinition("moto")]
public sealed class MotoCollection : ICollectionFixture<MotoServer>
{
}
