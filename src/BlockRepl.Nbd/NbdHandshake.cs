using System.Buffers.Binary;
using System.Text;
using static BlockRepl.Nbd.NbdProtocol;

namespace BlockRepl.Nbd;

/// <summary>What the handshake settled: the export and the protocol features in use.</summary>
internal sealed record NbdNegotiation(
    long Size,
    NbdTransmissionFlags Flags,
    NbdBlockSizes BlockSizes,
    bool StructuredReplies,
    IReadOnlyDictionary<string, uint> MetaContexts);

/// <summary>
/// The fixed newstyle handshake: greeting, client flags, then one option at a time —
/// STRUCTURED_REPLY, SET_META_CONTEXT, GO (falling back to EXPORT_NAME only if GO is unknown).
/// Runs once per connection, so it favours clarity over avoiding small allocations.
/// </summary>
internal sealed class NbdHandshake(Stream input, Stream output, NbdUri uri, NbdConnectOptions options)
{
    private readonly byte[] _header = new byte[OptionReplyHeaderSize];
    private bool _noZeroes;

    private NbdException Error(NbdErrorKind kind, string what, Exception? inner = null) => NbdException.Create(kind, uri, what, inner: inner);

    public async Task<NbdNegotiation> RunAsync(CancellationToken ct)
    {
        await ReadGreetingAsync(ct).ConfigureAwait(false);

        bool structured = false;
        if (options.StructuredReplies)
        {
            var reply = await OptionAsync(OptStructuredReply, [], ct).ConfigureAwait(false);
            if (reply.Type == RepAck) structured = true;
            else if (reply.Type != RepErrUnsup) throw OptionError(OptStructuredReply, reply);
        }

        var contexts = new Dictionary<string, uint>(StringComparer.Ordinal);
        if (options.MetaContexts.Count > 0)
        {
            if (!structured)
            {
                throw Error(NbdErrorKind.Unsupported, options.StructuredReplies
                    ? "the server does not support structured replies (NBD_OPT_STRUCTURED_REPLY), which meta contexts need"
                    : "meta contexts need structured replies, which were disabled in the connect options");
            }
            await SetMetaContextsAsync(contexts, ct).ConfigureAwait(false);
        }

        var (size, flags, sizes) = await GoAsync(ct).ConfigureAwait(false);
        return new NbdNegotiation(size, flags, sizes, structured, contexts);
    }

    private async Task ReadGreetingAsync(CancellationToken ct)
    {
        await ReadExactlyAsync(_header.AsMemory(0, 18), "greeting", ct).ConfigureAwait(false);
        ulong magic = BinaryPrimitives.ReadUInt64BigEndian(_header);
        if (magic != NbdMagic) throw Error(NbdErrorKind.Protocol, $"not an NBD server (greeting magic 0x{magic:x16})");
        ulong style = BinaryPrimitives.ReadUInt64BigEndian(_header.AsSpan(8));
        if (style == OldstyleMagic) throw Error(NbdErrorKind.Unsupported, "the server speaks the oldstyle protocol, which this client does not support");
        if (style != IHaveOpt) throw Error(NbdErrorKind.Protocol, $"unexpected greeting 0x{style:x16}");
        ushort serverFlags = BinaryPrimitives.ReadUInt16BigEndian(_header.AsSpan(16));
        if ((serverFlags & FlagFixedNewstyle) == 0)
            throw Error(NbdErrorKind.Unsupported, "the server does not offer fixed newstyle negotiation (NBD_FLAG_FIXED_NEWSTYLE)");
        _noZeroes = (serverFlags & FlagNoZeroes) != 0;
        // Only bits the server offered: an unknown client flag makes the server drop the connection.
        uint clientFlags = ClientFlagFixedNewstyle | (_noZeroes ? ClientFlagNoZeroes : 0);
        BinaryPrimitives.WriteUInt32BigEndian(_header, clientFlags);
        await output.WriteAsync(_header.AsMemory(0, 4), ct).ConfigureAwait(false);
    }

    private async Task SetMetaContextsAsync(Dictionary<string, uint> contexts, CancellationToken ct)
    {
        byte[] data = EncodeMetaContextQuery(uri.ExportName, options.MetaContexts);
        await SendOptionAsync(OptSetMetaContext, data, ct).ConfigureAwait(false);
        while (true)
        {
            var reply = await ReadOptionReplyAsync(OptSetMetaContext, ct).ConfigureAwait(false);
            if (reply.Type == RepAck) break;
            if (reply.Type == RepMetaContext)
            {
                if (reply.Data.Length < 5) throw Error(NbdErrorKind.Protocol, "short NBD_REP_META_CONTEXT reply");
                uint id = BinaryPrimitives.ReadUInt32BigEndian(reply.Data);
                contexts[Encoding.UTF8.GetString(reply.Data.AsSpan(4))] = id;
                continue;
            }
            throw OptionError(OptSetMetaContext, reply);
        }

        // Servers silently leave out contexts they do not know (qemu, nbdkit): check every one came back.
        var missing = options.MetaContexts.Where(c => !contexts.ContainsKey(c)).ToList();
        if (missing.Count == 0) return;
        string offered = await TryListMetaContextsAsync(ct).ConfigureAwait(false);
        string which = string.Join(", ", missing.Select(m => $"'{m}'"));
        throw Error(NbdErrorKind.UnsupportedContext,
            $"the server does not provide meta context {which} for this export (it offers: {offered})");
    }

