using System.Globalization;
using BlockRepl.Native.Linux;

namespace BlockRepl.Native.Linux.Tests;

public class StatTests
{
    [Fact]
    public void RegularFileReportsSizeAndTheSameIdentityAsCoreutilsStat()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("file");
        File.WriteAllBytes(path, new byte[12345]);

        FileStat stat = LinuxFile.Stat(path);

        Assert.Equal(FileKind.Regular, stat.Kind);
        Assert.Equal(12345, stat.Size);
        Assert.Equal(0ul, stat.RDev);

        // Cross-check decoding of the statx buffer against an independent implementation.
        string[] fields = Shell.Run("stat", "-c", "%d %i %Y", path).Split(' ');
        Assert.Equal(ulong.Parse(fields[0], CultureInfo.InvariantCulture), stat.Device);
        Assert.Equal(ulong.Parse(fields[1], CultureInfo.InvariantCulture), stat.Inode);
        Assert.Equal(long.Parse(fields[2], CultureInfo.InvariantCulture), stat.MTimeNs / 1_000_000_000);

        var mtime = DateTimeOffset.UnixEpoch.AddTicks(stat.MTimeNs / 100);
        Assert.Equal(File.GetLastWriteTimeUtc(path), mtime.UtcDateTime);
    }

    [Fact]
    public void DirectoryIsDirectory()
    {
        using var dir = new TempDirectory();
        Assert.Equal(FileKind.Directory, LinuxFile.Stat(dir.Path).Kind);
    }

    [Fact]
    public void MissingPathIsMissingNotAnException()
    {
        using var dir = new TempDirectory();
        Assert.Equal(default, LinuxFile.Stat(dir.Combine("nope")));
        Assert.Equal(FileKind.Missing, LinuxFile.Stat(dir.Combine("nope")).Kind);
    }

    [Fact]
    public void PathThroughARegularFileIsMissing()
    {
        using var dir = new TempDirectory();
        string file = dir.Combine("file");
        File.WriteAllText(file, "x");

        // ENOTDIR: "file/child" cannot exist.
        Assert.Equal(FileKind.Missing, LinuxFile.Stat(Path.Combine(file, "child")).Kind);
    }

    [Fact]
    public void DevNullIsACharacterDeviceReportedAsOther()
    {
        FileStat stat = LinuxFile.Stat("/dev/null");
        Assert.Equal(FileKind.Other, stat.Kind);
        Assert.Equal(Interop.MakeDev(1, 3), stat.RDev);
    }

    [Fact]
    public void SymlinksAreFollowed()
    {
        using var dir = new TempDirectory();
        string target = dir.Combine("target");
        File.WriteAllBytes(target, new byte[7]);
        File.CreateSymbolicLink(dir.Combine("link"), target);

        FileStat viaLink = LinuxFile.Stat(dir.Combine("link"));

        Assert.Equal(FileKind.Regular, viaLink.Kind);
        Assert.Equal(7, viaLink.Size);
        Assert.Equal(LinuxFile.Stat(target).Inode, viaLink.Inode);
    }

    [Fact]
    public void SymlinkLoopThrowsWithErrnoOperationAndPath()
    {
        using var dir = new TempDirectory();
        string a = dir.Combine("a");
        File.CreateSymbolicLink(a, dir.Combine("b"));
        File.CreateSymbolicLink(dir.Combine("b"), a);

        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.Stat(a));

        Assert.Equal(Interop.Errno.ELOOP, ex.Errno);
        Assert.Equal("statx", ex.Operation);
        Assert.Equal(a, ex.Path);
        Assert.StartsWith($"statx '{a}': ", ex.Message);
        Assert.EndsWith("(ELOOP)", ex.Message);
    }

    [Fact]
    public void OverlongNameThrowsInsteadOfReportingMissing()
    {
        var ex = Assert.Throws<NativeIoException>(() => LinuxFile.Stat("/tmp/" + new string('x', 300)));
        Assert.Equal(Interop.Errno.ENAMETOOLONG, ex.Errno);
    }

    [Fact]
    public void EmbeddedNulIsRejectedBeforeReachingTheKernel()
    {
        Assert.Throws<ArgumentException>(() => LinuxFile.Stat("/tmp\0/etc"));
        Assert.Throws<ArgumentException>(() => LinuxFile.Stat(""));
    }
}
