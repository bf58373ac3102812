using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    /// <summary>BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes (linux/fs.h).</summary>
    internal const uint BLKGETSIZE64 = 0x80081272;

    /// <summary>BLKSSZGET = _IO(0x12, 104): logical sector size as int (linux/fs.h).</summary>
    internal const uint BLKSSZGET = 0x1268;

    // ioctl is variadic; on the supported SysV x86_64 and Linux AAPCS64 ABIs a variadic pointer
    // argument is passed exactly like a fixed one, so typed prototypes are safe. request is
    // unsigned long in glibc, hence nuint.
    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, out ulong value);

    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, out int value);
}
