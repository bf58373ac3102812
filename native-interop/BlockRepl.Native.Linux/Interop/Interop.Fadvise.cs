using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    // POSIX_FADV_* values 0..5 match FileAdvice (linux/fadvise.h; the s390x-only DONTNEED=6
    // variant does not apply to the supported architectures).

    /// <summary>
    /// posix_fadvise returns the error number instead of -1/errno (POSIX), so no SetLastError;
    /// the result goes through <see cref="CheckReturnedErrno"/>.
    /// </summary>
    [LibraryImport(Libc, EntryPoint = "posix_fadvise")]
    internal static partial int PosixFadvise(SafeFileHandle fd, long offset, long length, int advice);
}
