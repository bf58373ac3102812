using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    // whence values (unistd.h / linux/fs.h); SEEK_DATA/SEEK_HOLE exist since Linux 3.1.
    internal const int SEEK_SET = 0;
    internal const int SEEK_CUR = 1;
    internal const int SEEK_END = 2;
    internal const int SEEK_DATA = 3;
    internal const int SEEK_HOLE = 4;

    // off_t is 64-bit on the supported LP64 ABIs, so plain lseek is lseek64.
    [LibraryImport(Libc, EntryPoint = "lseek", SetLastError = true)]
    internal static partial long LSeek(SafeFileHandle fd, long offset, int whence);
}
