using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

/// <summary>
/// A Linux system call failed. Carries the errno, the operation (the C call, e.g. <c>open</c> or
/// <c>ioctl(BLKGETSIZE64)</c>) and the path involved when there is one. The message reads like
/// <c>open '/dev/x': Permission denied (EACCES)</c>.
/// </summary>
public sealed class NativeIoException : IOException
{
    /// <summary>Creates the exception for <paramref name="errno"/> raised by <paramref name="operation"/> on <paramref name="path"/>.</summary>
    public NativeIoException(int errno, string operation, string? path)
        : base(FormatMessage(errno, operation, path))
    {
        Errno = errno;
        Operation = operation;
        Path = path;

        // Same convention as the runtime's own Unix IOExceptions: HResult is the raw errno.
        HResult = errno;
    }

    /// <summary>The Linux errno value (e.g. 13 for EACCES).</summary>
    public int Errno { get; }

    /// <summary>
    /// The failed call, e.g. <c>open</c>, <c>fsync</c>, <c>ioctl(BLKGETSIZE64)</c>. For link(2),
    /// which involves two paths, it also names the source: <c>link '/a' to</c>, with <see cref="Path"/> the new name.
    /// </summary>
    public string Operation { get; }

    /// <summary>The path involved, or null when only a handle was available.</summary>
    public string? Path { get; }

    private static string FormatMessage(int errno, string operation, string? path)
    {
        // strerror(3) via the runtime, plus the symbolic name because that is what people grep for.
        string text = Marshal.GetPInvokeErrorMessage(errno);
        // The symbolic table is Linux numbering; the guard keeps the exception itself usable
        // (constructible, catchable) from platform-neutral code.
        string name = (OperatingSystem.IsLinux() ? Interop.Errno.Name(errno) : null) ?? $"errno {errno}";
        return path is null
            ? $"{operation}: {text} ({name})"
            : $"{operation} '{path}': {text} ({name})";
    }
}
