namespace BlockRepl.Native.Linux;

/// <summary>The subset of statx(2) BlockRepl uses. <c>default</c> is a <see cref="FileKind.Missing"/> result.</summary>
/// <param name="Kind">File type, after following symlinks.</param>
/// <param name="Size">st_size in bytes; 0 for block devices (ask <see cref="LinuxFile.GetBlockDeviceSize"/>).</param>
/// <param name="Device">st_dev, glibc makedev encoding (equal to <c>stat -c %d</c>): the filesystem holding the file.</param>
/// <param name="Inode">st_ino; with <paramref name="Device"/> identifies the file.</param>
/// <param name="RDev">st_rdev, glibc makedev encoding: the device number for device nodes, 0 otherwise.</param>
/// <param name="MTimeNs">Last modification time in nanoseconds since the Unix epoch.</param>
public readonly record struct FileStat(FileKind Kind, long Size, ulong Device, ulong Inode, ulong RDev, long MTimeNs);
