using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net.Sockets;
using static BlockRepl.Nbd.NbdProtocol;

namespace BlockRepl.Nbd;

/// <summary>
/// A client for one NBD export over one connection (unix socket or TCP). Many requests may be in flight at
/// once from any number of threads: requests are written under a lock, and one reader loop matches replies
/// to requests by cookie, since the server may answer out of order and interleave chunks.
/// </summary>
/// <remarks>
/// Reads land directly in the caller's memory (no intermediate buffers); larger reads are split at the
/// negotiated maximum payload, and offsets not aligned to the export's minimum block size are served through
/// one small pooled bounce buffer per unaligned edge. Dispose with <see cref="DisposeAsync"/>, which waits for
/// requests in flight and then sends NBD_CMD_DISC.
/// </remarks>
public sealed partial class NbdClient : IAsyncDisposable
{
    /// <summary>Largest BLOCK_STATUS length per request: the field is 32-bit, and QEMU answers odd boundaries to unaligned lengths.</summary>
    internal const long MaxBlockStatusLength = 1L << 31;

    private static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly NetworkStream _output;
    private readonly BufferedStream _input;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly byte[] _requestBuffer = new byte[RequestSize];
    private readonly ConcurrentDictionary<ulong, NbdRequest> _pending = new();
    private int _writesInProgress;

    /// <summary>Replies being received straight into a caller's buffer right now (tests wait on it).</summary>
    internal int WritesInProgress => Volatile.Read(ref _writesInProgress);
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly int _maxRead;
    private readonly Task _readLoop;
    private long _nextCookie;
    private volatile NbdException? _failure;
    private volatile bool _disposing;

    /// <summary>The server and export this client is connected to.</summary>
    public NbdUri Uri { get; }

    /// <summary>Export size in bytes.</summary>
    public long Size { get; }

    public NbdTransmissionFlags Flags { get; }

    /// <summary>The server's block size constraints (protocol defaults when it sent none).</summary>
    public NbdBlockSizes BlockSizes { get; }

    /// <summary>True when structured replies were negotiated (needed for block status).</summary>
    public bool StructuredReplies { get; }

    /// <summary>The selected meta contexts and the ids the server gave them (ids are arbitrary per connection).</summary>
    public IReadOnlyDictionary<string, uint> MetaContexts { get; }

    /// <summary>Bytes per READ request: the server's maximum payload, capped by <see cref="NbdConnectOptions.MaxReadRequest"/>.</summary>
    public int MaxReadRequest => _maxRead;

