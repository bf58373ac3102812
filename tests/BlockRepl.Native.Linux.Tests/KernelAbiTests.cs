using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BlockRepl.Native.Linux;

namespace BlockRepl.Native.Linux.Tests;

/// <summary>Pins the kernel constants and struct layouts the interop relies on.</summary>
public class KernelAbiTests
{
    // asm-generic/ioctl.h encoding: dir(2 bits) << 30 | size(14) << 16 | type(8) << 8 | nr(8).
    private static uint Ioc(uint dir, uint type, uint nr, uint size) => (dir << 30) | (size << 16) | (type << 8) | nr;

    [Fact]
    public void BlockIoctlNumbersMatchTheirLinuxFsHDefinitions()
    {
        const uint read = 2;
        Assert.Equal(Interop.BLKGETSIZE64, Ioc(read, 0x12, 114, (uint)sizeof(ulong)));
        Assert.Equal(0x80081272u, Interop.BLKGETSIZE64);
        Assert.Equal(Interop.BLKSSZGET, Ioc(0, 0x12, 104, 0));
        Assert.Equal(0x1268u, Interop.BLKSSZGET);
    }

    [Fact]
    public void CloneAndFreezeIoctlNumbersMatchTheirLinuxFsHDefinitions()
    {
        const uint write = 1, readWrite = 3;
        Assert.Equal(Interop.FICLONE, Ioc(write, 0x94, 9, sizeof(int)));
        Assert.Equal(0x40049409u, Interop.FICLONE);
        Assert.Equal(Interop.FIFREEZE, Ioc(readWrite, 'X', 119, sizeof(int)));
        Assert.Equal(Interop.FITHAW, Ioc(readWrite, 'X', 120, sizeof(int)));
    }

    [Fact]
    public void SeekFallocateAndFadviseConstantsMatchTheKernel()
    {
        Assert.Equal(3, Interop.SEEK_DATA);
        Assert.Equal(4, Interop.SEEK_HOLE);
        Assert.Equal(1, Interop.FALLOC_FL_KEEP_SIZE);
        Assert.Equal(2, Interop.FALLOC_FL_PUNCH_HOLE);
        Assert.Equal(-100, Interop.AT_FDCWD);

        Assert.Equal(0, (int)FileAdvice.Normal);
        Assert.Equal(1, (int)FileAdvice.Random);
        Assert.Equal(2, (int)FileAdvice.Sequential);
        Assert.Equal(3, (int)FileAdvice.WillNeed);
        Assert.Equal(4, (int)FileAdvice.DontNeed);
        Assert.Equal(5, (int)FileAdvice.NoReuse);
    }

    [Fact]
    public void OpenFlagsMatchTheRunningArchitecture()
    {
        Assert.Equal(0x80000, Interop.OpenFlags.O_CLOEXEC);
        Assert.Equal(2, Interop.OpenFlags.O_RDWR);
        switch (RuntimeInformation.ProcessArchitecture)
        {
            case Architecture.X64:
                Assert.Equal(0x4000, Interop.OpenFlags.O_DIRECT);      // 040000
                Assert.Equal(0x10000, Interop.OpenFlags.O_DIRECTORY);  // 0200000
                break;
            case Architecture.Arm64:
                Assert.Equal(0x10000, Interop.OpenFlags.O_DIRECT);
                Assert.Equal(0x4000, Interop.OpenFlags.O_DIRECTORY);
                break;
            default:
                Assert.Throws<PlatformNotSupportedException>(() => Interop.OpenFlags.O_DIRECT);
                break;
        }
    }

    [Fact]
    public void ErrnoValuesAreTheAsmGenericOnes()
    {
        Assert.Equal(2, Interop.Errno.ENOENT);
        Assert.Equal(6, Interop.Errno.ENXIO);
        Assert.Equal(13, Interop.Errno.EACCES);
        Assert.Equal(17, Interop.Errno.EEXIST);
        Assert.Equal(19, Interop.Errno.ENODEV);
        Assert.Equal(20, Interop.Errno.ENOTDIR);
        Assert.Equal(22, Interop.Errno.EINVAL);
        Assert.Equal(25, Interop.Errno.ENOTTY);
        Assert.Equal(40, Interop.Errno.ELOOP);
        Assert.Equal(95, Interop.Errno.EOPNOTSUPP);
    }

    [Fact]
    public void StatxBufferHasTheKernelLayout()
    {
        Assert.Equal(256, Unsafe.SizeOf<Interop.StatxBuffer>());
        Assert.Equal(256, Marshal.SizeOf<Interop.StatxBuffer>());
        Assert.Equal(16, Unsafe.SizeOf<Interop.StatxTimestamp>());

        (string Field, int Offset)[] expected =
        [
            ("Mask", 0), ("BlockSize", 4), ("Attributes", 8), ("NLink", 16), ("Uid", 20), ("Gid", 24),
            ("Mode", 28), ("Ino", 32), ("Size", 40), ("Blocks", 48), ("AttributesMask", 56),
            ("ATime", 64), ("BTime", 80), ("CTime", 96), ("MTime", 112),
            ("RDevMajor", 128), ("RDevMinor", 132), ("DevMajor", 136), ("DevMinor", 140),
        ];
        foreach ((string field, int offset) in expected)
        {
            Assert.True(
                offset == (int)Marshal.OffsetOf<Interop.StatxBuffer>(field),
                $"statx.{field}: expected offset {offset}, got {Marshal.OffsetOf<Interop.StatxBuffer>(field)}");
        }
    }

    [Fact]
    public void MakeDevUsesTheGlibcEncoding()
    {
        Assert.Equal(0x103ul, Interop.MakeDev(1, 3));                 // /dev/null
        Assert.Equal(0x700ul, Interop.MakeDev(7, 0));                 // /dev/loop0
        Assert.Equal(0x0000_1000_0000_0000ul, Interop.MakeDev(0x1000, 0));
        Assert.Equal(0x0000_0000_0010_0000ul, Interop.MakeDev(0, 0x100));
    }
}
