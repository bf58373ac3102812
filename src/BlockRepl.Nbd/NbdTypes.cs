namespace BlockRepl.Nbd;

/// <summary>Transmission flags of an export (NBD_FLAG_*, from NBD_INFO_EXPORT). Unknown bits are kept as-is.</summary>
[Flags]
public enum NbdTransmissionFlags : ushort
{
    None = 0,
    HasFlags = 1 << 0,
    ReadOnly = 1 << 1,
    SendFlush = 1 << 2,
    SendFua = 1 << 3,
    Rotational = 1 << 4,
    SendTrim = 1 << 5,
    SendWriteZeroes = 1 << 6,
    SendDf = 1 << 7,
    CanMultiConn = 1 << 8,
    SendResize = 1 << 9,
    SendCache = 1 << 10,
    SendFastZero = 1 << 11,
}

/// <summary>
/// The export's block size constraints (NBD_INFO_BLOCK_SIZE, or the protocol defaults 1 / 4096 / 32 MiB).
/// Requests are aligned to <see cref="Minimum"/> and at most <see cref="MaximumPayload"/> long.
/// </summary>
public readonly record struct NbdBlockSizes(int Minimum, int Preferred, int MaximumPayload);

/// <summary>One block-status extent: <see cref="Flags"/> hold for [<see cref="Offset"/>, <see cref="Offset"/> + <see cref="Length"/>).</summary>
public readonly record struct NbdExtent(long Offset, long Length, uint Flags)
{
    public long End => Offset + Length;
}

/// <summary>Well-known meta contexts and their flag bits.</summary>
public static class NbdMetaContexts
{
    /// <summary><c>base:allocation</c>: flag bits <see cref="StateHole"/> and <see cref="StateZero"/>.</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>Prefix of QEMU's dirty-bitmap contexts, <c>qemu:dirty-bitmap:NAME</c>; flag bit <see cref="StateDirty"/>.</summary>
    public const string QemuDirtyBitmapPrefix = "qemu:dirty-bitmap:";

    /// <summary>base:allocation: the range is a hole (not allocated). It says nothing about the contents: only <see cref="StateZero"/> means it reads as zeros.</summary>
    public const uint StateHole = 1;

    /// <summary>base:allocation: the range reads as zeros.</summary>
    public const uint StateZero = 2;

    /// <summary>qemu:dirty-bitmap:NAME: the range is dirty (written since the bitmap was created or cleared).</summary>
    public const uint StateDirty = 1;

    public static string QemuDirtyBitmap(string bitmapName) => QemuDirtyBitmapPrefix + bitmapName;
}

/// <summary>Options for <see cref="NbdClient.ConnectAsync(NbdUri, NbdConnectOptions?, CancellationToken)"/>.</summary>
public sealed record NbdConnectOptions
{
    /// <summary>
    /// Meta contexts to select (NBD_OPT_SET_META_CONTEXT), e.g. <c>base:allocation</c>, <c>qemu:dirty-bitmap:b1</c>.
    /// Connecting fails with <see cref="NbdErrorKind.UnsupportedContext"/> when the server does not select every one.
    /// </summary>
    public IReadOnlyList<string> MetaContexts { get; init; } = [];

    /// <summary>
    /// Negotiate structured replies (default). When false, or when the server refuses them, reads use simple
    /// replies and no meta context can be selected.
    /// </summary>
    public bool StructuredReplies { get; init; } = true;

    /// <summary>Upper bound for one READ request, below the server's maximum payload (default and at most 32 MiB).</summary>
    public int MaxReadRequest { get; init; } = NbdProtocol.DefaultMaxPayload;

    /// <summary>Time allowed for connecting plus the handshake.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