    private NbdClient(NbdUri uri, Socket socket, NetworkStream output, BufferedStream input, NbdNegotiation negotiation, NbdConnectOptions options)
    {
        Uri = uri;
        _socket = socket;
        _output = output;
        _input = input;
        Size = negotiation.Size;
        Flags = negotiation.Flags;
        BlockSizes = negotiation.BlockSizes;
        StructuredReplies = negotiation.StructuredReplies;
        MetaContexts = negotiation.MetaContexts;
        int min = BlockSizes.Minimum;
        int cap = Math.Clamp(options.MaxReadRequest, 1, DefaultMaxPayload);
        _maxRead = Math.Max(min, Math.Min(cap, BlockSizes.MaximumPayload) / min * min);
        _readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>
    /// Connects, negotiates (fixed newstyle, structured replies, meta contexts, GO) and returns a client ready
    /// for requests. Fails with an <see cref="NbdException"/> whose <see cref="NbdException.Kind"/> says why.
    /// </summary>
    public static async Task<NbdClient> ConnectAsync(NbdUri uri, NbdConnectOptions? options = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(uri);
        options ??= new NbdConnectOptions();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(options.ConnectTimeout);

        Socket socket = uri.Transport == NbdTransport.Unix
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true }; // 28-byte requests must not wait for Nagle
        NetworkStream? output = null;
        try
        {
            try
            {
                if (uri.Transport == NbdTransport.Unix)
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(uri.SocketPath), timeout.Token).ConfigureAwait(false);
                else
                    await socket.ConnectAsync(uri.Host, uri.Port, timeout.Token).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                throw NbdException.Create(NbdErrorKind.Transport, uri, $"cannot connect: {e.Message}", inner: e);
            }

            output = new NetworkStream(socket, ownsSocket: false);
            // Reads go through a buffer (headers are small); payloads larger than it bypass it.
            var input = new BufferedStream(output, 64 * 1024);
            var negotiation = await new NbdHandshake(input, output, uri, options)
                .RunAsync(timeout.Token).ConfigureAwait(false);
            return new NbdClient(uri, socket, output, input, negotiation, options);
        }
        catch (Exception e)
        {
            output?.Dispose();
            socket.Dispose();
            if (e is OperationCanceledException && !ct.IsCancellationRequested)
                throw NbdException.Create(NbdErrorKind.Transport, uri, $"connecting and negotiating took longer than {options.ConnectTimeout.TotalSeconds:0.#} s", inner: e);
            if (e is IOException or SocketException)
                throw NbdException.Create(NbdErrorKind.Transport, uri, $"connection failed during the handshake: {e.Message}", inner: e);
            throw;
        }
    }

    /// <summary>Parses <paramref name="uri"/> (see <see cref="NbdUri"/>) and connects.</summary>
    public static Task<NbdClient> ConnectAsync(string uri, NbdConnectOptions? options = null, CancellationToken ct = default) =>
        ConnectAsync(NbdUri.Parse(uri), options, ct);

    /// <summary>
    /// Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>; holes read as zeros.
    /// Splits at <see cref="MaxReadRequest"/> and sends the pieces concurrently. Returns only when no piece can
    /// still write into <paramref name="destination"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the export.</exception>
    /// <exception cref="NbdException">The server failed the read, or the connection broke.</exception>
    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken ct = default)
    {
        CheckRange(offset, destination.Length);
        if (destination.Length == 0) return ValueTask.CompletedTask;
        int min = BlockSizes.Minimum;
        if (destination.Length <= _maxRead && offset % min == 0 && (destination.Length % min == 0 || offset + destination.Length == Size))
            return new ValueTask(SendReadAsync(offset, destination, ct));
        return ReadSplitAsync(offset, destination, ct);
    }

    private async ValueTask ReadSplitAsync(long offset, Memory<byte> destination, CancellationToken ct)
    {
        long end = offset + destination.Length;
        int min = BlockSizes.Minimum;
        long alignedStart = AlignUp(offset, min);
        long alignedEnd = end == Size ? end : end / min * min;
        // Each unaligned edge lies inside one minimum block (<= 64 KiB <= maximum payload) and goes through a
        // bounce buffer; the aligned middle lands directly in the destination.
        var pieces = new List<Task>();
        long headEnd = Math.Min(alignedStart, end);
        if (headEnd > offset && offset % min != 0) pieces.Add(ReadBouncedAsync(offset, destination[..(int)(headEnd - offset)], ct));
        else headEnd = offset;
        long middleEnd = Math.Max(headEnd, alignedEnd);
        for (long pos = headEnd; pos < middleEnd; pos += _maxRead)
        {
            int length = (int)Math.Min(_maxRead, middleEnd - pos);
            pieces.Add(SendReadAsync(pos, destination.Slice((int)(pos - offset), length), ct));
        }
        if (middleEnd < end) pieces.Add(ReadBouncedAsync(middleEnd, destination[(int)(middleEnd - offset)..], ct));
        // WhenAll, not the first failure: every piece must have stopped writing before the caller gets control.
        await Task.WhenAll(pieces).ConfigureAwait(false);
    }

    /// <summary>A range inside one minimum block, read as that whole block through a pooled buffer.</summary>
    private async Task ReadBouncedAsync(long offset, Memory<byte> destination, CancellationToken ct)
    {
        int min = BlockSizes.Minimum;
        long start = offset / min * min;
        long end = Math.Min(AlignUp(offset + destination.Length, min), Size);
        int length = (int)(end - start);
        byte[] bounce = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            await SendReadAsync(start, bounce.AsMemory(0, length), ct).ConfigureAwait(false);
            bounce.AsMemory((int)(offset - start), destination.Length).CopyTo(destination);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bounce);
        }
    }

    private async Task SendReadAsync(long offset, Memory<byte> destination, CancellationToken ct)
    {
        var request = new ReadRequest(NextCookie(), offset, destination);
        await SendAndWaitAsync(request, CmdRead, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Block status of <paramref name="context"/> for [<paramref name="offset"/>, <paramref name="offset"/> +
    /// <paramref name="length"/>): consecutive extents, adjacent equal flags merged, clipped to the range.
    /// Loops over as many requests as the server needs (it may answer less than asked, and a request is at most 2 GiB).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is not inside the export.</exception>
    /// <exception cref="NbdException">The context was not negotiated (<see cref="NbdErrorKind.InvalidRequest"/>), the server failed, or the connection broke.</exception>
    public async Task<IReadOnlyList<NbdExtent>> BlockStatusAsync(string context, long offset, long length, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        CheckRange(offset, length);
        if (!MetaContexts.TryGetValue(context, out uint contextId))
        {
            string negotiated = MetaContexts.Count == 0 ? "none" : string.Join(", ", MetaContexts.Keys);
            throw NbdException.Create(NbdErrorKind.InvalidRequest, Uri, $"meta context '{context}' was not negotiated on this connection (negotiated: {negotiated})");
        }

        var result = new List<NbdExtent>();
        long end = offset + length;
        int min = BlockSizes.Minimum;
        long pos = offset / min * min;
        while (pos < end)
        {
            long requestEnd = Math.Min(Math.Min(AlignUp(end, min), Size), pos + MaxBlockStatusLength);
            var request = new BlockStatusRequest(NextCookie(), pos, requestEnd - pos, context, contextId);
            await SendAndWaitAsync(request, CmdBlockStatus, ct).ConfigureAwait(false);
            long covered = pos;
            foreach (var extent in request.Extents)
            {
                long s = Math.Max(extent.Offset, offset), e = Math.Min(extent.End, end);
                covered = extent.End;
                if (e > s) Append(result, new NbdExtent(s, e - s, extent.Flags));
                if (covered >= end) break;
            }
            pos = covered;
        }
        return result;
    }

    private static void Append(List<NbdExtent> extents, NbdExtent extent)
    {
        if (extents.Count > 0 && extents[^1].Flags == extent.Flags && extents[^1].End == extent.Offset)
            extents[^1] = extents[^1] with { Length = extents[^1].Length + extent.Length };
        else
            extents.Add(extent);
    }

    private async Task SendAndWaitAsync(NbdRequest request, ushort command, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposing, this);
        ThrowIfFailed();
        _pending[request.Cookie] = request;
        if (_failure is not null && _pending.TryRemove(request.Cookie, out _)) ThrowIfFailed();

        try
        {
            await _writeLock.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _pending.TryRemove(request.Cookie, out _);
            throw;
        }
        try
        {
            var buffer = _requestBuffer.AsSpan();
            BinaryPrimitives.WriteUInt32BigEndian(buffer, RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(buffer[4..], 0);
            BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], command);
            BinaryPrimitives.WriteUInt64BigEndian(buffer[8..], request.Cookie);
            BinaryPrimitives.WriteUInt64BigEndian(buffer[16..], (ulong)request.Offset);
            BinaryPrimitives.WriteUInt32BigEndian(buffer[24..], (uint)request.Length);
            // Never cancel a write midway: a partial request would desynchronise the stream.
            await _output.WriteAsync(_requestBuffer, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Fail(NbdException.Create(NbdErrorKind.Transport, Uri, $"sending {request.Describe()} failed: {e.Message}", inner: e));
        }
        finally
        {
            _writeLock.Release();
        }

        using (request.RegisterCancellation(ct))
        {
            await request.Task.ConfigureAwait(false);
        }
    }

    private ulong NextCookie() => (ulong)Interlocked.Increment(ref _nextCookie);

    private void ThrowIfFailed()
    {
        if (_failure is { } f) throw Copy(f);
    }

    private static NbdException Copy(NbdException f) => new(f.Message, f.Kind, f.Server, f.Export, f.ServerError, f.InnerException);

    private void CheckRange(long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset > Size || length > Size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the export of {Size} bytes");
    }

    private static long AlignUp(long value, int alignment) => (value + alignment - 1) / alignment * alignment;

    /// <summary>Marks the connection broken and fails every request in flight; later requests fail at once.</summary>
    private void Fail(NbdException failure)
    {
        Interlocked.CompareExchange(ref _failure, failure, null);
        foreach (var cookie in _pending.Keys)
        {
            if (_pending.TryRemove(cookie, out var request)) request.TrySetException(Copy(failure));
        }
        _drained.TrySetResult();
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
    }

    /// <summary>Waits (bounded) for requests in flight, sends NBD_CMD_DISC, and closes the connection.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposing) return;
        _disposing = true;
        if (!_pending.IsEmpty)
        {
            try { await _drained.Task.WaitAsync(DrainTimeout).ConfigureAwait(false); } catch (TimeoutException) { }
        }
        if (_failure is null)
        {
            await _writeLock.WaitAsync().ConfigureAwait(false);
            try
            {
                var buffer = _requestBuffer.AsSpan();
                buffer.Clear();
                BinaryPrimitives.WriteUInt32BigEndian(buffer, RequestMagic);
                BinaryPrimitives.WriteUInt16BigEndian(buffer[6..], CmdDisc);
                await _output.WriteAsync(_requestBuffer).ConfigureAwait(false);
                _socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is IOException or SocketException) { }
            finally
            {
                _writeLock.Release();
            }
        }
        // DISC has no reply: the server closes, and the reader loop ends on end-of-stream.
        try { await _readLoop.WaitAsync(DrainTimeout).ConfigureAwait(false); } catch (TimeoutException) { }
        Fail(NbdException.Create(NbdErrorKind.InvalidRequest, Uri, "the client was disposed"));
        _input.Dispose();
        _output.Dispose();
        _socket.Dispose();
        _writeLock.Dispose();
    }
}
