using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    /// <summary>BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes (linux/fs.h).</summary>
    internal const uint BLKGETSIZE64 = 0x80081272;

    /// <summary>BLKSSZGET = _IO(0x12, 104): logical sector size as int (linux/fs.h).</summary>
    internal const uint BLKSSZGET = 0x1268;

    /// <summary>FICLONE = _IOW(0x94, 9, int): share all of the source file's extents (reflink; linux/fs.h).</summary>
    internal const uint FICLONE = 0x40049409;

    /// <summary>FIFREEZE = _IOWR('X', 119, int): freeze the filesystem of the file (linux/fs.h).</summary>
    internal const uint FIFREEZE = 0xC0045877;

    /// <summary>FITHAW = _IOWR('X', 120, int): thaw it.</summary>
    internal const uint FITHAW = 0xC0045878;

    // ioctl is variadic; on the supported SysV x86_64 and Linux AAPCS64 ABIs a variadic pointer
    // argument is passed exactly like a fixed one, so typed prototypes are safe. request is
    // unsigned long in glibc, hence nuint.
    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, out ulong value);

    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, out int value);

    // FICLONE takes the source descriptor by value (the kernel reads the argument as an int fd), FIFREEZE/FITHAW
    // ignore it: a SafeFileHandle marshals as its descriptor in a full register, with the reference counted.
    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, SafeFileHandle argument);

    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int Ioctl(SafeFileHandle fd, nuint request, nint argument);
}
