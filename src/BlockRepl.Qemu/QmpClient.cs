using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace BlockRepl.Qemu;

/// <summary>
/// A QMP client over a unix socket: one JSON object per line in each direction. One reader loop matches
/// replies to commands by <c>id</c> and buffers asynchronous events; writes are serialised by a lock, so
/// <see cref="ExecuteAsync"/> may be called concurrently. Every call has a time limit
/// (<see cref="DefaultTimeout"/>, 30 s unless given to <see cref="ConnectAsync"/>).
/// </summary>
public sealed partial class QmpClient : IAsyncDisposable
{
    /// <summary>Events kept for a later <see cref="WaitForEventAsync"/>; beyond this the oldest are dropped.</summary>
    internal const int MaxBufferedEvents = 1024;

    // Names exactly as the caller wrote them: QMP spells arguments "node-name", "job-id", etc.
    private static readonly JsonSerializerOptions s_json = new() { PropertyNamingPolicy = null, DictionaryKeyPolicy = null };
    private static readonly byte[] s_newline = "\n"u8.ToArray();

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly CancellationTokenSource _disposeCts = new();
    private readonly Lock _eventLock = new();
    private readonly LinkedList<QmpEvent> _events = new();
    private readonly List<EventWaiter> _waiters = [];
    private long _nextId;
    private long _eventSequence;
    private Task _readLoop = Task.CompletedTask;
    private volatile QmpException? _failure;
    private volatile bool _disposing;

