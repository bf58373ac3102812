using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    /// <summary>
    /// open(2) flags. O_DIRECT and O_DIRECTORY are architecture specific: arm/arm64 swap them
    /// relative to asm-generic (arch/arm64/include/uapi/asm/fcntl.h), so they are chosen at run
    /// time rather than baked in as x86_64 constants.
    /// </summary>
    internal static class OpenFlags
    {
        internal const int O_RDONLY = 0x0000;
        internal const int O_WRONLY = 0x0001;
        internal const int O_RDWR = 0x0002;
        internal const int O_CLOEXEC = 0x80000;        // 02000000, same on x86_64 and aarch64

        internal const int O_DIRECT_X64 = 0x4000;       // 040000
        internal const int O_DIRECTORY_X64 = 0x10000;   // 0200000
        internal const int O_DIRECT_ARM64 = 0x10000;    // 0200000
        internal const int O_DIRECTORY_ARM64 = 0x4000;  // 040000

        internal static int O_DIRECT => RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => O_DIRECT_X64,
            Architecture.Arm64 => O_DIRECT_ARM64,
            var arch => throw Unsupported(arch),
        };

        internal static int O_DIRECTORY => RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => O_DIRECTORY_X64,
            Architecture.Arm64 => O_DIRECTORY_ARM64,
            var arch => throw Unsupported(arch),
        };

        private static PlatformNotSupportedException Unsupported(Architecture arch) =>
            new($"open(2) flag values are only pinned for x64 and arm64, not {arch}.");
    }

    // open is variadic only for the mode argument, which exists solely with O_CREAT/O_TMPFILE;
    // this assembly never creates files through open, so the two-argument form is exact.
    [LibraryImport(Libc, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags);
}
