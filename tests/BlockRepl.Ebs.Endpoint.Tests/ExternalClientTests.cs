using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>Locates tests/ebs-js (the @aws-sdk/client-ebs driver) from the test binaries.</summary>
internal static class EbsJs
{
    public static string? Directory { get; } = Find();

    private static string? Find()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "ebs-js");
            if (File.Exists(Path.Combine(candidate, "package.json"))) return candidate;
        }
        return null;
    }

    public static string? WhyUnavailable()
    {
        if (Directory is null) return "tests/ebs-js not found above the test binaries";
        if (!System.IO.Directory.Exists(Path.Combine(Directory, "node_modules", "@aws-sdk", "client-ebs")))
            return "tests/ebs-js/node_modules is missing: run `npm ci --prefix tests/ebs-js` (scripts/test.sh does)";
        return OnPath("node") ? null : "node is not installed";
    }

    public static bool OnPath(string exe) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(p => p.Length > 0 && File.Exists(Path.Combine(p, exe)));
}

/// <summary>A fact skipped, with the reason, when the JS SDK driver cannot run here.</summary>
public sealed class NodeFactAttribute : FactAttribute
{
    public NodeFactAttribute()
    {
        if (EbsJs.WhyUnavailable() is { } why) Skip = why;
    }
}

/// <summary>A fact skipped when the AWS CLI is not installed.</summary>
public sealed class AwsCliFactAttribute : FactAttribute
{
    public AwsCliFactAttribute()
    {
        if (!EbsJs.OnPath("aws")) Skip = "the AWS CLI (aws) is not installed";
    }
}

