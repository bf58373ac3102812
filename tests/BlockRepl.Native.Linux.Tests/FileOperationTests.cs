using System.Globalization;
using System.Runtime.InteropServices;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux.Tests;

public class FileOperationTests
{
    [Fact]
    public void LinkNoReplacePublishesWhenTheTargetIsFree()
    {
        using var dir = new TempDirectory();
        string source = dir.Combine("data.tmp");
        string target = dir.Combine("data");
        File.WriteAllText(source, "new");

        Assert.True(LinuxFile.TryLinkNoReplace(source, target));

        Assert.Equal("new", File.ReadAllText(target));
        Assert.Equal(LinuxFile.Stat(source).Inode, LinuxFile.Stat(target).Inode);
    }

    [Fact]
    public void LinkNoReplaceReturnsFalseAndLeavesAnExistingTargetAlone()
    {
        using var dir = new TempDirectory();
        string source = dir.Combine("data.tmp");
        string target = dir.Combine("data");
        File.WriteAllText(source, "new");
        File.WriteAllText(target, "old");

        Assert.False(LinuxFile.TryLinkNoReplace(source, target));

        Assert.Equal("old", File.ReadAllText(target));
        Assert.NotEqual(LinuxFile.Stat(source).Inode, LinuxFile.Stat(target).Inode);
    }

    [Fact]
    public void LinkFromAMissingSourceThrowsNamingBothPaths()
    {
        using var dir = new TempDirectory();
        string source = dir.Combine("missing");
        string target = dir.Combine("target");

        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.TryLinkNoReplace(source, target));

        Assert.Equal(Interop.Errno.ENOENT, ex.Errno);
        Assert.Equal(target, ex.Path);
        Assert.Equal($"link '{source}' to '{target}': No such file or directory (ENOENT)", ex.Message);
    }

    [Fact]
    public void FsyncWorksOnAFileAndADirectory()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("file");
        using (SafeFileHandle handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.Write(handle, new byte[] { 1, 2, 3 }, 0);
            LinuxFile.Fsync(handle, path);
        }

        LinuxFile.FsyncDirectory(dir.Path);
    }

    [Fact]
    public void FsyncDirectoryRejectsFilesAndMissingPaths()
    {
        using var dir = new TempDirectory();
        string file = dir.Combine("file");
        File.WriteAllText(file, "x");

        var notDir = Assert.Throws<NativeIoException>(() => LinuxFile.FsyncDirectory(file));
        Assert.Equal(Interop.Errno.ENOTDIR, notDir.Errno);
        Assert.Equal($"open '{file}': Not a directory (ENOTDIR)", notDir.Message);

        var missing = Assert.Throws<NativeIoException>(() => LinuxFile.FsyncDirectory(dir.Combine("nope")));
        Assert.Equal(Interop.Errno.ENOENT, missing.Errno);
    }

    [Fact]
    public unsafe void OpenDirectAllowsAlignedReadsAndWrites()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("direct");
        byte[] content = new byte[16 * 1024];
        new Random(42).NextBytes(content);
        File.WriteAllBytes(path, content);

        const int alignment = 4096;
        void* buffer = NativeMemory.AlignedAlloc(alignment, alignment);
        try
        {
            var span = new Span<byte>(buffer, alignment);

            using (SafeFileHandle? reader = LinuxFile.TryOpenDirect(path, write: false))
            {
                Assert.NotNull(reader); // ext4/xfs/btrfs/tmpfs (6.6+) all accept O_DIRECT
                Assert.Equal(alignment, RandomAccess.Read(reader, span, alignment));
                Assert.True(span.SequenceEqual(content.AsSpan(alignment, alignment)));
            }

            using (SafeFileHandle? writer = LinuxFile.TryOpenDirect(path, write: true))
            {
                Assert.NotNull(writer);
                span.Fill(0x5A);
                RandomAccess.Write(writer, span, 2 * alignment);
            }

            byte[] after = File.ReadAllBytes(path);
            Assert.All(after.AsSpan(2 * alignment, alignment).ToArray(), b => Assert.Equal(0x5A, b));
            Assert.True(after.AsSpan(0, 2 * alignment).SequenceEqual(content.AsSpan(0, 2 * alignment)));
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [Fact]
    public void OpenDirectOnAMissingFileThrowsRatherThanReportingNoSupport()
    {
        using var dir = new TempDirectory();
        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.TryOpenDirect(dir.Combine("nope"), write: false));
        Assert.Equal(Interop.Errno.ENOENT, ex.Errno);
        Assert.Equal("open", ex.Operation);
    }

    [Fact]
    public void IsRootMatchesTheEffectiveUserId()
    {
        uint euid = uint.Parse(Shell.Run("id", "-u"), CultureInfo.InvariantCulture);
        Assert.Equal(euid == 0, LinuxFile.IsRoot);
    }
}
