using BlockRepl.Ebs.Endpoint;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests.Fixtures;

/// <summary>
/// A real EBS-compatible endpoint (the one `blockrepl ebs-endpoint` runs) on 127.0.0.1, with SigV4 verification on,
/// for the CLI to replicate into. Each instance has its own data directory and credentials.
/// </summary>
public sealed class EbsEndpoint : IAsyncDisposable
{
    public const string AccessKey = "AKIDBLOCKREPLTEST";
    public const string SecretKey = "blockrepl/test/secret+key/0123456789abcdef";

    private readonly TempDir _dir = new("blockrepl-ebs-endpoint");
    private EbsEndpointServer _server = null!;

    public Uri Url { get; private set; } = null!;
    public string DataDir => _dir.Path;
    public EbsEndpointServer Server => _server;

    public static async Task<EbsEndpoint> StartAsync(Func<string, EbsEndpointOptions>? configure = null)
    {
        var e = new EbsEndpoint();
        var options = configure?.Invoke(e._dir.File("data")) ?? Default(e._dir.File("data"));
        e._server = new EbsEndpointServer(options);
        e.Url = await e._server.StartAsync().ConfigureAwait(false);
        return e;
    }

    /// <summary>AWS defaults except a short completion delay; <paramref name="putRate"/> PutSnapshotBlock/s per snapshot.</summary>
    public static EbsEndpointOptions Default(string dataDir, int putRate = 1000, TimeSpan? minute = null) => new()
    {
        DataDirectory = dataDir,
        AccessKeyId = AccessKey,
        SecretAccessKey = SecretKey,
        CompletionDelay = TimeSpan.FromMilliseconds(200),
        Durable = false,
        PutRatePerSnapshot = putRate,
        MinuteLength = minute ?? TimeSpan.FromMinutes(1),
    };

    /// <summary>The environment a client process needs: credentials and region, no profile files.</summary>
    public Dictionary<string, string> ClientEnv(string stateDir) => new()
    {
        ["AWS_ACCESS_KEY_ID"] = AccessKey,
        ["AWS_SECRET_ACCESS_KEY"] = SecretKey,
        ["AWS_REGION"] = "us-east-1",
        ["AWS_CONFIG_FILE"] = "/nonexistent/blockrepl-test-config",
        ["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/blockrepl-test-credentials",
        ["AWS_EC2_METADATA_DISABLED"] = "true",
        ["BLOCKREPL_STATE_DIR"] = stateDir,
    };

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync().ConfigureAwait(false);
        _dir.Dispose();
    }
}