/// <summary>Independent official clients against the endpoint: the JS SDK v3 EBS client and the AWS CLI (botocore).</summary>
public class ExternalClientTests
{
    private static Dictionary<string, string> Credentials() => new()
    {
        ["AWS_ACCESS_KEY_ID"] = TestEndpoint.AccessKey,
        ["AWS_SECRET_ACCESS_KEY"] = TestEndpoint.SecretKey,
        ["AWS_SESSION_TOKEN"] = "",
        ["AWS_DEFAULT_REGION"] = "us-east-1",
        ["AWS_REGION"] = "us-east-1",
        ["AWS_CONFIG_FILE"] = "/nonexistent/blockrepl-test-config",
        ["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/blockrepl-test-credentials",
        ["AWS_EC2_METADATA_DISABLED"] = "true",
        ["AWS_PAGER"] = "",
    };

    [NodeFact]
    public async Task The_AWS_SDK_for_JavaScript_runs_the_whole_lifecycle_against_the_endpoint()
    {
        await using var ep = await TestEndpoint.StartAsync();
        var (code, stdout, stderr) = await Task.Run(() => Processes.Run("node", $"ebs-roundtrip.mjs {ep.Base.GetLeftPart(UriPartial.Authority)}",
            check: false, timeout: TimeSpan.FromMinutes(2), workingDir: EbsJs.Directory, env: Credentials()));
        string line = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";
        Assert.True(code == 0, $"node exited {code}\nstdout: {stdout}\nstderr: {stderr}");
        var r = JsonDocument.Parse(line).RootElement;
        Assert.True(r.GetProperty("ok").GetBoolean());
        Assert.Equal(153, r.GetProperty("parentBlocks").GetInt32());
        Assert.Equal(154, r.GetProperty("childBlocks").GetInt32());
        Assert.True(r.GetProperty("tokenHasReservedChars").GetBoolean());
        Assert.Equal("3hkXyCDr36rg2eDqBxV5ZdzJOm+UCWAYaDS7rB6bzM8=", TestEndpoint.Linear([TestEndpoint.VectorBlock(0), TestEndpoint.VectorBlock(3), TestEndpoint.VectorBlock(5)]));
        Assert.Equal("UNRELATED_SNAPSHOTS", r.GetProperty("unrelatedError").GetProperty("reason").GetString());
        var puts = ep.Server.GetStats().Operations["PutSnapshotBlock"];
        Assert.Equal(155, puts.Succeeded); // 153 parent + 2 child
        Assert.Equal(0, puts.ClientErrors);
    }

    [AwsCliFact]
    public async Task The_AWS_CLI_starts_puts_completes_lists_and_gets()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string url = ep.Base.GetLeftPart(UriPartial.Authority);
        var env = Credentials();
        string Aws(string args)
        {
            var (code, stdout, stderr) = Processes.Run("aws", $"ebs {args} --endpoint-url {url} --output json", check: false, timeout: TimeSpan.FromMinutes(1), env: env);
            Assert.True(code == 0, $"aws ebs {args} exited {code}: {stderr}");
            return stdout;
        }

        string id = JsonDocument.Parse(Aws("start-snapshot --volume-size 1 --timeout 10")).RootElement.GetProperty("SnapshotId").GetString()!;
        using var dir = new TempDir("ebs-awscli");
        var data = TestEndpoint.VectorBlock(0);
        string file = dir.File("block");
        await File.WriteAllBytesAsync(file, data);
        string checksum = TestEndpoint.Checksum(data);
        var put = JsonDocument.Parse(Aws($"put-snapshot-block --snapshot-id {id} --block-index 4 --block-data {file} --data-length 524288 --checksum {checksum} --checksum-algorithm SHA256")).RootElement;
        Assert.Equal(checksum, put.GetProperty("Checksum").GetString());
        Aws($"complete-snapshot --snapshot-id {id} --changed-blocks-count 1 --checksum {TestEndpoint.Linear([data])} --checksum-algorithm SHA256 --checksum-aggregation-method LINEAR");
        await ep.WaitStatusAsync(id, "completed");
        var list = JsonDocument.Parse(Aws($"list-snapshot-blocks --snapshot-id {id}")).RootElement;
        var block = Assert.Single(list.GetProperty("Blocks").EnumerateArray());
        Assert.Equal(4, block.GetProperty("BlockIndex").GetInt32());
        string outFile = dir.File("out");
        var get = JsonDocument.Parse(Aws($"get-snapshot-block --snapshot-id {id} --block-index 4 --block-token {block.GetProperty("BlockToken").GetString()} {outFile}")).RootElement;
        Assert.Equal(checksum, get.GetProperty("Checksum").GetString());
        Assert.Equal(data, await File.ReadAllBytesAsync(outFile));

        // botocore's parse of an error answer: the type and message come through.
        env["AWS_SECRET_ACCESS_KEY"] = "wrong";
        var (code, _, stderr) = Processes.Run("aws", $"ebs list-snapshot-blocks --snapshot-id {id} --endpoint-url {url}", check: false, env: env);
        Assert.NotEqual(0, code);
        Assert.Contains("InvalidSignatureException", stderr, StringComparison.Ordinal);
    }
}

/// <summary>The <c>blockrepl ebs-endpoint</c> command as a process: readiness line, signals, flags, port in use.</summary>
public class EbsEndpointCommandTests
{
    private static readonly string Dll = Path.Combine(AppContext.BaseDirectory, "blockrepl.dll");