    private QmpClient(string socketPath, Socket socket, TimeSpan timeout)
    {
        SocketPath = socketPath;
        DefaultTimeout = timeout;
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: false, bufferSize: 64 * 1024);
    }

    /// <summary>The QMP socket this client is connected to.</summary>
    public string SocketPath { get; }

    /// <summary>QEMU's version from the greeting, <c>major.minor.micro</c>, e.g. <c>7.2.22</c>.</summary>
    public string Version { get; private set; } = "";

    /// <summary>The distribution's package string from the greeting (e.g. <c>Debian 1:7.2+dfsg-7+deb12u18+b3</c>), may be empty.</summary>
    public string Package { get; private set; } = "";

    /// <summary>The time limit of each call that is not given its own.</summary>
    public TimeSpan DefaultTimeout { get; }

    /// <summary>False once the connection has failed or been closed (by QEMU or by <see cref="DisposeAsync"/>).</summary>
    public bool IsConnected => _failure is null && !_disposing;

    /// <summary>
    /// Connects, reads the greeting (<c>{"QMP":{"version":…}}</c>) and leaves capabilities negotiation mode
    /// (<c>qmp_capabilities</c>). <paramref name="timeout"/> (default 30 s) bounds the whole handshake and
    /// becomes <see cref="DefaultTimeout"/>.
    /// </summary>
    /// <exception cref="QmpException">Transport (cannot connect, closed), Protocol (no greeting), Timeout.</exception>
    public static async Task<QmpClient> ConnectAsync(string socketPath, TimeSpan? timeout = null, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        TimeSpan limit = timeout ?? TimeSpan.FromSeconds(30);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(limit);

        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cts.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ArgumentException)
        {
            socket.Dispose();
            ct.ThrowIfCancellationRequested();
            throw e is OperationCanceledException
                ? QmpException.Create(QmpErrorKind.Timeout, socketPath, null, $"connect did not finish within {limit.TotalSeconds:0.#} s", e)
                : QmpException.Create(QmpErrorKind.Transport, socketPath, null, $"cannot connect: {e.Message}", e);
        }

        var client = new QmpClient(socketPath, socket, limit);
        try
        {
            await client.ReadGreetingAsync(limit, cts.Token, ct).ConfigureAwait(false);
            client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            await client.ExecuteAsync("qmp_capabilities", null, limit, ct).ConfigureAwait(false);
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return client;
    }

    /// <summary>
    /// Sends <c>{"execute":command,"arguments":arguments,"id":N}</c> and returns the reply's <c>return</c> value
    /// (cloned, so it outlives the reply). <paramref name="arguments"/> is serialised with System.Text.Json with
    /// property and key names exactly as given: use a <see cref="Dictionary{TKey,TValue}"/> or
    /// <see cref="JsonObject"/> for QMP's hyphenated names (<c>node-name</c>), or an anonymous object for plain ones.
    /// </summary>
    /// <exception cref="QmpException">CommandFailed (an <c>error</c> reply), Transport, Protocol, Timeout.</exception>
    public Task<JsonElement> ExecuteAsync(string command, object? arguments = null, CancellationToken ct = default) =>
        ExecuteAsync(command, arguments, DefaultTimeout, ct);

    /// <summary><see cref="ExecuteAsync(string, object?, CancellationToken)"/> with its own time limit.</summary>
    public async Task<JsonElement> ExecuteAsync(string command, object? arguments, TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(command);
        ThrowIfFailed(command);
        long id = Interlocked.Increment(ref _nextId);
        byte[] line = BuildRequest(command, arguments, id);
        var pending = new Pending(command);
        _pending[id] = pending;
        try
        {
            // A failure between the check above and the registration must not leave this request waiting forever.
            ThrowIfFailed(command);
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                await WriteLineAsync(line, command, cts.Token).ConfigureAwait(false);
                return await pending.Completion.Task.WaitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
            {
                throw QmpException.Create(QmpErrorKind.Timeout, SocketPath, command, $"no reply within {timeout.TotalSeconds:0.#} s", e);
            }
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// Returns the <c>data</c> of the first event named <paramref name="name"/> for which <paramref name="match"/>
    /// (if given) is true, and removes it from the buffer. Events that arrived before this call count: events
    /// are buffered from the moment of connecting until some wait takes them. An event without <c>data</c>
    /// is given as an empty object.
    /// </summary>
    /// <exception cref="QmpException">Timeout, or Transport when the connection is lost while waiting.</exception>
    public Task<JsonElement> WaitForEventAsync(string name, Func<JsonElement, bool>? match, TimeSpan timeout, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return WaitDataAsync(name, match, timeout, ct);
    }

    private async Task<JsonElement> WaitDataAsync(string name, Func<JsonElement, bool>? match, TimeSpan timeout, CancellationToken ct) =>
        (await WaitForEventCoreAsync([name], match, afterSequence: 0, timeout, ct).ConfigureAwait(false)).Data;

    /// <summary>The sequence number of the newest event received so far; pass it to a later wait to ignore older events.</summary>
    internal long EventSequence => Interlocked.Read(ref _eventSequence);

    /// <summary>Waits for any of <paramref name="names"/> whose sequence number is above <paramref name="afterSequence"/>.</summary>
    internal async Task<QmpEvent> WaitForEventCoreAsync(string[] names, Func<JsonElement, bool>? match, long afterSequence, TimeSpan timeout, CancellationToken ct)
    {
        var waiter = new EventWaiter(names, match, afterSequence);
        lock (_eventLock)
        {
            for (var node = _events.First; node is not null; node = node.Next)
            {
                if (waiter.Matches(node.Value))
                {
                    _events.Remove(node);
                    return node.Value;
                }
            }
            if (_failure is { } failure) throw Rethrow(failure, null);
            _waiters.Add(waiter);
        }

        QmpEvent? result = null;
        try
        {
            result = await waiter.Completion.Task.WaitAsync(timeout, ct).ConfigureAwait(false);
            return result;
        }
        catch (TimeoutException e)
        {
            throw QmpException.Create(QmpErrorKind.Timeout, SocketPath, null, $"no {string.Join(" or ", names)} event within {timeout.TotalSeconds:0.#} s", e);
        }
        finally
        {
            lock (_eventLock)
            {
                _waiters.Remove(waiter);
                // Completed by the reader just as the wait gave up: keep the event for the next waiter.
                if (result is null && waiter.Completion.Task.IsCompletedSuccessfully)
                    _events.AddFirst(waiter.Completion.Task.Result);
            }
        }
    }

    /// <summary>Closes the connection. Commands and event waits still pending fail with <see cref="QmpErrorKind.Transport"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposing) return;
        _disposing = true;
        await _disposeCts.CancelAsync().ConfigureAwait(false);
        try { _socket.Shutdown(SocketShutdown.Both); }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
        try { await _readLoop.ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or IOException) { }
        Fail(QmpException.Create(QmpErrorKind.Transport, SocketPath, null, "the client was closed"));
        _reader.Dispose();
        await _stream.DisposeAsync().ConfigureAwait(false);
        // _writeLock is not disposed: a concurrent caller may still be inside WaitAsync, and a SemaphoreSlim
        // whose wait handle was never created holds nothing to free.
        _disposeCts.Dispose();
    }

    internal static byte[] BuildRequest(string command, object? arguments, long id)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("execute", command);
            if (arguments is not null)
            {
                JsonNode? node = arguments switch
                {
                    JsonNode n => n,
                    JsonElement e => JsonNode.Parse(e.GetRawText()),
                    _ => JsonSerializer.SerializeToNode(arguments, arguments.GetType(), s_json),
                };
                if (node is not JsonObject)
                    throw new ArgumentException($"QMP arguments of '{command}' must serialise to a JSON object, not {node?.GetValueKind().ToString() ?? "null"}", nameof(arguments));
                writer.WritePropertyName("arguments");
                node.WriteTo(writer, s_json);
            }
            writer.WriteNumber("id", id);
            writer.WriteEndObject();
        }
        return buffer.WrittenSpan.ToArray();
    }

    private async Task WriteLineAsync(byte[] line, string command, CancellationToken ct)
    {
        await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            // Not cancellable half-way: a partial line would corrupt the stream for every other caller.
            await _stream.WriteAsync(line, CancellationToken.None).ConfigureAwait(false);
            await _stream.WriteAsync(s_newline, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            var failure = _failure ?? QmpException.Create(QmpErrorKind.Transport, SocketPath, command, $"connection lost while sending: {e.Message}", e);
            Fail(failure);
            throw Rethrow(failure, command);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private void ThrowIfFailed(string? command)
    {
        if (_failure is { } failure) throw Rethrow(failure, command);
        ObjectDisposedException.ThrowIf(_disposing, this);
    }

    /// <summary>A fresh exception per caller (an exception object must not be thrown from several tasks), naming the caller's command.</summary>
    private QmpException Rethrow(QmpException failure, string? command) =>
        command is null || failure.Command == command
            ? new QmpException(failure.Message, failure.Kind, SocketPath, failure.Command, failure.Class, failure.Description, failure)
            : QmpException.Create(failure.Kind, SocketPath, command, StripPrefix(failure.Message), failure);

    private string StripPrefix(string message)
    {
        int at = message.IndexOf(SocketPath + ": ", StringComparison.Ordinal);
        return at < 0 ? message : message[(at + SocketPath.Length + 2)..];
    }

    private sealed class Pending(string command)
    {
        public string Command { get; } = command;
        public TaskCompletionSource<JsonElement> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>One asynchronous event: name, data (an empty object when QEMU sent none), arrival order.</summary>
    internal sealed record QmpEvent(string Name, JsonElement Data, long Sequence);

    private sealed class EventWaiter(string[] names, Func<JsonElement, bool>? match, long afterSequence)
    {
        public TaskCompletionSource<QmpEvent> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Matches(QmpEvent e) =>
            e.Sequence > afterSequence && Array.IndexOf(names, e.Name) >= 0 && (match is null || match(e.Data));
    }

    internal static string FormatVersion(JsonElement qemu) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{qemu.GetProperty("major").GetInt32()}.{qemu.GetProperty("minor").GetInt32()}.{qemu.GetProperty("micro").GetInt32()}");
}
