namespace BlockRepl.Qemu;

/// <summary>What kind of failure a <see cref="QmpException"/> reports.</summary>
public enum QmpErrorKind
{
    /// <summary>Connecting failed, or the connection broke (QEMU exited, socket closed, I/O error).</summary>
    Transport,
    /// <summary>QEMU sent something that is not QMP (no greeting, a line that is not a JSON object); the connection was dropped.</summary>
    Protocol,
    /// <summary>QEMU answered the command with an <c>error</c> reply; <see cref="QmpException.Class"/> and <see cref="QmpException.Description"/> say why. The connection stays usable.</summary>
    CommandFailed,
    /// <summary>No reply (or event) within the time limit. The command may still run inside QEMU.</summary>
    Timeout,
}

/// <summary>
/// A QMP failure. The message is one line: command, socket, what failed and, for an error reply, QEMU's class
/// and description, e.g. <c>QMP 'transaction' on /run/x/qmp.sock failed: GenericError: Enabled bitmap 'cp1' incompatible with readonly export</c>.
/// </summary>
public sealed class QmpException(string message, QmpErrorKind kind, string socketPath, string? command,
    string? errorClass = null, string? description = null, Exception? inner = null)
    : Exception(message, inner)
{
    public QmpErrorKind Kind { get; } = kind;

    /// <summary>The QMP socket path.</summary>
    public string SocketPath { get; } = socketPath;

    /// <summary>The command that failed, or null when the failure is not tied to one (connect, greeting, event wait).</summary>
    public string? Command { get; } = command;

    /// <summary>QEMU's error class (<c>GenericError</c>, <c>CommandNotFound</c>, <c>DeviceNotFound</c>, …) for <see cref="QmpErrorKind.CommandFailed"/>.</summary>
    public string? Class { get; } = errorClass;

    /// <summary>QEMU's error text (<c>desc</c>) for <see cref="QmpErrorKind.CommandFailed"/>.</summary>
    public string? Description { get; } = description;

    internal static QmpException Create(QmpErrorKind kind, string socketPath, string? command, string what, Exception? inner = null) =>
        new(OneLine(command is null ? $"QMP on {socketPath}: {what}" : $"QMP '{command}' on {socketPath}: {what}"),
            kind, socketPath, command, inner: inner);

    internal static QmpException CommandError(string socketPath, string command, string errorClass, string description) =>
        new(OneLine($"QMP '{command}' on {socketPath} failed: {errorClass}: {description}"),
            QmpErrorKind.CommandFailed, socketPath, command, errorClass, description);

    internal static string OneLine(string text) =>
        text.Contains('\n') || text.Contains('\r') ? string.Join(' ', text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)) : text;
}
