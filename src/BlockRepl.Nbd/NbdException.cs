namespace BlockRepl.Nbd;

/// <summary>What kind of failure an <see cref="NbdException"/> reports.</summary>
public enum NbdErrorKind
{
    /// <summary>Connecting failed, or the connection broke (I/O error, server closed it).</summary>
    Transport,
    /// <summary>The server sent something the protocol does not allow; the connection was dropped.</summary>
    Protocol,
    /// <summary>The server has no export of the requested name (NBD_REP_ERR_UNKNOWN).</summary>
    UnknownExport,
    /// <summary>A requested meta context (e.g. <c>qemu:dirty-bitmap:NAME</c>) was not selected by the server.</summary>
    UnsupportedContext,
    /// <summary>The server lacks something this client needs (structured replies, newstyle, no TLS) or refused an option.</summary>
    Unsupported,
    /// <summary>The server answered a command (READ, BLOCK_STATUS) with an error; the connection stays usable.</summary>
    CommandFailed,
    /// <summary>The client was used wrongly (out-of-range offset, unknown context, after dispose).</summary>
    InvalidRequest,
}

/// <summary>
/// An NBD failure. The message is one line: server, export, what failed and, where the server sent one,
/// its own message.
/// </summary>
public sealed class NbdException(string message, NbdErrorKind kind, string server, string export, uint serverError = 0, Exception? inner = null)
    : Exception(message, inner)
{
    public NbdErrorKind Kind { get; } = kind;

    /// <summary>The server as a URI, e.g. <c>nbd+unix:///disk?socket=/run/x.sock</c>.</summary>
    public string Server { get; } = server;

    public string Export { get; } = export;

    /// <summary>The NBD error value (EIO = 5, EINVAL = 22, …) of a <see cref="NbdErrorKind.CommandFailed"/>, else 0.</summary>
    public uint ServerError { get; } = serverError;

    /// <summary>True when retrying on a new connection may succeed (transport failure, server-side EIO/ENOMEM/ESHUTDOWN).</summary>
    public bool IsTransient => Kind == NbdErrorKind.Transport
        || (Kind == NbdErrorKind.CommandFailed && ServerError is 5 or 12 or 108);

    internal static NbdException Create(NbdErrorKind kind, NbdUri uri, string what, uint serverError = 0, Exception? inner = null) =>
        new($"NBD {uri} (export '{uri.ExportName}'): {what}", kind, uri.ToString(), uri.ExportName, serverError, inner);
}
