using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests.Fixtures;

/// <summary>
/// A real S3 server on 127.0.0.1 started by the tests (<see cref="RgwServer"/>, <see cref="MotoServer"/>),
/// so that one test body can run against either implementation.
/// </summary>
public interface IS3TestServer
{
    /// <summary><c>http://127.0.0.1:PORT</c>; path-style addressing only.</summary>
    string Endpoint { get; }

    string AccessKey { get; }

    string SecretKey { get; }

    /// <summary>Always <c>us-east-1</c>.</summary>
    string Region { get; }

    /// <summary>
    /// <c>AWS_ACCESS_KEY_ID</c>, <c>AWS_SECRET_ACCESS_KEY</c>, <c>AWS_REGION</c> and <c>AWS_ENDPOINT_URL_S3</c>
    /// for a child process (the CLI under test) that should talk to this server. Deliberately nothing
    /// else: client settings a server needs (path style, checksum mode) are the product's job.
    /// </summary>
    IReadOnlyDictionary<string, string> ClientEnvironment { get; }

    /// <summary>Creates a bucket named <c>PREFIX-RANDOM</c> (lower-cased, at most 63 characters) and returns its name.</summary>
    Task<string> CreateBucketAsync(string namePrefix, bool versioning = false, bool objectLock = false);
}

/// <summary>Helpers shared by the S3 server fixtures: ports, bucket names and the AWS CLI.</summary>
public static class S3TestServers
{
    public const string Region = "us-east-1";

    private static readonly HashSet<int> s_handedOut = [];

    /// <summary>
    /// A TCP port that nobody listens on now, not handed out before by this process, taken from
    /// 10000–32699 (below Linux's ephemeral range, so outgoing connections never occupy it).
    /// When <paramref name="span"/> &gt; 1, the first ports of <c>[port, port+span)</c> are checked and
    /// the whole range is reserved.
    /// </summary>
    public static int FreePort(int span = 1)
    {
        for (int attempt = 0; attempt < 500; attempt++)
        {
            int port = RandomNumberGenerator.GetInt32(10_000, 32_700 - span);
            lock (s_handedOut)
            {
                if (Enumerable.Range(port, span).Any(s_handedOut.Contains))
                {
                    continue;
                }

                if (!Enumerable.Range(port, Math.Min(span, 8)).All(CanBind))
                {
                    continue;
                }

                s_handedOut.UnionWith(Enumerable.Range(port, span));
                return port;
            }
        }

        throw new InvalidOperationException("found no free TCP port range on 127.0.0.1");
    }

    private static bool CanBind(int port)
    {
        try
        {
            using var l = new TcpListener(IPAddress.Loopback, port);
            l.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>The repository root (the directory holding <c>BlockRepl.sln</c>), found upwards from the test binaries.</summary>
    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "BlockRepl.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"BlockRepl.sln not found above {AppContext.BaseDirectory}");
    }

    /// <summary>A valid, unique bucket name: <c>prefix-xxxxxxxxxx</c>.</summary>
    public static string BucketName(string namePrefix)
    {
        var sb = new StringBuilder();
        foreach (char c in namePrefix.ToLowerInvariant())
        {
            sb.Append(c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' ? c : '-');
        }

        string prefix = sb.ToString().Trim('-');
        if (prefix.Length > 40)
        {
            prefix = prefix[..40].TrimEnd('-');
        }

        string suffix = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(5));
        return prefix.Length == 0 ? "b-" + suffix : prefix + "-" + suffix;
    }

    /// <summary>
    /// Runs <c>aws s3api ARGS --endpoint-url ENDPOINT</c> with <paramref name="server"/>'s credentials
    /// (isolated from the user's ~/.aws files, checksums only when required: RGW 16 rejects the newer
    /// botocore defaults). Returns the result; throws when <paramref name="check"/> and the exit code is not 0.
    /// </summary>
    public static Task<(int ExitCode, string Stdout, string Stderr)> S3ApiAsync(
        IS3TestServer server, IEnumerable<string> args, bool check = true, string? secretKey = null)
    {
        var env = new Dictionary<string, string>(server.ClientEnvironment)
        {
            ["AWS_CONFIG_FILE"] = "/dev/null",
            ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null",
            ["AWS_EC2_METADATA_DISABLED"] = "true",
            ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required",
            ["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required",
            ["AWS_MAX_ATTEMPTS"] = "1",
        };
        if (secretKey is not null)
        {
            env["AWS_SECRET_ACCESS_KEY"] = secretKey;
        }

        string commandLine = string.Join(' ', new[] { "s3api" }.Concat(args).Concat(["--endpoint-url", server.Endpoint]).Select(Processes.Quote));
        return Task.Run(() =>
        {
            if (!Processes.HasCommand("aws"))
            {
                throw new InvalidOperationException("the AWS CLI ('aws') is not on PATH; it is part of the machine image");
            }

            var r = Processes.Run("aws", commandLine, check: false, timeout: TimeSpan.FromMinutes(2), env: env);
            if (check && r.ExitCode != 0)
            {
                throw new InvalidOperationException($"aws {commandLine} exited with {r.ExitCode}:\n{r.Stderr}{r.Stdout}");
            }

            return r;
        });
    }

    /// <summary>create-bucket, then versioning or object lock as asked (object lock implies versioning).</summary>
    internal static async Task<string> CreateBucketAsync(IS3TestServer server, string namePrefix, bool versioning, bool objectLock)
    {
        string bucket = BucketName(namePrefix);
        string[] create = objectLock
            ? ["create-bucket", "--bucket", bucket, "--object-lock-enabled-for-bucket"]
            : ["create-bucket", "--bucket", bucket];
        await S3ApiAsync(server, create).ConfigureAwait(false);
        if (versioning && !objectLock)
        {
            await S3ApiAsync(server, ["put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled"]).ConfigureAwait(false);
        }

        return bucket;
    }

    internal static Dictionary<string, string> ClientEnvironment(IS3TestServer server) => new()
    {
        ["AWS_ACCESS_KEY_ID"] = server.AccessKey,
        ["AWS_SECRET_ACCESS_KEY"] = server.SecretKey,
        ["AWS_REGION"] = server.Region,
        ["AWS_ENDPOINT_URL_S3"] = server.Endpoint,
    };
}
