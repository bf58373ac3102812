using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    /// <summary>
    /// errno values used by this assembly. Linux uses the asm-generic numbering on x86_64 and
    /// aarch64 alike (asm-generic/errno-base.h, asm-generic/errno.h).
    /// </summary>
    internal static class Errno
    {
        internal const int EPERM = 1;
        internal const int ENOENT = 2;
        internal const int EINTR = 4;
        internal const int EIO = 5;
        internal const int ENXIO = 6;
        internal const int EBADF = 9;
        internal const int EAGAIN = 11;
        internal const int ENOMEM = 12;
        internal const int EACCES = 13;
        internal const int EBUSY = 16;
        internal const int EEXIST = 17;
        internal const int EXDEV = 18;
        internal const int ENODEV = 19;
        internal const int ENOTDIR = 20;
        internal const int EISDIR = 21;
        internal const int EINVAL = 22;
        internal const int EMFILE = 24;
        internal const int ENOTTY = 25;
        internal const int EFBIG = 27;
        internal const int ENOSPC = 28;
        internal const int ESPIPE = 29;
        internal const int EROFS = 30;
        internal const int EMLINK = 31;
        internal const int ENAMETOOLONG = 36;
        internal const int ENOSYS = 38;
        internal const int ELOOP = 40;
        internal const int EOPNOTSUPP = 95;
        internal const int EDQUOT = 122;

        /// <summary>Symbolic name for messages ("EACCES"); strerror text alone is ambiguous to grep for.</summary>
        internal static string? Name(int errno) => errno switch
        {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            EINTR => "EINTR",
            EIO => "EIO",
            ENXIO => "ENXIO",
            EBADF => "EBADF",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            EXDEV => "EXDEV",
            ENODEV => "ENODEV",
            ENOTDIR => "ENOTDIR",
            EISDIR => "EISDIR",
            EINVAL => "EINVAL",
            EMFILE => "EMFILE",
            ENOTTY => "ENOTTY",
            EFBIG => "EFBIG",
            ENOSPC => "ENOSPC",
            ESPIPE => "ESPIPE",
            EROFS => "EROFS",
            EMLINK => "EMLINK",
            ENAMETOOLONG => "ENAMETOOLONG",
            ENOSYS => "ENOSYS",
            ELOOP => "ELOOP",
            EOPNOTSUPP => "EOPNOTSUPP",
            EDQUOT => "EDQUOT",
            _ => null,
        };
    }

    /// <summary>
    /// The one place where the C convention (result -1, cause in errno) is interpreted. Returns
    /// true on success. When the call failed with one of <paramref name="tolerated"/> (errnos the
    /// caller turns into a documented non-exceptional outcome) returns false with the errno;
    /// any other failure throws <see cref="NativeIoException"/> carrying operation and path,
    /// so a raw -1 never leaves this assembly.
    /// </summary>
    /// <remarks>Must be called right after the P/Invoke: the errno is read from the runtime's
    /// per-thread copy saved by <c>SetLastError = true</c>.</remarks>
    internal static bool TryCheck(long result, string operation, string? path, ReadOnlySpan<int> tolerated, out int errno)
    {
        if (result != -1)
        {
            errno = 0;
            return true;
        }

        errno = Marshal.GetLastPInvokeError();
        if (tolerated.Contains(errno))
        {
            return false;
        }

        ThrowNativeIo(errno, operation, path);
        return false;
    }

    /// <summary>Throwing form of <see cref="TryCheck"/> with nothing tolerated; returns the result.</summary>
    internal static long Check(long result, string operation, string? path)
    {
        TryCheck(result, operation, path, [], out _);
        return result;
    }

    /// <summary>
    /// For APIs that return the error number instead of setting errno (posix_fadvise): park the
    /// code where <see cref="TryCheck"/> looks so every failure still takes the same path.
    /// </summary>
    internal static void CheckReturnedErrno(int returnedErrno, string operation, string? path)
    {
        if (returnedErrno == 0)
        {
            return;
        }

        Marshal.SetLastPInvokeError(returnedErrno);
        Check(-1, operation, path);
    }

    /// <summary>True when a -1 result was caused by EINTR, i.e. the call should simply be retried.</summary>
    internal static bool Interrupted(long result) => result == -1 && Marshal.GetLastPInvokeError() == Errno.EINTR;

    [DoesNotReturn]
    private static void ThrowNativeIo(int errno, string operation, string? path) =>
        throw new NativeIoException(errno, operation, path);
}
