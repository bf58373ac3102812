using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace BlockRepl.TestKit;

/// <summary>Where a <see cref="FaultProxy"/> resets a connection.</summary>
public enum ResetPoint
{
    /// <summary>After reading the request head, before anything reaches the upstream.</summary>
    BeforeForwarding,

    /// <summary>After the upstream has handled the request (its response is read and dropped): an ambiguous outcome for the client.</summary>
    AfterForwarding,
}

/// <summary>
/// A loopback HTTP/1.1 reverse proxy that injects faults per request: S3 <c>503 SlowDown</c> errors
/// (the next N requests, a seeded fraction, or every request), abrupt connection resets (TCP RST)
/// before or after forwarding, and response delays. It listens on <c>127.0.0.1:0</c> and forwards to
/// one upstream <c>http://127.0.0.1:PORT</c>, passing request and response bytes through unchanged
/// (so SigV4 signatures over the <c>Host</c> header stay valid: the client signs the proxy's
/// host:port and the upstream receives exactly that). It parses only framing: request line, headers,
/// <c>Content-Length</c> and chunked bodies; responses with <c>Content-Length</c>, chunked, no body
/// (HEAD, 1xx, 204, 304) or until close. Each client connection gets its own upstream connection.
/// Settings may change while it runs; <see cref="Dispose"/> stops the listener and closes every
/// connection.
/// </summary>
public sealed class FaultProxy : IDisposable
{
    private readonly object _gate = new();
    private readonly Random _random;
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly HashSet<Socket> _sockets = [];
    private readonly Task _acceptLoop;
    private readonly string _upstreamHost;
    private readonly int _upstreamPort;

    private int _slowDownNext;
    private double _slowDownFraction;
    private bool _failAll;
    private Func<string, bool>? _slowDownWhere;
    private int _resetEvery;
    private double _resetFraction;
    private ResetPoint _resetWhen = ResetPoint.BeforeForwarding;
    private readonly Dictionary<long, ResetPoint> _resetOn = [];
    private TimeSpan _minDelay, _maxDelay;

    private long _requests, _slowDowns, _resets, _delayed, _forwarded;
    private bool _disposed;

