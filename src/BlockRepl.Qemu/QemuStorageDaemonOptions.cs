namespace BlockRepl.Qemu;

/// <summary>How <see cref="QemuStorageDaemon.StartAsync"/> opens one image.</summary>
public sealed class QemuStorageDaemonOptions
{
    /// <summary>The image file (made absolute).</summary>
    public required string ImagePath { get; init; }

    /// <summary><c>qcow2</c> (needed for persistent bitmaps) or <c>raw</c>.</summary>
    public string Format { get; init; } = "qcow2";

    /// <summary>The format node's name; the protocol (file) node is <c>NodeName-file</c>.</summary>
    public string NodeName { get; init; } = "blockrepl0";

    /// <summary>Directory for <c>qmp.sock</c> and <c>nbd.sock</c> (a unix socket path must stay under 108 bytes).</summary>
    public required string RuntimeDirectory { get; init; }

    /// <summary>
    /// Open the image read-write (default). Adding or removing persistent bitmaps needs a writable node; a
    /// read-only node also takes no write lock, so it can share the image with a writer.
    /// </summary>
    public bool Writable { get; init; } = true;

    /// <summary>
    /// Also open a second QMP monitor on <c>qmp2.sock</c> (<see cref="QemuStorageDaemon.SecondQmpSocketPath"/>): a
    /// monitor serves one client at a time, and the daemon's own client holds the first, so another program (a
    /// backup tool driving checkpoints while tests play the VM) needs its own, as a real VM would give it.
    /// </summary>
    public bool SecondMonitor { get; init; }

    /// <summary>Limit for the daemon to come up (QMP greeting) and for each QMP call. Default 30 s.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>The program, found on PATH unless a path is given.</summary>
    public string Program { get; init; } = "qemu-storage-daemon";
}
