using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    // statx(2) instead of stat(2): struct stat differs between x86_64 and aarch64 (field order,
    // st_nlink width, padding), struct statx is one fixed 256-byte layout on every architecture.
    // glibc has exported statx since 2.28.

    /// <summary>AT_FDCWD: resolve relative paths against the current directory (fcntl.h).</summary>
    internal const int AT_FDCWD = -100;

    /// <summary>AT_SYMLINK_NOFOLLOW (0x100) is deliberately not passed: callers want the target.</summary>
    internal const int AT_STATX_SYNC_AS_STAT = 0x0000;

    internal const uint STATX_TYPE = 0x0001;
    internal const uint STATX_MODE = 0x0002;
    internal const uint STATX_MTIME = 0x0040;
    internal const uint STATX_INO = 0x0100;
    internal const uint STATX_SIZE = 0x0200;

    /// <summary>STATX_BASIC_STATS: everything struct stat carries.</summary>
    internal const uint STATX_BASIC_STATS = 0x07ff;

    /// <summary>File type bits of st_mode (sys/stat.h, identical on all Linux ABIs).</summary>
    internal const uint S_IFMT = 0xF000;
    internal const uint S_IFDIR = 0x4000;
    internal const uint S_IFCHR = 0x2000;
    internal const uint S_IFBLK = 0x6000;
    internal const uint S_IFREG = 0x8000;

    /// <summary>struct statx_timestamp (linux/stat.h): __s64 tv_sec; __u32 tv_nsec; __s32 __reserved.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct StatxTimestamp
    {
        public long Seconds;
        public uint Nanoseconds;
        private readonly int _reserved;
    }

    /// <summary>
    /// struct statx (linux/stat.h). Offsets are part of the kernel ABI and pinned by tests; the
    /// tail (mnt_id, dio alignment, subvol, atomic write units, spare) is covered by Size = 256 so
    /// the kernel's full copy never writes past this buffer.
    /// </summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    internal struct StatxBuffer
    {
        [FieldOffset(0)] public uint Mask;
        [FieldOffset(4)] public uint BlockSize;
        [FieldOffset(8)] public ulong Attributes;
        [FieldOffset(16)] public uint NLink;
        [FieldOffset(20)] public uint Uid;
        [FieldOffset(24)] public uint Gid;
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(40)] public ulong Size;
        [FieldOffset(48)] public ulong Blocks;
        [FieldOffset(56)] public ulong AttributesMask;
        [FieldOffset(64)] public StatxTimestamp ATime;
        [FieldOffset(80)] public StatxTimestamp BTime;
        [FieldOffset(96)] public StatxTimestamp CTime;
        [FieldOffset(112)] public StatxTimestamp MTime;
        [FieldOffset(128)] public uint RDevMajor;
        [FieldOffset(132)] public uint RDevMinor;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;
    }

    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, StatxBuffer* buffer);

    /// <summary>
    /// glibc's gnu_dev_makedev encoding (sys/sysmacros.h), so values equal st_dev/st_rdev from
    /// stat(2) and what `stat -c %d` prints: 12-bit major low part at bit 8, 20-bit minor split.
    /// </summary>
    internal static ulong MakeDev(uint major, uint minor) =>
        ((ulong)(major & 0x00000fffu) << 8)
        | ((ulong)(major & 0xfffff000u) << 32)
        | (minor & 0x000000ffu)
        | ((ulong)(minor & 0xffffff00u) << 12);
}
