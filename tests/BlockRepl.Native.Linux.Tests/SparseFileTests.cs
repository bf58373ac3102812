using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux.Tests;

public class SparseFileTests
{
    private const int KiB = 1024;
    private const int MiB = 1024 * KiB;

    // Filesystems report data/holes in whole blocks; 4 KiB is the block size of ext4/xfs/btrfs
    // defaults and tmpfs pages, so 4 KiB-aligned 4 KiB writes give exact answers.
    private const int Block = 4 * KiB;

    private static SafeFileHandle CreateSparse(string path, long length, params long[] dataOffsets)
    {
        SafeFileHandle handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        RandomAccess.SetLength(handle, length);
        byte[] data = new byte[Block];
        Array.Fill(data, (byte)0xA5);
        foreach (long offset in dataOffsets)
        {
            RandomAccess.Write(handle, data, offset);
        }

        return handle;
    }

    [Fact]
    public void SeekDataAndSeekHoleFindExactlyTheWrittenRegions()
    {
        using var dir = new TempDirectory();
        using SafeFileHandle handle = CreateSparse(dir.Combine("sparse"), 8 * MiB, 1 * MiB, 5 * MiB);

        Assert.True(LinuxFile.SupportsSeekData(handle));

        Assert.Equal(1 * MiB, LinuxFile.SeekData(handle, 0));
        Assert.Equal(0, LinuxFile.SeekHole(handle, 0));
        Assert.Equal((1 * MiB) + Block, LinuxFile.SeekHole(handle, 1 * MiB));
        Assert.Equal(5 * MiB, LinuxFile.SeekData(handle, (1 * MiB) + Block));
        Assert.Equal((5 * MiB) + Block, LinuxFile.SeekHole(handle, 5 * MiB));

        // Offsets inside a data block stay put; the tail after the last data is one implicit hole.
        Assert.Equal((5 * MiB) + 100, LinuxFile.SeekData(handle, (5 * MiB) + 100));
        Assert.Equal(-1, LinuxFile.SeekData(handle, (5 * MiB) + Block));
        Assert.Equal(7 * MiB, LinuxFile.SeekHole(handle, 7 * MiB));
    }

    [Fact]
    public void SeekPastEndOfFileIsNoDataButAnErrorForHoles()
    {
        using var dir = new TempDirectory();
        using SafeFileHandle handle = CreateSparse(dir.Combine("sparse"), 2 * MiB, 0);

        Assert.Equal(-1, LinuxFile.SeekData(handle, 2 * MiB));
        Assert.Equal(-1, LinuxFile.SeekData(handle, 3 * MiB));

        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.SeekHole(handle, 2 * MiB));
        Assert.Equal(Interop.Errno.ENXIO, ex.Errno);
        Assert.Equal("lseek(SEEK_HOLE)", ex.Operation);
        Assert.Null(ex.Path);
    }

    [Fact]
    public void EndOfFileCountsAsAHole()
    {
        using var dir = new TempDirectory();
        using SafeFileHandle handle = CreateSparse(dir.Combine("dense"), 2 * Block, 0, Block);

        Assert.Equal(0, LinuxFile.SeekData(handle, 0));
        Assert.Equal(2 * Block, LinuxFile.SeekHole(handle, 0));
    }

    [Fact]
    public void EmptyFileSupportsSeekDataAndHasNoData()
    {
        using var dir = new TempDirectory();
        using SafeFileHandle handle = File.OpenHandle(dir.Combine("empty"), FileMode.CreateNew, FileAccess.ReadWrite);

        Assert.True(LinuxFile.SupportsSeekData(handle));
        Assert.Equal(-1, LinuxFile.SeekData(handle, 0));
    }

    [Fact]
    public void PunchHoleReadsBackAsZerosAndKeepsTheSize()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("punch");
        byte[] content = new byte[64 * KiB];
        Array.Fill(content, (byte)0xAB);
        File.WriteAllBytes(path, content);

        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        Assert.True(LinuxFile.TryPunchHole(handle, 16 * KiB, 16 * KiB));

        byte[] readBack = new byte[content.Length];
        Assert.Equal(readBack.Length, RandomAccess.Read(handle, readBack, 0));
        Assert.Equal(64 * KiB, RandomAccess.GetLength(handle));
        Assert.All(readBack.AsSpan(0, 16 * KiB).ToArray(), b => Assert.Equal(0xAB, b));
        Assert.True(readBack.AsSpan(16 * KiB, 16 * KiB).IndexOfAnyExcept((byte)0) < 0, "punched range is not zero");
        Assert.All(readBack.AsSpan(32 * KiB).ToArray(), b => Assert.Equal(0xAB, b));

        // The range is deallocated, not merely zero-filled.
        Assert.Equal(16 * KiB, LinuxFile.SeekHole(handle, 0));
        Assert.Equal(32 * KiB, LinuxFile.SeekData(handle, 16 * KiB));
    }

    [Fact]
    public void PunchHoleOnAReadOnlyHandleThrows()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("ro");
        File.WriteAllBytes(path, new byte[8 * KiB]);
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);

        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.TryPunchHole(handle, 0, 4 * KiB));
        Assert.Equal(Interop.Errno.EBADF, ex.Errno);
        Assert.Equal("fallocate(PUNCH_HOLE)", ex.Operation);
    }

    [Fact]
    public void FadviseAcceptsEveryAdviceAndRejectsUnknownOnes()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("advise");
        File.WriteAllBytes(path, new byte[64 * KiB]);
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);

        foreach (FileAdvice advice in Enum.GetValues<FileAdvice>())
        {
            LinuxFile.Fadvise(handle, 0, 0, advice);
        }

        // posix_fadvise returns the error instead of setting errno; it must still surface typed.
        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.Fadvise(handle, 0, 0, (FileAdvice)99));
        Assert.Equal(Interop.Errno.EINVAL, ex.Errno);
        Assert.Equal("posix_fadvise", ex.Operation);
    }

    [Fact]
    public void BlockDeviceIoctlsOnARegularFileFailWithEnotty()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("notadevice");
        File.WriteAllBytes(path, new byte[4 * KiB]);
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);

        var size = Assert.Throws<NativeIoException>(() => LinuxFile.GetBlockDeviceSize(handle, path));
        Assert.Equal(Interop.Errno.ENOTTY, size.Errno);
        Assert.Equal($"ioctl(BLKGETSIZE64) '{path}': Inappropriate ioctl for device (ENOTTY)", size.Message);

        var sector = Assert.Throws<NativeIoException>(() => LinuxFile.GetLogicalSectorSize(handle, path));
        Assert.Equal(Interop.Errno.ENOTTY, sector.Errno);
    }
}
