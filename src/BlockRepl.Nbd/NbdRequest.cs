namespace BlockRepl.Nbd;

/// <summary>
/// One request in flight, keyed by its cookie until the reply's last chunk. Completion runs continuations
/// asynchronously so the reader loop never executes caller code.
/// </summary>
/// <remarks>
/// Cancellation must not let the reader loop write into a caller's buffer after the caller got control back:
/// while the loop writes (<see cref="TryBeginWrite"/> … <see cref="EndWrite"/>), a cancel is only recorded and
/// takes effect when the write ends; afterwards the loop discards the rest of the reply.
/// </remarks>
internal abstract class NbdRequest(ulong cookie, long offset, long length)
    : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
{
    private readonly Lock _gate = new();
    private bool _writing, _cancelPending, _abandoned;
    private CancellationToken _cancelToken;

    public ulong Cookie { get; } = cookie;
    public long Offset { get; } = offset;
    /// <summary>Request length; at most 2^31 (BLOCK_STATUS), so it fits the 32-bit wire field.</summary>
    public long Length { get; } = length;

    /// <summary>First server error (error chunk or simple reply error); the reply fails once DONE arrives.</summary>
    public uint Error { get; private set; }
    public string? ErrorMessage { get; private set; }

    public abstract string Describe();

    public void RecordError(uint error, string? message)
    {
        if (Error != 0) return;
        Error = error == 0 ? 22 : error; // an error chunk with value 0 is a server bug: treat it as EINVAL
        ErrorMessage = message;
    }

    public CancellationTokenRegistration RegisterCancellation(CancellationToken ct)
    {
        if (!ct.CanBeCanceled) return default;
        _cancelToken = ct;
        return ct.UnsafeRegister(static s => ((NbdRequest)s!).Cancel(), this);
    }

    private void Cancel()
    {
        lock (_gate)
        {
            if (Task.IsCompleted || _abandoned) return;
            if (_writing) { _cancelPending = true; return; }
            _abandoned = true;
            TrySetCanceled(_cancelToken);
        }
    }

    /// <summary>False once the caller has been released: the data must then be discarded.</summary>
    public bool TryBeginWrite()
    {
        lock (_gate)
        {
            if (_abandoned || Task.IsCompleted) return false;
            _writing = true;
            return true;
        }
    }

    public void EndWrite()
    {
        lock (_gate)
        {
            _writing = false;
            if (_cancelPending)
            {
                _abandoned = true;
                TrySetCanceled(_cancelToken);
            }
        }
    }
}

/// <summary>NBD_CMD_READ into the caller's memory; content chunks may come in any order.</summary>
internal sealed class ReadRequest(ulong cookie, long offset, Memory<byte> destination)
    : NbdRequest(cookie, offset, destination.Length)
{
    public Memory<byte> Destination { get; } = destination;

    /// <summary>Bytes covered by DATA and HOLE chunks (which never overlap).</summary>
    public long Covered { get; set; }

    public override string Describe() => $"READ at offset {Offset}, length {Length}";
}

/// <summary>NBD_CMD_BLOCK_STATUS; keeps the extents of one context, skips the other contexts' chunks.</summary>
internal sealed class BlockStatusRequest(ulong cookie, long offset, long length, string context, uint contextId)
    : NbdRequest(cookie, offset, length)
{
    public string Context { get; } = context;
    public uint ContextId { get; } = contextId;
    public List<NbdExtent> Extents { get; } = [];
    public bool GotChunk { get; set; }

    public override string Describe() => $"BLOCK_STATUS '{Context}' at offset {Offset}, length {Length}";
}