    /// <summary>Best effort, for the error message: every context the server offers for the export.</summary>
    private async Task<string> TryListMetaContextsAsync(CancellationToken ct)
    {
        try
        {
            await SendOptionAsync(OptListMetaContext, EncodeMetaContextQuery(uri.ExportName, []), ct).ConfigureAwait(false);
            var names = new List<string>();
            while (true)
            {
                var reply = await ReadOptionReplyAsync(OptListMetaContext, ct).ConfigureAwait(false);
                if (reply.Type == RepMetaContext && reply.Data.Length >= 4) names.Add(Encoding.UTF8.GetString(reply.Data.AsSpan(4)));
                else if (reply.Type == RepAck) return names.Count == 0 ? "none" : string.Join(", ", names);
                else return "unknown";
            }
        }
        catch (Exception e) when (e is IOException or NbdException)
        {
            return "unknown";
        }
    }

    private async Task<(long Size, NbdTransmissionFlags Flags, NbdBlockSizes Sizes)> GoAsync(CancellationToken ct)
    {
        byte[] name = Encoding.UTF8.GetBytes(uri.ExportName);
        byte[] data = new byte[4 + name.Length + 2 + 2];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(4 + name.Length), 1);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6 + name.Length), InfoBlockSize);
        await SendOptionAsync(OptGo, data, ct).ConfigureAwait(false);

        long size = -1;
        var flags = NbdTransmissionFlags.None;
        NbdBlockSizes? sizes = null;
        while (true)
        {
            var reply = await ReadOptionReplyAsync(OptGo, ct).ConfigureAwait(false);
            if (reply.Type == RepAck) break;
            if (reply.Type == RepInfo)
            {
                if (reply.Data.Length < 2) throw Error(NbdErrorKind.Protocol, "short NBD_REP_INFO reply");
                ushort info = BinaryPrimitives.ReadUInt16BigEndian(reply.Data);
                if (info == InfoExport)
                {
                    if (reply.Data.Length != 12) throw Error(NbdErrorKind.Protocol, $"NBD_INFO_EXPORT of {reply.Data.Length} bytes, expected 12");
                    (size, flags) = ParseExportInfo(reply.Data.AsSpan(2));
                }
                else if (info == InfoBlockSize)
                {
                    if (reply.Data.Length != 14) throw Error(NbdErrorKind.Protocol, $"NBD_INFO_BLOCK_SIZE of {reply.Data.Length} bytes, expected 14");
                    sizes = ParseBlockSizes(reply.Data.AsSpan(2));
                }
                continue; // other NBD_INFO_* types are ignored, as the spec requires
            }
            if (reply.Type == RepErrUnsup)
                return await ExportNameAsync(name, ct).ConfigureAwait(false); // a pre-GO server (qemu < 2.10)
            throw OptionError(OptGo, reply);
        }
        if (size < 0) throw Error(NbdErrorKind.Protocol, "NBD_OPT_GO succeeded without NBD_INFO_EXPORT");
        return (size, flags, sizes ?? DefaultBlockSizes());
    }

    /// <summary>NBD_OPT_EXPORT_NAME: no error path — an unknown export makes the server close the connection.</summary>
    private async Task<(long, NbdTransmissionFlags, NbdBlockSizes)> ExportNameAsync(byte[] name, CancellationToken ct)
    {
        await SendOptionAsync(OptExportName, name, ct).ConfigureAwait(false);
        int length = _noZeroes ? 10 : 10 + 124;
        byte[] reply = new byte[length];
        try
        {
            await input.ReadExactlyAsync(reply, ct).ConfigureAwait(false);
        }
        catch (EndOfStreamException e)
        {
            throw Error(NbdErrorKind.UnknownExport, "the server closed the connection after NBD_OPT_EXPORT_NAME (no such export?)", e);
        }
        var (size, flags) = ParseExportInfo(reply);
        return (size, flags, DefaultBlockSizes());
    }

    private (long, NbdTransmissionFlags) ParseExportInfo(ReadOnlySpan<byte> data)
    {
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(data);
        if (size > long.MaxValue) throw Error(NbdErrorKind.Protocol, $"export size {size} out of range");
        return ((long)size, (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(data[8..]));
    }

    private NbdBlockSizes ParseBlockSizes(ReadOnlySpan<byte> data)
    {
        uint min = BinaryPrimitives.ReadUInt32BigEndian(data);
        uint preferred = BinaryPrimitives.ReadUInt32BigEndian(data[4..]);
        uint max = BinaryPrimitives.ReadUInt32BigEndian(data[8..]);
        // Spec: minimum is a power of two of at most 64 KiB, preferred a power of two >= minimum,
        // maximum a multiple of minimum (0xffffffff = no limit beyond the default).
        if (min == 0 || min > 65536 || !uint.IsPow2(min) || preferred < min || !uint.IsPow2(preferred) || max < min)
            throw Error(NbdErrorKind.Protocol, $"invalid NBD_INFO_BLOCK_SIZE minimum {min}, preferred {preferred}, maximum {max}");
        int maxPayload = (int)Math.Min(max, (uint)int.MaxValue);
        return new NbdBlockSizes((int)min, (int)Math.Min(preferred, (uint)int.MaxValue), maxPayload);
    }

    private static NbdBlockSizes DefaultBlockSizes() => new(1, 4096, DefaultMaxPayload);

    internal static byte[] EncodeMetaContextQuery(string export, IReadOnlyList<string> queries)
    {
        byte[] name = Encoding.UTF8.GetBytes(export);
        var encoded = queries.Select(Encoding.UTF8.GetBytes).ToList();
        byte[] data = new byte[4 + name.Length + 4 + encoded.Sum(q => 4 + q.Length)];
        var span = data.AsSpan();
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)name.Length);
        name.CopyTo(span[4..]);
        span = span[(4 + name.Length)..];
        BinaryPrimitives.WriteUInt32BigEndian(span, (uint)encoded.Count);
        span = span[4..];
        foreach (byte[] q in encoded)
        {
            BinaryPrimitives.WriteUInt32BigEndian(span, (uint)q.Length);
            q.CopyTo(span[4..]);
            span = span[(4 + q.Length)..];
        }
        return data;
    }

    private readonly record struct OptionReply(uint Type, byte[] Data);

    private async Task<OptionReply> OptionAsync(uint option, byte[] data, CancellationToken ct)
    {
        await SendOptionAsync(option, data, ct).ConfigureAwait(false);
        return await ReadOptionReplyAsync(option, ct).ConfigureAwait(false);
    }

    private async Task SendOptionAsync(uint option, byte[] data, CancellationToken ct)
    {
        byte[] message = new byte[OptionHeaderSize + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(message, IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(message.AsSpan(12), (uint)data.Length);
        data.CopyTo(message, OptionHeaderSize);
        await output.WriteAsync(message, ct).ConfigureAwait(false);
    }

    private async Task<OptionReply> ReadOptionReplyAsync(uint option, CancellationToken ct)
    {
        string what = $"reply to {OptionName(option)}";
        await ReadExactlyAsync(_header.AsMemory(0, OptionReplyHeaderSize), what, ct).ConfigureAwait(false);
        ulong magic = BinaryPrimitives.ReadUInt64BigEndian(_header);
        uint echoed = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(8));
        uint type = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(12));
        uint length = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(16));
        if (magic != OptionReplyMagic) throw Error(NbdErrorKind.Protocol, $"bad option reply magic 0x{magic:x16} in {what}");
        if (echoed != option) throw Error(NbdErrorKind.Protocol, $"{what} names {OptionName(echoed)}");
        if (length > MaxOptionReplyLength) throw Error(NbdErrorKind.Protocol, $"{what} of {length} bytes is too long");
        byte[] data = new byte[length];
        await ReadExactlyAsync(data, what, ct).ConfigureAwait(false);
        return new OptionReply(type, data);
    }

    private async Task ReadExactlyAsync(Memory<byte> buffer, string what, CancellationToken ct)
    {
        try
        {
            await input.ReadExactlyAsync(buffer, ct).ConfigureAwait(false);
        }
        catch (EndOfStreamException e)
        {
            throw Error(NbdErrorKind.Transport, $"the server closed the connection during the handshake ({what})", e);
        }
    }

    private NbdException OptionError(uint option, OptionReply reply)
    {
        if ((reply.Type & RepFlagError) == 0)
            return Error(NbdErrorKind.Protocol, $"unexpected reply type {reply.Type} to {OptionName(option)}");
        string message = reply.Data.Length > 0 && reply.Data.Length <= MaxStringLength ? Encoding.UTF8.GetString(reply.Data) : "";
        string detail = $"{OptionErrorName(reply.Type)}{(message.Length > 0 ? $": {message}" : "")}";
        return reply.Type switch
        {
            RepErrUnknown => Error(NbdErrorKind.UnknownExport, $"the server has no such export ({detail})"),
            RepErrTlsReqd => Error(NbdErrorKind.Unsupported, $"the server requires TLS, which this client does not support ({detail})"),
            RepErrShutdown => Error(NbdErrorKind.Transport, $"the server is shutting down ({detail})"),
            RepErrUnsup or RepErrPolicy or RepErrPlatform =>
                Error(NbdErrorKind.Unsupported, $"the server refused {OptionName(option)} ({detail})"),
            _ => Error(NbdErrorKind.Protocol, $"{OptionName(option)} failed ({detail})"),
        };
    }
}