    private static Process Start(IEnumerable<string> args, bool auth = true)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        psi.ArgumentList.Add("ebs-endpoint");
        foreach (string a in args) psi.ArgumentList.Add(a);
        if (auth)
        {
            psi.Environment["AWS_ACCESS_KEY_ID"] = TestEndpoint.AccessKey;
            psi.Environment["AWS_SECRET_ACCESS_KEY"] = TestEndpoint.SecretKey;
        }
        else
        {
            psi.Environment.Remove("AWS_ACCESS_KEY_ID");
            psi.Environment.Remove("AWS_SECRET_ACCESS_KEY");
        }
        return Process.Start(psi)!;
    }

    private static async Task<Uri> ReadyAsync(Process p)
    {
        var line = p.StandardOutput.ReadLineAsync();
        if (await Task.WhenAny(line, Task.Delay(TimeSpan.FromSeconds(30))) != line) throw new TimeoutException("no 'listening on' line within 30 s");
        string text = await line ?? throw new InvalidOperationException($"endpoint exited: {await p.StandardError.ReadToEndAsync()}");
        Assert.StartsWith("listening on http://127.0.0.1:", text, StringComparison.Ordinal);
        return new Uri(text["listening on ".Length..]);
    }

    [Fact]
    public async Task Prints_its_address_serves_and_exits_0_on_SIGTERM()
    {
        using var dir = new TempDir("ebs-cli");
        using var p = Start(["--data", dir.Path, "--listen", "127.0.0.1:0", "--completion-delay", "10ms"]);
        try
        {
            var uri = await ReadyAsync(p);
            using var http = new HttpClient();
            var health = await http.GetStringAsync(new Uri(uri, "/_blockrepl/health"));
            Assert.Contains("ok", health, StringComparison.Ordinal);
            var unsigned = await http.PostAsync(new Uri(uri, "/snapshots"), new StringContent("""{"VolumeSize":1}"""));
            Assert.Equal(System.Net.HttpStatusCode.Forbidden, unsigned.StatusCode);
            Assert.Equal(0, Kill(p.Id, 15));
            Assert.True(p.WaitForExit(15000), "the endpoint did not stop on SIGTERM");
            Assert.Equal(0, p.ExitCode);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task No_auth_is_announced_on_stderr()
    {
        using var dir = new TempDir("ebs-cli");
        using var p = Start(["--data", dir.Path, "--no-auth"], auth: false);
        try
        {
            var uri = await ReadyAsync(p);
            using (var http = new HttpClient())
            {
                var r = await http.PostAsync(new Uri(uri, "/snapshots"), new StringContent("""{"VolumeSize":1}"""));
                Assert.Equal(System.Net.HttpStatusCode.Created, r.StatusCode);
            } // no keep-alive connection left for the graceful shutdown to wait on
            // The warning is printed at start: read stderr up to it (stopping the endpoint is another test's subject).
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            string? line;
            do line = await p.StandardError.ReadLineAsync(deadline.Token);
            while (line is not null && !line.Contains("SigV4 verification is OFF", StringComparison.Ordinal));
            Assert.NotNull(line);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    [Theory]
    [InlineData("--listen", "127.0.0.1", "--listen")]
    [InlineData("--listen", "nohost:80", "--listen")]
    [InlineData("--put-rate", "fast", "--put-rate")]
    [InlineData("--minute", "0s", "--minute")]
    [InlineData("--fail-rate", "2", "--fail-rate")]
    [InlineData("--bogus", "1", "unknown option --bogus")]
    public void Bad_flags_exit_2_with_one_clear_line(string flag, string value, string expected)
    {
        using var dir = new TempDir("ebs-cli");
        using var p = Start(["--data", dir.Path, flag, value]);
        Assert.True(p.WaitForExit(30000));
        string stderr = p.StandardError.ReadToEnd();
        Assert.Equal(2, p.ExitCode);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_data_and_missing_credentials_exit_2()
    {
        using var p = Start(["--listen", "127.0.0.1:0"]);
        Assert.True(p.WaitForExit(30000));
        Assert.Equal(2, p.ExitCode);
        Assert.Contains("--data", p.StandardError.ReadToEnd(), StringComparison.Ordinal);

        using var dir = new TempDir("ebs-cli");
        using var q = Start(["--data", dir.Path], auth: false);
        Assert.True(q.WaitForExit(30000));
        Assert.Equal(2, q.ExitCode);
        Assert.Contains("AWS_ACCESS_KEY_ID", q.StandardError.ReadToEnd(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_port_in_use_exits_2_naming_the_address()
    {
        await using var ep = await TestEndpoint.StartAsync();
        using var dir = new TempDir("ebs-cli");
        using var p = Start(["--data", dir.Path, "--listen", $"127.0.0.1:{ep.Base.Port}"]);
        Assert.True(p.WaitForExit(30000));
        string stderr = await p.StandardError.ReadToEndAsync();
        Assert.Equal(2, p.ExitCode);
        Assert.Contains($"127.0.0.1:{ep.Base.Port}", stderr, StringComparison.Ordinal);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Acknowledged_blocks_survive_kill_9()
    {
        using var dir = new TempDir("ebs-cli");
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 32 });
        async Task<HttpResponseMessage> Send(Uri baseUri, HttpMethod method, string path, byte[]? body = null, Dictionary<string, string>? headers = null)
        {
            var req = new HttpRequestMessage(method, new Uri(baseUri, path));
            if (body is not null) req.Content = new ByteArrayContent(body);
            foreach (var (k, v) in headers ?? []) req.Headers.TryAddWithoutValidation(k, v);
            TestSigner.Sign(req, TestSigner.PayloadHash(body ?? []), TestEndpoint.AccessKey, TestEndpoint.SecretKey);
            return await http.SendAsync(req);
        }

        string id;
        var acked = new System.Collections.Concurrent.ConcurrentBag<int>();
        using (var p = Start(["--data", dir.Path]))
        {
            try
            {
                var uri = await ReadyAsync(p);
                var start = await Send(uri, HttpMethod.Post, "/snapshots", System.Text.Encoding.UTF8.GetBytes("""{"VolumeSize":1}"""));
                id = JsonDocument.Parse(await start.Content.ReadAsStringAsync()).RootElement.GetProperty("SnapshotId").GetString()!;
                using var cts = new CancellationTokenSource();
                var writers = Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
                {
                    for (int i = w; !cts.IsCancellationRequested && i < 2048; i += 16)
                    {
                        var data = TestEndpoint.VectorBlock(i);
                        try
                        {
                            var r = await Send(uri, HttpMethod.Put, $"/snapshots/{id}/blocks/{i}", data, new()
                            {
                                ["x-amz-Data-Length"] = "524288", ["x-amz-Checksum"] = TestEndpoint.Checksum(data), ["x-amz-Checksum-Algorithm"] = "SHA256",
                            });
                            if (r.StatusCode == System.Net.HttpStatusCode.Created) acked.Add(i);
                        }
                        catch (HttpRequestException)
                        {
                            return; // the endpoint died under us
                        }
                    }
                })).ToArray();
                while (acked.Count < 40) await Task.Delay(10);
                p.Kill(); // SIGKILL
                await p.WaitForExitAsync();
                await cts.CancelAsync();
                await Task.WhenAll(writers);
            }
            finally
            {
                if (!p.HasExited) p.Kill(entireProcessTree: true);
            }
        }

        await using var ep = await TestEndpoint.StartAsync(dir: dir);
        var described = await ep.SendAsync(HttpMethod.Get, $"_blockrepl/snapshots/{id}", sign: false);
        int written = described.Json.GetProperty("BlocksWritten").GetInt32();
        Assert.True(written >= acked.Count, $"{acked.Count} puts were acknowledged but only {written} blocks survived");
        await ep.CompleteAndWaitAsync(id, written);
        var (blocks, _, _) = await ep.ListAllAsync(id, maxResults: 10000);
        Assert.All(acked, i => Assert.True(blocks.ContainsKey(i), $"acknowledged block {i} is missing"));
        foreach (int i in acked.Take(10)) Assert.Equal(TestEndpoint.VectorBlock(i), (await ep.GetBlockAsync(id, i, blocks[i])).Body);
    }

    private static int Kill(int pid, int signal) => Processes.Run("kill", $"-{signal} {pid}", check: false).ExitCode;
}
