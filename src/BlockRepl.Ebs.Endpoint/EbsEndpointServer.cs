using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// A local server speaking the six EBS direct API operations (docs/ebs-endpoint.md, ref/ebs.md §2–§9, §15), for
/// demos, tests and offline use. Start it with <see cref="StartAsync"/>; it listens until <see cref="StopAsync"/>.
/// </summary>
public sealed partial class EbsEndpointServer : IAsyncDisposable
{
    private const int BlockSize = BlockFile.BlockSize;
    private const int MaxJsonBody = 64 * 1024;

    // Tokens are base64: write '+' and '/' as themselves, as AWS does, not as \u002B.
    private static readonly JsonWriterOptions s_jsonWriterOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly EbsEndpointOptions _o;
    private readonly long[] _counters = new long[(int)Op.Count * (int)Counter.Count];
    private long _bytesWritten;
    private long _bytesRead;
    private readonly Random _faults;
    private readonly CancellationTokenSource _stopping = new();
    private SnapshotStore? _store;
    private TokenCodec? _tokens;
    private SigV4Verifier? _verifier;
    private WebApplication? _app;

    /// <summary>Creates a server; nothing is opened or bound until <see cref="StartAsync"/>.</summary>
    public EbsEndpointServer(EbsEndpointOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _o = options;
        _faults = options.FaultSeed is { } seed ? new Random(seed) : new Random();
    }

    /// <summary>The base address (http://host:port/) once started; null before.</summary>
    public Uri? BaseAddress { get; private set; }

    /// <summary>Whether requests must be SigV4-signed (false only with <see cref="EbsEndpointOptions.RequireAuth"/> off).</summary>
    public bool AuthEnabled => _o.RequireAuth;

    /// <summary>The access key id the endpoint accepts (null when auth is off or not started).</summary>
    public string? AccessKeyId { get; private set; }

    private enum Op { StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock, Count }

    private enum Counter { Requests, Succeeded, Throttled, ClientErrors, ServerErrors, Count }

