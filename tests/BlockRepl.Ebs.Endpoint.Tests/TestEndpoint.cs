using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>An in-process endpoint on port 0 over a temp directory, with a signing raw-HTTP client.</summary>
internal sealed class TestEndpoint : IAsyncDisposable
{
    public const string AccessKey = "AKIDENDPOINTTEST";
    public const string SecretKey = "test/Secret+Key/EXAMPLE";
    public const int Block = 524288;

    private readonly bool _ownsDir;

    private TestEndpoint(EbsEndpointServer server, Uri baseUri, TempDir dir, bool ownsDir)
    {
        Server = server;
        Base = baseUri;
        Dir = dir;
        _ownsDir = ownsDir;
        Http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 128 }) { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(60) };
    }

    public EbsEndpointServer Server { get; private set; }
    public Uri Base { get; private set; }
    public TempDir Dir { get; }
    public HttpClient Http { get; }

    /// <summary>Test defaults: fast completion, fsync on (the real path), credentials set explicitly.</summary>
    public static EbsEndpointOptions Defaults(string dir) => new()
    {
        DataDirectory = dir,
        AccessKeyId = AccessKey,
        SecretAccessKey = SecretKey,
        CompletionDelay = TimeSpan.FromMilliseconds(50),
    };

    public static async Task<TestEndpoint> StartAsync(Func<string, EbsEndpointOptions>? options = null, TempDir? dir = null)
    {
        var d = dir ?? new TempDir("ebs-endpoint-test");
        var server = new EbsEndpointServer((options ?? Defaults)(d.Path));
        var uri = await server.StartAsync();
        return new TestEndpoint(server, uri, d, ownsDir: dir is null);
    }

    /// <summary>Stops the server and starts a new one over the same directory (a restart).</summary>
    public async Task RestartAsync(Func<string, EbsEndpointOptions>? options = null)
    {
        await Server.StopAsync();
        Server = new EbsEndpointServer((options ?? Defaults)(Dir.Path));
        Base = await Server.StartAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        Http.Dispose();
        if (_ownsDir) Dir.Dispose();
    }

    // ------------------------------------------------------------ raw requests

    public sealed record Response(HttpStatusCode Status, HttpResponseHeaders Headers, byte[] Body, string? ContentType)
    {
        public JsonElement Json => JsonDocument.Parse(Body).RootElement;
        public string? Header(string name) => Headers.TryGetValues(name, out var v) ? string.Join(',', v) : null;
        public string? ErrorType => Header("x-amzn-ErrorType");
        public string? Reason => Json.TryGetProperty("Reason", out var r) ? r.GetString() : null;
        public override string ToString() => $"{(int)Status} {ErrorType} {Encoding.UTF8.GetString(Body.Length > 600 ? Body[..600] : Body)}";
    }

    /// <summary>Sends a request signed with the test credentials (payload hash = hex of the body unless given).</summary>
    public async Task<Response> SendAsync(HttpMethod method, string pathAndQuery, byte[]? body = null, string? contentType = null,
        IDictionary<string, string>? headers = null, bool sign = true, string? payloadHash = null, string accessKey = AccessKey,
        string secretKey = SecretKey, DateTime? signedAt = null, string service = "ebs", Action<HttpRequestMessage>? afterSign = null)
    {
        using var req = new HttpRequestMessage(method, new Uri(Base, pathAndQuery));
        if (body is not null)
        {
            req.Content = new ByteArrayContent(body);
            if (contentType is not null) req.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        }
        foreach (var (k, v) in headers ?? new Dictionary<string, string>()) req.Headers.TryAddWithoutValidation(k, v);
        if (sign) TestSigner.Sign(req, payloadHash ?? TestSigner.PayloadHash(body ?? []), accessKey, secretKey, at: signedAt, service: service);
        afterSign?.Invoke(req);
        using var resp = await Http.SendAsync(req);
        return new Response(resp.StatusCode, resp.Headers, await resp.Content.ReadAsByteArrayAsync(), resp.Content.Headers.ContentType?.MediaType);
    }

    public Task<Response> StartSnapshotAsync(string json) =>
        SendAsync(HttpMethod.Post, "snapshots", Encoding.UTF8.GetBytes(json), "application/json");

    public async Task<string> StartSnapshotIdAsync(long volumeSize = 1, string? parent = null, string? extra = null)
    {
        string json = $"{{\"VolumeSize\":{volumeSize}{(parent is null ? "" : $",\"ParentSnapshotId\":\"{parent}\"")}{(extra is null ? "" : "," + extra)}}}";
        var r = await StartSnapshotAsync(json);
        Assert.True(r.Status == HttpStatusCode.Created, r.ToString());
        return r.Json.GetProperty("SnapshotId").GetString()!;
    }

    public Task<Response> PutBlockAsync(string id, long index, byte[] data, string? checksum = null, string dataLength = "524288",
        bool unsigned = false, IDictionary<string, string>? extraHeaders = null)
    {
        var headers = new Dictionary<string, string>(extraHeaders ?? new Dictionary<string, string>())
        {
            ["x-amz-Data-Length"] = dataLength,
            ["x-amz-Checksum"] = checksum ?? Checksum(data),
            ["x-amz-Checksum-Algorithm"] = "SHA256",
        };
        return SendAsync(HttpMethod.Put, $"snapshots/{id}/blocks/{index}", data, "application/octet-stream", headers,
            payloadHash: unsigned ? "UNSIGNED-PAYLOAD" : null);
    }

    public async Task PutOkAsync(string id, long index, byte[] data)
    {
        var r = await PutBlockAsync(id, index, data);
        Assert.True(r.Status == HttpStatusCode.Created, $"put {index}: {r}");
    }

    public Task<Response> CompleteAsync(string id, int count, string? linear = null)
    {
        var headers = new Dictionary<string, string> { ["x-amz-ChangedBlocksCount"] = count.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        if (linear is not null)
        {
            headers["x-amz-Checksum"] = linear;
            headers["x-amz-Checksum-Algorithm"] = "SHA256";
            headers["x-amz-Checksum-Aggregation-Method"] = "LINEAR";
        }
        return SendAsync(HttpMethod.Post, $"snapshots/completion/{id}", headers: headers);
    }

    /// <summary>CompleteSnapshot, then polls the endpoint's describe route until the snapshot is completed.</summary>
    public async Task CompleteAndWaitAsync(string id, int count, string? linear = null)
    {
        var r = await CompleteAsync(id, count, linear);
        Assert.True(r.Status == HttpStatusCode.Accepted, r.ToString());
        await WaitStatusAsync(id, "completed");
    }

    public async Task WaitStatusAsync(string id, string status, double seconds = 10)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        string? last = null;
        while (DateTime.UtcNow < deadline)
        {
            last = await DescribeStatusAsync(id);
            if (last == status) return;
            await Task.Delay(20);
        }
        Assert.Fail($"{id} is {last}, not {status}, after {seconds} s");
    }

    public async Task<string?> DescribeStatusAsync(string id)
    {
        var r = await SendAsync(HttpMethod.Get, $"_blockrepl/snapshots/{id}", sign: false);
        return r.Status == HttpStatusCode.OK ? r.Json.GetProperty("Status").GetString() : null;
    }

    public Task<Response> GetBlockAsync(string id, long index, string token) =>
        SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks/{index}?blockToken={Uri.EscapeDataString(token)}");

    /// <summary>Pages ListSnapshotBlocks to the end; returns (index → token, page count, empty pages with a NextToken).</summary>
    public async Task<(SortedDictionary<int, string> Blocks, int Pages, int EmptyPages)> ListAllAsync(string id, int maxResults = 100, string? changedFrom = null)
    {
        var blocks = new SortedDictionary<int, string>();
        int pages = 0, empty = 0;
        string? token = null;
        do
        {
            string q = $"maxResults={maxResults}" + (token is null ? "" : $"&pageToken={Uri.EscapeDataString(token)}") + (changedFrom is null ? "" : $"&firstSnapshotId={changedFrom}");
            var r = await SendAsync(HttpMethod.Get, $"snapshots/{id}/{(changedFrom is null ? "blocks" : "changedblocks")}?{q}");
            Assert.True(r.Status == HttpStatusCode.OK, r.ToString());
            pages++;
            var arr = r.Json.GetProperty(changedFrom is null ? "Blocks" : "ChangedBlocks");
            if (arr.GetArrayLength() == 0 && r.Json.GetProperty("NextToken").ValueKind == JsonValueKind.String) empty++;
            int previous = blocks.Count == 0 ? -1 : blocks.Keys.Last();
            foreach (var b in arr.EnumerateArray())
            {
                int i = b.GetProperty("BlockIndex").GetInt32();
                Assert.True(i > previous, "indices are unique and ascending across pages");
                previous = i;
                blocks[i] = b.TryGetProperty("BlockToken", out var t) ? t.GetString()! : b.TryGetProperty("SecondBlockToken", out var s) ? s.GetString()! : "";
            }
            token = r.Json.GetProperty("NextToken").GetString();
        }
        while (token is not null);
        return (blocks, pages, empty);
    }

    public Task<EbsEndpointStats> StatsAsync() => Task.FromResult(Server.GetStats());

    // ------------------------------------------------------------ data

    public static string Checksum(byte[] data) => Convert.ToBase64String(SHA256.HashData(data));

    /// <summary>The ref §5 vectors: 0 → k mod 251, 3 → zeros, 5 → 0x01; others filled with a seed byte pattern.</summary>
    public static byte[] VectorBlock(int which)
    {
        var b = new byte[Block];
        switch (which)
        {
            case 0: for (int k = 0; k < Block; k++) b[k] = (byte)(k % 251); break;
            case 3: break;
            case 5: b.AsSpan().Fill(1); break;
            default: new Random(which).NextBytes(b); break;
        }
        return b;
    }

    public static string Linear(IEnumerable<byte[]> blocksInIndexOrder)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var b in blocksInIndexOrder) h.AppendData(SHA256.HashData(b));
        return Convert.ToBase64String(h.GetHashAndReset());
    }
}
