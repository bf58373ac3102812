using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using static BlockRepl.Nbd.NbdProtocol;

namespace BlockRepl.Nbd;

public sealed partial class NbdClient
{
    private const int ScratchSize = 64 * 1024;

    /// <summary>
    /// The one reader of the connection: reads reply headers, finds the request by cookie, writes data straight
    /// into the caller's memory and completes the request on its last chunk. A protocol violation or transport
    /// failure fails every request in flight; a server error for one request (error chunk) fails only that one.
    /// </summary>
    private async Task ReadLoopAsync()
    {
        byte[] header = new byte[StructuredReplyHeaderSize];
        byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
        try
        {
            while (true)
            {
                int got = await _input.ReadAtLeastAsync(header.AsMemory(0, 4), 4, throwOnEndOfStream: false).ConfigureAwait(false);
                if (got < 4)
                {
                    if (got == 0 && (_disposing || _pending.IsEmpty && _failure is not null)) return;
                    throw ProtocolError(NbdErrorKind.Transport, _pending.IsEmpty
                        ? "the server closed the connection"
                        : $"the server closed the connection with {_pending.Count} request(s) in flight");
                }
                uint magic = BinaryPrimitives.ReadUInt32BigEndian(header);
                if (magic == SimpleReplyMagic)
                {
                    await _input.ReadExactlyAsync(header.AsMemory(4, SimpleReplySize - 4)).ConfigureAwait(false);
                    uint error = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(4));
                    ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
                    await HandleSimpleReplyAsync(error, cookie, scratch).ConfigureAwait(false);
                }
                else if (magic == StructuredReplyMagic)
                {
                    await _input.ReadExactlyAsync(header.AsMemory(4, StructuredReplyHeaderSize - 4)).ConfigureAwait(false);
                    ushort flags = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4));
                    ushort type = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(6));
                    ulong cookie = BinaryPrimitives.ReadUInt64BigEndian(header.AsSpan(8));
                    uint length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
                    await HandleChunkAsync(flags, type, cookie, length, scratch).ConfigureAwait(false);
                }
                else
                {
                    throw ProtocolError(NbdErrorKind.Protocol, $"unexpected reply magic 0x{magic:x8}");
                }
            }
        }
        catch (NbdException e)
        {
            Fail(e);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or EndOfStreamException)
        {
            Fail(_disposing
                ? NbdException.Create(NbdErrorKind.InvalidRequest, Uri, "the client was disposed", inner: e)
                : ProtocolError(NbdErrorKind.Transport, $"connection lost: {e.Message}", e));
        }
        catch (Exception e)
        {
            Fail(ProtocolError(NbdErrorKind.Protocol, $"reply reader failed: {e.Message}", e));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    private NbdException ProtocolError(NbdErrorKind kind, string what, Exception? inner = null) =>
        NbdException.Create(kind, Uri, what, inner: inner);

    private NbdRequest Lookup(ulong cookie) =>
        _pending.TryGetValue(cookie, out var request)
            ? request
            : throw ProtocolError(NbdErrorKind.Protocol, $"reply for unknown cookie {cookie}");

    private async ValueTask HandleSimpleReplyAsync(uint error, ulong cookie, byte[] scratch)
    {
        var request = Lookup(cookie);
        if (error != 0)
        {
            request.RecordError(error, null);
        }
        else if (request is ReadRequest read && !StructuredReplies)
        {
            // Without structured replies the data follows the header, its length known only from the request.
            await ReceiveIntoAsync(read, read.Destination, scratch).ConfigureAwait(false);
            read.Covered = read.Length;
        }
        else
        {
            throw ProtocolError(NbdErrorKind.Protocol, $"successful simple reply to {request.Describe()}, which needs a structured reply");
        }
        Complete(request);
    }

    private async ValueTask HandleChunkAsync(ushort flags, ushort type, ulong cookie, uint length, byte[] scratch)
    {
        if (!StructuredReplies) throw ProtocolError(NbdErrorKind.Protocol, "structured reply chunk although structured replies were not negotiated");
        var request = Lookup(cookie);
        switch (type)
        {
            case ReplyTypeNone:
                if (length != 0 || (flags & ReplyFlagDone) == 0)
                    throw ProtocolError(NbdErrorKind.Protocol, $"malformed NBD_REPLY_TYPE_NONE for {request.Describe()}");
                break;

            case ReplyTypeOffsetData:
            {
                if (request is not ReadRequest read || length < 9)
                    throw ProtocolError(NbdErrorKind.Protocol, $"unexpected OFFSET_DATA chunk ({length} bytes) for {request.Describe()}");
                await _input.ReadExactlyAsync(scratch.AsMemory(0, 8)).ConfigureAwait(false);
                long offset = ChunkOffset(read, BinaryPrimitives.ReadUInt64BigEndian(scratch), length - 8u, "OFFSET_DATA");
                var target = read.Destination.Slice((int)(offset - read.Offset), (int)(length - 8));
                await ReceiveIntoAsync(read, target, scratch).ConfigureAwait(false);
                read.Covered += target.Length;
                break;
            }

            case ReplyTypeOffsetHole:
            {
                if (request is not ReadRequest read || length != 12)
                    throw ProtocolError(NbdErrorKind.Protocol, $"unexpected OFFSET_HOLE chunk ({length} bytes) for {request.Describe()}");
                await _input.ReadExactlyAsync(scratch.AsMemory(0, 12)).ConfigureAwait(false);
                uint holeSize = BinaryPrimitives.ReadUInt32BigEndian(scratch.AsSpan(8));
                long offset = ChunkOffset(read, BinaryPrimitives.ReadUInt64BigEndian(scratch), holeSize, "OFFSET_HOLE");
                if (read.TryBeginWrite())
                {
                    try { read.Destination.Span.Slice((int)(offset - read.Offset), (int)holeSize).Clear(); }
                    finally { read.EndWrite(); }
                }
                read.Covered += holeSize;
                break;
            }

            case ReplyTypeBlockStatus:
                if (request is not BlockStatusRequest status || length < 12 || (length - 4) % 8 != 0)
                    throw ProtocolError(NbdErrorKind.Protocol, $"unexpected BLOCK_STATUS chunk ({length} bytes) for {request.Describe()}");
                await ReceiveBlockStatusAsync(status, length, scratch).ConfigureAwait(false);
                break;

            default:
                if ((type & ReplyTypeErrorBit) == 0)
                    throw ProtocolError(NbdErrorKind.Protocol, $"unknown reply chunk type {type} for {request.Describe()}");
                await ReceiveErrorAsync(request, type, length, scratch).ConfigureAwait(false);
                break;
        }
        if ((flags & ReplyFlagDone) != 0) Complete(request);
    }

    /// <summary>Validates that a content chunk lies inside its request (else the stream cannot be trusted).</summary>
    private long ChunkOffset(ReadRequest read, ulong offset, uint size, string chunk)
    {
        if (offset < (ulong)read.Offset || offset > (ulong)(read.Offset + read.Length) || size > (ulong)(read.Offset + read.Length) - offset)
            throw ProtocolError(NbdErrorKind.Protocol, $"{chunk} chunk at {offset}+{size} lies outside {read.Describe()}");
        return (long)offset;
    }

    private async ValueTask ReceiveIntoAsync(NbdRequest request, Memory<byte> target, byte[] scratch)
    {
        if (request.TryBeginWrite())
        {
            Interlocked.Increment(ref _writesInProgress);
            try { await _input.ReadExactlyAsync(target).ConfigureAwait(false); }
            finally
            {
                Interlocked.Decrement(ref _writesInProgress);
                request.EndWrite();
            }
        }
        else
        {
            await SkipAsync(target.Length, scratch).ConfigureAwait(false); // the caller was cancelled and has its buffer back
        }
    }

    private async ValueTask ReceiveBlockStatusAsync(BlockStatusRequest status, uint length, byte[] scratch)
    {
        await _input.ReadExactlyAsync(scratch.AsMemory(0, 4)).ConfigureAwait(false);
        uint contextId = BinaryPrimitives.ReadUInt32BigEndian(scratch);
        long remaining = length - 4;
        if (contextId != status.ContextId)
        {
            // Every selected context gets a chunk; this call asked about one of them.
            await SkipAsync(remaining, scratch).ConfigureAwait(false);
            return;
        }
        if (status.GotChunk) throw ProtocolError(NbdErrorKind.Protocol, $"two BLOCK_STATUS chunks for context {contextId} in {status.Describe()}");
        status.GotChunk = true;
        long pos = status.Offset;
        while (remaining > 0)
        {
            int n = (int)Math.Min(remaining, ScratchSize);
            await _input.ReadExactlyAsync(scratch.AsMemory(0, n)).ConfigureAwait(false);
            for (int i = 0; i < n; i += 8)
            {
                uint extentLength = BinaryPrimitives.ReadUInt32BigEndian(scratch.AsSpan(i));
                uint extentFlags = BinaryPrimitives.ReadUInt32BigEndian(scratch.AsSpan(i + 4));
                if (extentLength == 0) throw ProtocolError(NbdErrorKind.Protocol, $"zero-length extent in {status.Describe()}");
                status.Extents.Add(new NbdExtent(pos, extentLength, extentFlags));
                pos += extentLength;
            }
            remaining -= n;
        }
    }

    /// <summary>ERROR / ERROR_OFFSET and unknown error types: u32 error, u16 message length, message[, …].</summary>
    private async ValueTask ReceiveErrorAsync(NbdRequest request, ushort type, uint length, byte[] scratch)
    {
        if (length < 6)
        {
            if (type is ReplyTypeError or ReplyTypeErrorOffset)
                throw ProtocolError(NbdErrorKind.Protocol, $"error chunk of {length} bytes for {request.Describe()}");
            await SkipAsync(length, scratch).ConfigureAwait(false);
            request.RecordError(22, $"unknown error chunk type 0x{type:x4}");
            return;
        }
        int head = (int)Math.Min(length, 6 + MaxStringLength);
        await _input.ReadExactlyAsync(scratch.AsMemory(0, head)).ConfigureAwait(false);
        await SkipAsync(length - head, scratch).ConfigureAwait(false);
        uint error = BinaryPrimitives.ReadUInt32BigEndian(scratch);
        int messageLength = Math.Min(BinaryPrimitives.ReadUInt16BigEndian(scratch.AsSpan(4)), head - 6);
        request.RecordError(error, Encoding.UTF8.GetString(scratch, 6, messageLength));
    }

    private async ValueTask SkipAsync(long count, byte[] scratch)
    {
        while (count > 0)
        {
            int n = (int)Math.Min(count, ScratchSize);
            await _input.ReadExactlyAsync(scratch.AsMemory(0, n)).ConfigureAwait(false);
            count -= n;
        }
    }

    private void Complete(NbdRequest request)
    {
        _pending.TryRemove(request.Cookie, out _);
        if (request.Error != 0)
        {
            string message = string.IsNullOrEmpty(request.ErrorMessage) ? "" : $" ({request.ErrorMessage})";
            request.TrySetException(NbdException.Create(NbdErrorKind.CommandFailed, Uri,
                $"{request.Describe()} failed: {ErrorName(request.Error)}{message}", request.Error));
        }
        else if (request is ReadRequest read && read.Covered != read.Length)
        {
            request.TrySetException(ProtocolError(NbdErrorKind.Protocol,
                $"the reply to {request.Describe()} covered {read.Covered} bytes"));
        }
        else if (request is BlockStatusRequest status && !status.GotChunk)
        {
            request.TrySetException(ProtocolError(NbdErrorKind.Protocol,
                $"the reply to {request.Describe()} had no extents for that context"));
        }
        else
        {
            request.TrySetResult();
        }
        if (_disposing && _pending.IsEmpty) _drained.TrySetResult();
    }
}