    /// <param name="upstream">The server, <c>http://127.0.0.1:PORT</c> (loopback only).</param>
    /// <param name="seed">Seed of the fraction and delay draws.</param>
    public FaultProxy(Uri upstream, int seed = 1)
    {
        ArgumentNullException.ThrowIfNull(upstream);
        if (upstream.Scheme != Uri.UriSchemeHttp) throw new ArgumentException("only http:// upstreams", nameof(upstream));
        if (!IPAddress.TryParse(upstream.Host, out var ip) || !IPAddress.IsLoopback(ip))
            throw new ArgumentException("the upstream must be a loopback address", nameof(upstream));
        _upstreamHost = upstream.Host;
        _upstreamPort = upstream.Port;
        _random = new Random(seed);
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start(256);
        int port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        Endpoint = new Uri($"http://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}");
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public FaultProxy(string upstream, int seed = 1) : this(new Uri(upstream), seed)
    {
    }

    /// <summary>The proxy's address, <c>http://127.0.0.1:PORT/</c>.</summary>
    public Uri Endpoint { get; }

    /// <summary><see cref="Endpoint"/> without the trailing slash, for endpoint variables.</summary>
    public string Url => Endpoint.GetLeftPart(UriPartial.Authority);

    /// <summary>Requests whose head was received.</summary>
    public long Requests => Interlocked.Read(ref _requests);

    /// <summary>Requests sent on to the upstream.</summary>
    public long Forwarded => Interlocked.Read(ref _forwarded);

    /// <summary>503 SlowDown responses made up by the proxy.</summary>
    public long SlowDowns => Interlocked.Read(ref _slowDowns);

    /// <summary>Connections reset by the proxy.</summary>
    public long Resets => Interlocked.Read(ref _resets);

    /// <summary>Responses delayed.</summary>
    public long Delayed => Interlocked.Read(ref _delayed);

    /// <summary>Failures injected: <see cref="SlowDowns"/> + <see cref="Resets"/>.</summary>
    public long FaultsInjected => SlowDowns + Resets;

    /// <summary>Answers the next <paramref name="count"/> requests with 503 SlowDown.</summary>
    public void SlowDownNext(int count)
    {
        lock (_gate) _slowDownNext = Math.Max(0, count);
    }

    /// <summary>Fraction (0..1) of requests answered with 503 SlowDown, drawn from the seeded generator.</summary>
    public double SlowDownFraction
    {
        get { lock (_gate) return _slowDownFraction; }
        set { lock (_gate) _slowDownFraction = Fraction(value); }
    }

    /// <summary>Every request is answered with 503 SlowDown.</summary>
    public bool FailAll
    {
        get { lock (_gate) return _failAll; }
        set { lock (_gate) _failAll = value; }
    }

    /// <summary>
    /// Answers every request whose request line (<c>PUT /bucket/key?query HTTP/1.1</c>) matches
    /// <paramref name="predicate"/> with 503 SlowDown (null = off); e.g. only manifest uploads.
    /// </summary>
    public void SlowDownWhere(Func<string, bool>? predicate)
    {
        lock (_gate) _slowDownWhere = predicate;
    }

    /// <summary>Resets the connection of request number <paramref name="requestNumber"/> (1-based, counting every request the proxy has seen).</summary>
    public void ResetRequest(long requestNumber, ResetPoint when)
    {
        lock (_gate) _resetOn[requestNumber] = when;
    }

    /// <summary>Resets every <paramref name="n"/>th request (0 = off), at <paramref name="when"/>.</summary>
    public void ResetEvery(int n, ResetPoint when)
    {
        lock (_gate)
        {
            _resetEvery = Math.Max(0, n);
            _resetWhen = when;
        }
    }

    /// <summary>Resets a seeded fraction of requests, at <paramref name="when"/>.</summary>
    public void ResetFraction(double fraction, ResetPoint when)
    {
        lock (_gate)
        {
            _resetFraction = Fraction(fraction);
            _resetWhen = when;
        }
    }

    /// <summary>Delays each response by <paramref name="min"/> (or a seeded draw in [min, max]).</summary>
    public void Delay(TimeSpan min, TimeSpan? max = null)
    {
        var hi = max ?? min;
        if (min < TimeSpan.Zero || hi < min) throw new ArgumentOutOfRangeException(nameof(max));
        lock (_gate)
        {
            _minDelay = min;
            _maxDelay = hi;
        }
    }

    /// <summary>Turns every fault off (counters are kept).</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _slowDownNext = 0;
            _slowDownFraction = 0;
            _failAll = false;
            _slowDownWhere = null;
            _resetEvery = 0;
            _resetFraction = 0;
            _resetOn.Clear();
            _minDelay = _maxDelay = TimeSpan.Zero;
        }
    }

    private static double Fraction(double p) =>
        p is >= 0 and <= 1 ? p : throw new ArgumentOutOfRangeException(nameof(p), "a fraction is in [0, 1]");

    private enum Verdict
    {
        Forward,
        SlowDown,
        ResetBefore,
        ResetAfter,
    }

    private (Verdict Action, TimeSpan Delay, long Number) Decide(string requestLine)
    {
        long n = Interlocked.Increment(ref _requests);
        lock (_gate)
        {
            var delay = _maxDelay > _minDelay
                ? _minDelay + TimeSpan.FromTicks((long)(_random.NextDouble() * (_maxDelay - _minDelay).Ticks))
                : _minDelay;
            if (_resetOn.Remove(n, out var point))
                return (point == ResetPoint.BeforeForwarding ? Verdict.ResetBefore : Verdict.ResetAfter, delay, n);
            if ((_resetEvery > 0 && n % _resetEvery == 0) || (_resetFraction > 0 && _random.NextDouble() < _resetFraction))
                return (_resetWhen == ResetPoint.BeforeForwarding ? Verdict.ResetBefore : Verdict.ResetAfter, delay, n);

            if (_failAll || (_slowDownWhere?.Invoke(requestLine) ?? false)) return (Verdict.SlowDown, delay, n);
            if (_slowDownNext > 0)
            {
                _slowDownNext--;
                return (Verdict.SlowDown, delay, n);
            }

            if (_slowDownFraction > 0 && _random.NextDouble() < _slowDownFraction) return (Verdict.SlowDown, delay, n);
            return (Verdict.Forward, delay, n);
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            client.NoDelay = true;
            if (!Track(client))
            {
                client.Dispose();
                return;
            }

            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private bool Track(Socket s)
    {
        lock (_sockets)
        {
            if (_disposed) return false;
            _sockets.Add(s);
            return true;
        }
    }

    private void Untrack(Socket s)
    {
        lock (_sockets) _sockets.Remove(s);
        s.Dispose();
    }

    private static void Reset(Socket s)
    {
        try
        {
            s.LingerState = new LingerOption(true, 0); // close() then sends RST
            s.Close();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(Socket client)
    {
        var ct = _stop.Token;
        Socket? upstream = null;
        HttpReader? upReader = null;
        NetworkStream? upStream = null;
        try
        {
            await using var clientStream = new NetworkStream(client, ownsSocket: false);
            var reader = new HttpReader(clientStream);
            while (!ct.IsCancellationRequested)
            {
                var head = await reader.ReadHeadAsync(ct).ConfigureAwait(false);
                if (head is null) return; // client closed between requests
                var request = Head.Parse(head);
                var (action, delay, number) = Decide(request.StartLine);
                bool isHead = request.StartLine.StartsWith("HEAD ", StringComparison.Ordinal);
                bool expectContinue = request.Has("Expect", "100-continue");
                if (expectContinue) await clientStream.WriteAsync("HTTP/1.1 100 Continue\r\n\r\n"u8.ToArray(), ct).ConfigureAwait(false);

                if (action == Verdict.ResetBefore)
                {
                    Interlocked.Increment(ref _resets);
                    Reset(client);
                    return;
                }

                if (action == Verdict.SlowDown)
                {
                    await reader.CopyBodyAsync(request, null, ct).ConfigureAwait(false); // drain, keep the connection usable
                    if (delay > TimeSpan.Zero) await Task.Delay(delay, ct).ConfigureAwait(false);
                    Interlocked.Increment(ref _slowDowns);
                    await clientStream.WriteAsync(SlowDownResponse(number, isHead), ct).ConfigureAwait(false);
                    if (request.Has("Connection", "close")) return;
                    continue;
                }

                // Forward on this connection's upstream connection (a fresh one if the old one was closed by the server).
                if (upstream is null || !IsUsable(upstream))
                {
                    if (upstream is not null) Untrack(upstream);
                    upStream?.Dispose();
                    upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    if (!Track(upstream)) return;
                    await upstream.ConnectAsync(_upstreamHost, _upstreamPort, ct).ConfigureAwait(false);
                    upStream = new NetworkStream(upstream, ownsSocket: false);
                    upReader = new HttpReader(upStream);
                }

                await upStream!.WriteAsync(head, ct).ConfigureAwait(false);
                await reader.CopyBodyAsync(request, upStream, ct).ConfigureAwait(false);
                await upStream.FlushAsync(ct).ConfigureAwait(false);
                Interlocked.Increment(ref _forwarded);

                // The response, skipping interim 1xx (the client already had its 100 Continue from us).
                byte[]? responseHead;
                Head response;
                while (true)
                {
                    responseHead = await upReader!.ReadHeadAsync(ct).ConfigureAwait(false);
                    if (responseHead is null) throw new IOException("upstream closed the connection without a response");
                    response = Head.Parse(responseHead);
                    if (response.Status is >= 100 and < 200 && response.Status != 101) continue;
                    break;
                }

                bool bodyless = isHead || response.Status is 204 or 304;
                bool untilClose = !bodyless && response.ContentLength is null && !response.Chunked;

                if (action == Verdict.ResetAfter)
                {
                    if (!bodyless) await upReader.CopyBodyAsync(response, null, ct, untilClose).ConfigureAwait(false);
                    Interlocked.Increment(ref _resets);
                    Reset(client);
                    return;
                }

                if (delay > TimeSpan.Zero)
                {
                    Interlocked.Increment(ref _delayed);
                    await Task.Delay(delay, ct).ConfigureAwait(false);
                }

                await clientStream.WriteAsync(responseHead, ct).ConfigureAwait(false);
                if (!bodyless) await upReader.CopyBodyAsync(response, clientStream, ct, untilClose).ConfigureAwait(false);
                await clientStream.FlushAsync(ct).ConfigureAwait(false);
                if (untilClose || response.Has("Connection", "close") || request.Has("Connection", "close")) return;
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or FormatException)
        {
            // A broken client or upstream connection: drop both, like a real proxy would.
        }
        finally
        {
            upStream?.Dispose();
            if (upstream is not null) Untrack(upstream);
            Untrack(client);
        }
    }

    /// <summary>False when the server closed an idle keep-alive connection (readable with nothing to read).</summary>
    private static bool IsUsable(Socket s)
    {
        try
        {
            return s.Connected && !(s.Poll(0, SelectMode.SelectRead) && s.Available == 0);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    private static byte[] SlowDownResponse(long number, bool isHead)
    {
        string id = "faultproxy-" + number.ToString(CultureInfo.InvariantCulture);
        byte[] body = Encoding.ASCII.GetBytes(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            + $"<RequestId>{id}</RequestId><HostId>faultproxy</HostId></Error>");
        string head = "HTTP/1.1 503 Slow Down\r\n"
            + "Content-Type: application/xml\r\n"
            + $"Content-Length: {(isHead ? 0 : body.Length).ToString(CultureInfo.InvariantCulture)}\r\n"
            + $"x-amz-request-id: {id}\r\n"
            + $"Date: {DateTime.UtcNow.ToString("R", CultureInfo.InvariantCulture)}\r\n"
            + "Connection: keep-alive\r\n\r\n";
        byte[] h = Encoding.ASCII.GetBytes(head);
        return isHead ? h : [.. h, .. body];
    }

    /// <summary>Stops listening and closes every connection.</summary>
    public void Dispose()
    {
        lock (_sockets)
        {
            if (_disposed) return;
            _disposed = true;
        }

        _stop.Cancel();
        _listener.Stop();
        Socket[] open;
        lock (_sockets) open = [.. _sockets];
        foreach (var s in open)
        {
            try
            {
                s.Dispose();
            }
            catch (ObjectDisposedException)
            {
            }
        }

        try
        {
            _acceptLoop.Wait(TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }

        _stop.Dispose();
    }

    /// <summary>A parsed message head (only what framing needs).</summary>
    private sealed class Head
    {
        private readonly List<KeyValuePair<string, string>> _headers = [];

        public string StartLine { get; private set; } = string.Empty;
        public int Status { get; private set; }
        public long? ContentLength { get; private set; }
        public bool Chunked { get; private set; }

        public static Head Parse(byte[] raw)
        {
            var h = new Head();
            var lines = Encoding.Latin1.GetString(raw).Split("\r\n");
            h.StartLine = lines[0];
            if (h.StartLine.StartsWith("HTTP/", StringComparison.Ordinal))
            {
                var parts = h.StartLine.Split(' ', 3);
                if (parts.Length < 2) throw new FormatException("bad status line: " + h.StartLine);
                h.Status = int.Parse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture);
            }

            for (int i = 1; i < lines.Length; i++)
            {
                if (lines[i].Length == 0) continue;
                int colon = lines[i].IndexOf(':', StringComparison.Ordinal);
                if (colon <= 0) throw new FormatException("bad header line: " + lines[i]);
                string name = lines[i][..colon].Trim(), value = lines[i][(colon + 1)..].Trim();
                h._headers.Add(new(name, value));
                if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
                    h.ContentLength = long.Parse(value, NumberStyles.None, CultureInfo.InvariantCulture);
                else if (name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase) && value.Contains("chunked", StringComparison.OrdinalIgnoreCase))
                    h.Chunked = true;
            }

            return h;
        }

        public bool Has(string name, string token) =>
            _headers.Exists(kv => kv.Key.Equals(name, StringComparison.OrdinalIgnoreCase)
                && kv.Value.Contains(token, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Buffered reads of heads, lines and bodies from one side of a connection.</summary>
    private sealed class HttpReader(Stream stream)
    {
        private const int MaxHead = 64 * 1024;
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _pos, _len;

        private async ValueTask<bool> FillAsync(CancellationToken ct)
        {
            if (_pos < _len) return true;
            _pos = 0;
            _len = await stream.ReadAsync(_buffer, ct).ConfigureAwait(false);
            return _len > 0;
        }

        /// <summary>Bytes up to and including the empty line; null on a clean end of stream before any byte.</summary>
        public async ValueTask<byte[]?> ReadHeadAsync(CancellationToken ct)
        {
            var head = new List<byte>(1024);
            while (true)
            {
                if (!await FillAsync(ct).ConfigureAwait(false))
                {
                    if (head.Count == 0) return null;
                    throw new IOException("connection closed inside a message head");
                }

                while (_pos < _len)
                {
                    head.Add(_buffer[_pos++]);
                    int n = head.Count;
                    if (n >= 4 && head[n - 1] == '\n' && head[n - 2] == '\r' && head[n - 3] == '\n' && head[n - 4] == '\r')
                        return [.. head];
                    if (n == 2 && head[0] == '\r' && head[1] == '\n') head.Clear(); // stray CRLF between messages
                    if (n > MaxHead) throw new IOException("message head too large");
                }
            }
        }

        private async ValueTask<byte[]> ReadLineAsync(CancellationToken ct)
        {
            var line = new List<byte>(32);
            while (true)
            {
                if (!await FillAsync(ct).ConfigureAwait(false)) throw new IOException("connection closed inside a chunked body");
                while (_pos < _len)
                {
                    line.Add(_buffer[_pos++]);
                    if (line.Count >= 2 && line[^1] == '\n' && line[^2] == '\r') return [.. line];
                    if (line.Count > MaxHead) throw new IOException("chunk line too large");
                }
            }
        }

        private async ValueTask CopyAsync(long count, Stream? to, CancellationToken ct)
        {
            while (count > 0)
            {
                if (!await FillAsync(ct).ConfigureAwait(false)) throw new IOException("connection closed inside a body");
                int n = (int)Math.Min(count, _len - _pos);
                if (to is not null) await to.WriteAsync(_buffer.AsMemory(_pos, n), ct).ConfigureAwait(false);
                _pos += n;
                count -= n;
            }
        }

        private async ValueTask CopyToEndAsync(Stream? to, CancellationToken ct)
        {
            while (await FillAsync(ct).ConfigureAwait(false))
            {
                if (to is not null) await to.WriteAsync(_buffer.AsMemory(_pos, _len - _pos), ct).ConfigureAwait(false);
                _pos = _len;
            }
        }

        /// <summary>Copies (or with a null target drops) the body that <paramref name="head"/> announces, framing included.</summary>
        public async ValueTask CopyBodyAsync(Head head, Stream? to, CancellationToken ct, bool untilClose = false)
        {
            if (head.Chunked)
            {
                while (true)
                {
                    var line = await ReadLineAsync(ct).ConfigureAwait(false);
                    if (to is not null) await to.WriteAsync(line, ct).ConfigureAwait(false);
                    string size = Encoding.ASCII.GetString(line).TrimEnd('\r', '\n');
                    int semi = size.IndexOf(';', StringComparison.Ordinal);
                    if (semi >= 0) size = size[..semi];
                    long n = long.Parse(size.Trim(), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
                    if (n == 0)
                    {
                        while (true) // trailers, then the empty line
                        {
                            var trailer = await ReadLineAsync(ct).ConfigureAwait(false);
                            if (to is not null) await to.WriteAsync(trailer, ct).ConfigureAwait(false);
                            if (trailer.Length == 2) return;
                        }
                    }

                    await CopyAsync(n + 2, to, ct).ConfigureAwait(false); // data and its CRLF
                }
            }

            if (head.ContentLength is long length)
            {
                await CopyAsync(length, to, ct).ConfigureAwait(false);
                return;
            }

            if (untilClose) await CopyToEndAsync(to, ct).ConfigureAwait(false);
        }
    }
}
