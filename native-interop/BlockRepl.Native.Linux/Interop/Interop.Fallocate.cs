using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    /// <summary>FALLOC_FL_KEEP_SIZE (linux/falloc.h): do not change i_size.</summary>
    internal const int FALLOC_FL_KEEP_SIZE = 0x01;

    /// <summary>FALLOC_FL_PUNCH_HOLE: deallocate the range; the kernel requires KEEP_SIZE with it.</summary>
    internal const int FALLOC_FL_PUNCH_HOLE = 0x02;

    [LibraryImport(Libc, EntryPoint = "fallocate", SetLastError = true)]
    internal static partial int Fallocate(SafeFileHandle fd, int mode, long offset, long length);
}