    /// <summary>
    /// Opens the data directory (locking it), loads snapshots, binds the listener and starts serving.
    /// </summary>
    /// <returns>The bound base address, e.g. http://127.0.0.1:41234/ (port 0 resolved).</returns>
    /// <exception cref="IOException">The address is in use, or the data directory is locked by another endpoint.</exception>
    /// <exception cref="InvalidOperationException">Auth is on and no credentials are configured.</exception>
    public async Task<Uri> StartAsync(CancellationToken cancellationToken = default)
    {
        if (_app is not null) throw new InvalidOperationException("the endpoint is already started");
        if (_o.RequireAuth)
        {
            string? ak = _o.AccessKeyId ?? Environment.GetEnvironmentVariable("AWS_ACCESS_KEY_ID");
            string? sk = _o.SecretAccessKey ?? Environment.GetEnvironmentVariable("AWS_SECRET_ACCESS_KEY");
            if (string.IsNullOrEmpty(ak) || string.IsNullOrEmpty(sk))
                throw new InvalidOperationException("SigV4 verification is on but the endpoint has no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment, or disable verification (--no-auth)");
            // The environment's session token belongs to the environment's keys; explicit keys come without one.
            string? token = _o.SessionToken ?? (_o.AccessKeyId is null ? NullIfEmpty(Environment.GetEnvironmentVariable("AWS_SESSION_TOKEN")) : null);
            _verifier = new SigV4Verifier(ak, sk, token, _o.Region, _o.MaxClockSkew);
            AccessKeyId = ak;
        }

        var store = new SnapshotStore(_o);
        try
        {
            store.Open();
            _tokens = new TokenCodec(store.Key);
            _store = store;

            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
            {
                Args = [],
                ApplicationName = typeof(EbsEndpointServer).Assembly.GetName().Name,
                ContentRootPath = AppContext.BaseDirectory,
                EnvironmentName = Environments.Production,
            });
            builder.Logging.ClearProviders();
            builder.Services.AddSingleton<IHostLifetime, EmbeddedLifetime>();
            builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(5));
            builder.WebHost.ConfigureKestrel(k =>
            {
                k.AddServerHeader = false;
                k.Limits.MaxRequestBodySize = 2 * BlockSize;
                k.Listen(_o.ListenAddress, _o.Port, listen =>
                {
                    if (_o.Certificate is { } cert) listen.UseHttps(cert);
                });
            });
            var app = builder.Build();
            ((IApplicationBuilder)app).Run(HandleAsync);
            try
            {
                await app.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                await app.DisposeAsync().ConfigureAwait(false);
                throw new IOException($"cannot listen on {_o.ListenAddress}:{_o.Port}: {e.InnerException?.Message ?? e.Message}", e);
            }
            _app = app;
            string address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.First();
            BaseAddress = new Uri(address.EndsWith('/') ? address : address + "/");
            return BaseAddress;
        }
        catch
        {
            _store = null;
            await store.StopAsync().ConfigureAwait(false);
            store.Dispose();
            throw;
        }
    }

    /// <summary>Stops accepting requests, lets in-flight ones finish (up to 5 s) and closes the data directory.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_app is { } app)
        {
            _app = null;
            await _stopping.CancelAsync().ConfigureAwait(false); // releases hung (fault-injected) requests
            await app.StopAsync(cancellationToken).ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
        }
        if (_store is { } store)
        {
            _store = null;
            await store.StopAsync().ConfigureAwait(false);
            store.Dispose();
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    /// <summary>Request counters per operation (what GET /_blockrepl/stats returns).</summary>
    public EbsEndpointStats GetStats()
    {
        var stats = new EbsEndpointStats
        {
            BytesWritten = Interlocked.Read(ref _bytesWritten),
            BytesRead = Interlocked.Read(ref _bytesRead),
            Snapshots = _store?.CountByState() ?? [],
        };
        for (var op = (Op)0; op < Op.Count; op++)
        {
            stats.Operations[op.ToString()] = new EbsOperationStats
            {
                Requests = Read(op, Counter.Requests),
                Succeeded = Read(op, Counter.Succeeded),
                Throttled = Read(op, Counter.Throttled),
                ClientErrors = Read(op, Counter.ClientErrors),
                ServerErrors = Read(op, Counter.ServerErrors),
            };
        }
        return stats;

        long Read(Op op, Counter c) => Interlocked.Read(ref _counters[(int)op * (int)Counter.Count + (int)c]);
    }

    private enum Fault { None, Internal, Reset, Hang }

    /// <summary>One draw decides the injected fault, if any: 500, connection reset, or a request never answered.</summary>
    private Fault NextFault()
    {
        if (_o.InternalErrorRate + _o.ResetRate + _o.HangRate <= 0) return Fault.None;
        double r;
        lock (_faults) r = _faults.NextDouble();
        if (r < _o.InternalErrorRate) return Fault.Internal;
        r -= _o.InternalErrorRate;
        if (r < _o.ResetRate) return Fault.Reset;
        r -= _o.ResetRate;
        return r < _o.HangRate ? Fault.Hang : Fault.None;
    }

    private void Count(Op op, Counter c) => Interlocked.Increment(ref _counters[(int)op * (int)Counter.Count + (int)c]);

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    // ================================================================ dispatch

    private async Task HandleAsync(HttpContext ctx)
    {
        ctx.Response.Headers["x-amzn-RequestId"] = Guid.NewGuid().ToString();
        string path = ctx.Request.Path.Value ?? "/";
        if (path.StartsWith("/_blockrepl/", StringComparison.Ordinal))
        {
            await HandleInternalAsync(ctx, path).ConfigureAwait(false);
            return;
        }
        var store = _store;
        Op op = Op.Count;
        byte[]? body = null;
        try
        {
            if (store is null) throw EbsError.Internal("the endpoint is stopping");
            var (routed, id, index) = Route(ctx.Request.Method, path);
            op = routed;
            Count(op, Counter.Requests);
            int length;
            (body, length) = await ReadBodyAsync(ctx.Request, op).ConfigureAwait(false);
            var digest = default(Sha256Digest);
            SHA256.HashData(body.AsSpan(0, length), digest);
            if (_verifier is not null) Authenticate(ctx, op, digest);
            switch (NextFault())
            {
                case Fault.Internal:
                    throw EbsError.Internal("Injected fault (--fail-rate): the request was not processed; retry it.");
                case Fault.Reset:
                    Count(op, Counter.ServerErrors);
                    ctx.Abort();
                    return;
                case Fault.Hang:
                    Count(op, Counter.ServerErrors);
                    try
                    {
                        using var both = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, _stopping.Token);
                        await Task.Delay(Timeout.Infinite, both.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                    }
                    ctx.Abort();
                    return;
            }
            switch (op)
            {
                case Op.StartSnapshot: await StartSnapshotAsync(ctx, store, body, length).ConfigureAwait(false); break;
                case Op.PutSnapshotBlock: await PutSnapshotBlockAsync(ctx, store, id!, index, body, length, digest).ConfigureAwait(false); break;
                case Op.CompleteSnapshot: await CompleteSnapshotAsync(ctx, store, id!).ConfigureAwait(false); break;
                case Op.ListSnapshotBlocks: await ListSnapshotBlocksAsync(ctx, store, id!).ConfigureAwait(false); break;
                case Op.ListChangedBlocks: await ListChangedBlocksAsync(ctx, store, id!).ConfigureAwait(false); break;
                case Op.GetSnapshotBlock: await GetSnapshotBlockAsync(ctx, store, id!, index).ConfigureAwait(false); break;
                default: throw EbsError.Internal("unrouted operation");
            }
            Count(op, Counter.Succeeded);
        }
        catch (EbsError e)
        {
            if (op != Op.Count) Count(op, e.Type == "RequestThrottledException" ? Counter.Throttled : e.Status >= 500 ? Counter.ServerErrors : Counter.ClientErrors);
            await WriteErrorAsync(ctx, e).ConfigureAwait(false);
        }
        catch (BadHttpRequestException e)
        {
            if (op != Op.Count) Count(op, Counter.ClientErrors);
            await WriteErrorAsync(ctx, EbsError.Validation($"Failed to read the request: {e.Message}")).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // the client went away; nobody to answer
        }
        catch (Exception e)
        {
            if (op != Op.Count) Count(op, Counter.ServerErrors);
            _o.Log?.Invoke($"internal error in {op} {ctx.Request.Method} {path}: {e.GetType().Name}: {e.Message}");
            await WriteErrorAsync(ctx, EbsError.Internal($"Internal error: {e.GetType().Name}: {e.Message}")).ConfigureAwait(false);
        }
        finally
        {
            if (body is not null && body.Length > 0) BodyPool.Shared.Return(body);
        }
    }

    private static (Op Op, string? Id, int Index) Route(string method, string path)
    {
        string[] s = path.Trim('/').Split('/');
        if (s.Length == 0 || s[0] != "snapshots") throw EbsError.UnknownOperation(method, path);
        return (method, s.Length) switch
        {
            ("POST", 1) => (Op.StartSnapshot, null, 0),
            ("POST", 3) when s[1] == "completion" => (Op.CompleteSnapshot, s[2], 0),
            ("GET", 3) when s[2] == "blocks" => (Op.ListSnapshotBlocks, s[1], 0),
            ("GET", 3) when s[2] == "changedblocks" => (Op.ListChangedBlocks, s[1], 0),
            ("PUT", 4) when s[2] == "blocks" => (Op.PutSnapshotBlock, s[1], ParseIndex(s[3])),
            ("GET", 4) when s[2] == "blocks" => (Op.GetSnapshotBlock, s[1], ParseIndex(s[3])),
            _ => throw EbsError.UnknownOperation(method, path),
        };
    }

    private static int ParseIndex(string text) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            ? i
            : throw EbsError.Validation($"Block index '{text}' is not an integer in 0..2147483647.", "INVALID_BLOCK");

    /// <summary>Reads the whole body into a pooled buffer (never more than one block, or 64 KiB of JSON).</summary>
    private static async Task<(byte[] Buffer, int Length)> ReadBodyAsync(HttpRequest req, Op op)
    {
        if (req.ContentLength == 0 || (req.ContentLength is null && !req.Headers.ContainsKey("Transfer-Encoding"))) return ([], 0);
        int max = op == Op.PutSnapshotBlock ? BlockSize : MaxJsonBody;
        if (req.ContentLength > max)
        {
            throw op == Op.PutSnapshotBlock
                ? EbsError.Validation($"Failed to read block data: the body is {req.ContentLength} bytes; a block is exactly {BlockSize}.")
                : EbsError.Validation($"The request body is {req.ContentLength} bytes; at most {max} are accepted.");
        }
        byte[] buf = BodyPool.Shared.Rent(max);
        try
        {
            int total = 0;
            while (total < max)
            {
                int n = await req.Body.ReadAsync(buf.AsMemory(total, max - total)).ConfigureAwait(false);
                if (n == 0) return (buf, total);
                total += n;
            }
            byte[] probe = BodyPool.Shared.Rent(1);
            try
            {
                if (await req.Body.ReadAsync(probe.AsMemory(0, 1)).ConfigureAwait(false) != 0)
                    throw EbsError.Validation($"Failed to read block data: the body is longer than {max} bytes.");
            }
            finally
            {
                BodyPool.Shared.Return(probe);
            }
            return (buf, total);
        }
        catch
        {
            BodyPool.Shared.Return(buf);
            throw;
        }
    }

    private void Authenticate(HttpContext ctx, Op op, Sha256Digest bodyDigest)
    {
        var req = ctx.Request;
        string bodyHex = Convert.ToHexStringLower(bodyDigest);
        string? claimed = Header(req, "x-amz-content-sha256");
        string payloadHash;
        if (claimed is null) payloadHash = bodyHex;
        else if (claimed == SigV4Verifier.UnsignedPayload)
        {
            if (op != Op.PutSnapshotBlock) throw EbsError.BadSignature("X-Amz-Content-SHA256: UNSIGNED-PAYLOAD is accepted only on PutSnapshotBlock; sign the payload of other operations.");
            payloadHash = claimed;
        }
        else payloadHash = claimed; // signed exactly as sent; compared with the body below, case-insensitively

        string rawTarget = ctx.Features.Get<IHttpRequestFeature>()?.RawTarget ?? (req.Path + req.QueryString);
        int q = rawTarget.IndexOf('?');
        string rawPath = q < 0 ? rawTarget : rawTarget[..q];
        string rawQuery = q < 0 ? "" : rawTarget[(q + 1)..];
        _verifier!.Verify(new SigV4Request(req.Method, rawPath, rawQuery, name => Header(req, name), payloadHash), DateTimeOffset.UtcNow);
        if (payloadHash != SigV4Verifier.UnsignedPayload && !string.Equals(payloadHash, bodyHex, StringComparison.OrdinalIgnoreCase))
            throw EbsError.BadSignature($"The X-Amz-Content-SHA256 header ({claimed}) does not match the SHA-256 of the body ({bodyHex}).");
    }

    private static string? Header(HttpRequest req, string name)
    {
        var v = req.Headers[name];
        return v.Count switch { 0 => null, 1 => v[0], _ => string.Join(',', v.ToArray()) };
    }

    private static async Task WriteErrorAsync(HttpContext ctx, EbsError e)
    {
        if (ctx.Response.HasStarted)
        {
            ctx.Abort();
            return;
        }
        string? requestId = ctx.Response.Headers["x-amzn-RequestId"];
        ctx.Response.Clear();
        ctx.Response.Headers["x-amzn-RequestId"] = requestId ?? Guid.NewGuid().ToString();
        ctx.Response.StatusCode = e.Status;
        ctx.Response.Headers["x-amzn-ErrorType"] = e.Type;
        ctx.Response.ContentType = "application/json";
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer, s_jsonWriterOptions))
        {
            w.WriteStartObject();
            w.WriteString("__type", e.Type);
            w.WriteString("message", e.Message);
            w.WriteString("Message", e.Message);
            if (e.Reason is not null) w.WriteString("Reason", e.Reason);
            w.WriteEndObject();
        }
        ctx.Response.ContentLength = buffer.WrittenCount;
        await ctx.Response.Body.WriteAsync(buffer.WrittenMemory).ConfigureAwait(false);
    }

    private static async Task WriteJsonAsync(HttpContext ctx, int status, Action<Utf8JsonWriter> write)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer, s_jsonWriterOptions))
        {
            write(w);
        }
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = buffer.WrittenCount;
        await ctx.Response.Body.WriteAsync(buffer.WrittenMemory).ConfigureAwait(false);
    }

    /// <summary>Epoch seconds as AWS writes them: a JSON number in exponent form with a fractional part (1.59298379649E9).</summary>
    internal static string EpochSeconds(DateTimeOffset t)
    {
        string ms = t.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
        if (ms.Length < 5) return (t.ToUnixTimeMilliseconds() / 1000.0).ToString("R", CultureInfo.InvariantCulture);
        string fraction = ms[1..].TrimEnd('0');
        return $"{ms[0]}.{(fraction.Length == 0 ? "0" : fraction)}E{ms.Length - 4}";
    }

    /// <summary>Keeps the host from hooking SIGINT/SIGTERM: the embedding process (CLI or test) owns the lifetime.</summary>
    private sealed class EmbeddedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
