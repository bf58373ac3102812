using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Versioning;
using Microsoft.Win32.SafeHandles;
using static BlockRepl.Native.Linux.Interop.Errno;

namespace BlockRepl.Native.Linux;

/// <summary>
/// The Linux file and block-device calls .NET does not expose: statx, block device geometry,
/// SEEK_DATA/SEEK_HOLE, fadvise, hole punching, fsync of directories, create-only link,
/// O_DIRECT, reflink clones (FICLONE) and filesystem freezes (FIFREEZE/FITHAW). Failures throw <see cref="NativeIoException"/>; the documented "Try"/sentinel
/// outcomes are the only non-exceptional failures.
/// </summary>
[SupportedOSPlatform("linux")]
[SkipLocalsInit] // statx fills its 256-byte buffer; zeroing it first is wasted work on a per-file path.
public static class LinuxFile
{
    /// <summary>
    /// statx(2) on <paramref name="path"/>, following symlinks. Returns a result with
    /// <see cref="FileKind.Missing"/> (all other fields zero) when the path does not exist
    /// (ENOENT, ENOTDIR).
    /// </summary>
    /// <exception cref="NativeIoException">Any other failure, e.g. EACCES, ELOOP, ENAMETOOLONG.</exception>
    public static unsafe FileStat Stat(string path)
    {
        ValidatePath(path);

        Interop.StatxBuffer buffer;
        int result = Interop.Statx(Interop.AT_FDCWD, path, Interop.AT_STATX_SYNC_AS_STAT, Interop.STATX_BASIC_STATS, &buffer);
        if (!Interop.TryCheck(result, "statx", path, [ENOENT, ENOTDIR], out _))
        {
            return default;
        }

        FileKind kind = (buffer.Mode & Interop.S_IFMT) switch
        {
            Interop.S_IFREG => FileKind.Regular,
            Interop.S_IFBLK => FileKind.BlockDevice,
            Interop.S_IFDIR => FileKind.Directory,
            _ => FileKind.Other,
        };

        long mtimeNs = (buffer.MTime.Seconds * 1_000_000_000L) + buffer.MTime.Nanoseconds;
        return new FileStat(
            kind,
            (long)buffer.Size,
            Interop.MakeDev(buffer.DevMajor, buffer.DevMinor),
            buffer.Ino,
            Interop.MakeDev(buffer.RDevMajor, buffer.RDevMinor),
            mtimeNs);
    }

    /// <summary>Size of a block device in bytes (ioctl BLKGETSIZE64).</summary>
    /// <param name="handle">An open handle to the device.</param>
    /// <param name="path">The device path, used only in error messages.</param>
    /// <exception cref="NativeIoException">E.g. ENOTTY when the handle is not a block device.</exception>
    public static long GetBlockDeviceSize(SafeFileHandle handle, string path)
    {
        Interop.EnsureSupportedArchitecture();
        int result = Interop.Ioctl(handle, Interop.BLKGETSIZE64, out ulong size);
        Interop.Check(result, "ioctl(BLKGETSIZE64)", path);
        return checked((long)size);
    }

    /// <summary>Logical sector size of a block device in bytes (ioctl BLKSSZGET): the O_DIRECT alignment unit.</summary>
    /// <param name="handle">An open handle to the device.</param>
    /// <param name="path">The device path, used only in error messages.</param>
    /// <exception cref="NativeIoException">E.g. ENOTTY when the handle is not a block device.</exception>
    public static int GetLogicalSectorSize(SafeFileHandle handle, string path)
    {
        Interop.EnsureSupportedArchitecture();
        int result = Interop.Ioctl(handle, Interop.BLKSSZGET, out int sectorSize);
        Interop.Check(result, "ioctl(BLKSSZGET)", path);
        return sectorSize;
    }

    /// <summary>
    /// lseek(SEEK_DATA): the first offset at or after <paramref name="offset"/> that holds data,
    /// or -1 when there is none (ENXIO: only a hole, or at/after end of file). Results are in
    /// filesystem block granularity.
    /// </summary>
    /// <remarks>Moves the descriptor's file offset; .NET's <see cref="RandomAccess"/> and
    /// <see cref="FileStream"/> use positional I/O on seekable files, so they are unaffected.</remarks>
    public static long SeekData(SafeFileHandle handle, long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        Interop.EnsureSupportedArchitecture();
        long result = Interop.LSeek(handle, offset, Interop.SEEK_DATA);
        return Interop.TryCheck(result, "lseek(SEEK_DATA)", null, [ENXIO], out _) ? result : -1;
    }

    /// <summary>
    /// lseek(SEEK_HOLE): the first offset at or after <paramref name="offset"/> inside a hole. End
    /// of file counts as a hole, so for any offset below the size this returns at most the size.
    /// </summary>
    /// <exception cref="NativeIoException">ENXIO when <paramref name="offset"/> is at or past end of file.</exception>
    public static long SeekHole(SafeFileHandle handle, long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        Interop.EnsureSupportedArchitecture();
        return Interop.Check(Interop.LSeek(handle, offset, Interop.SEEK_HOLE), "lseek(SEEK_HOLE)", null);
    }

    /// <summary>
    /// Whether lseek accepts SEEK_DATA on this handle. False on EINVAL/EOPNOTSUPP (e.g. block
    /// devices on some kernels); filesystems without real sparse support still answer, treating
    /// the whole file as data.
    /// </summary>
    /// <exception cref="NativeIoException">Any other failure, e.g. ESPIPE for a pipe, EBADF.</exception>
    public static bool SupportsSeekData(SafeFileHandle handle)
    {
        Interop.EnsureSupportedArchitecture();
        long result = Interop.LSeek(handle, 0, Interop.SEEK_DATA);

        // ENXIO means "no data at or after 0" (empty or all-hole file): the call itself works.
        return Interop.TryCheck(result, "lseek(SEEK_DATA)", null, [ENXIO, EINVAL, EOPNOTSUPP], out int errno)
            || errno == ENXIO;
    }

    /// <summary>posix_fadvise(2) for the byte range; a <paramref name="length"/> of 0 means "to end of file".</summary>
    /// <exception cref="NativeIoException">EINVAL for an unknown advice, ESPIPE for a pipe, EBADF for a bad handle.</exception>
    public static void Fadvise(SafeFileHandle handle, long offset, long length, FileAdvice advice)
    {
        Interop.EnsureSupportedArchitecture();
        int error = Interop.PosixFadvise(handle, offset, length, (int)advice);
        Interop.CheckReturnedErrno(error, "posix_fadvise", null);
    }

    /// <summary>
    /// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): deallocate the range so it reads
    /// back as zeros, without changing the file size. Partial filesystem blocks at the edges are
    /// zeroed instead of freed. Returns false when the filesystem or device cannot punch holes
    /// (EOPNOTSUPP, ENOTTY, ENODEV).
    /// </summary>
    /// <exception cref="NativeIoException">Any other failure (EINVAL for a zero length, EBADF on a read-only handle, ...).</exception>
    public static bool TryPunchHole(SafeFileHandle handle, long offset, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Interop.EnsureSupportedArchitecture();

        const int mode = Interop.FALLOC_FL_PUNCH_HOLE | Interop.FALLOC_FL_KEEP_SIZE;
        int result;
        while (Interop.Interrupted(result = Interop.Fallocate(handle, mode, offset, length)))
        {
        }

        return Interop.TryCheck(result, "fallocate(PUNCH_HOLE)", null, [EOPNOTSUPP, ENOTTY, ENODEV], out _);
    }

    /// <summary>
    /// ioctl(FICLONE): makes <paramref name="destination"/> a reflink copy of all of <paramref name="source"/> (same
    /// size, sharing every extent, holes kept) in one atomic step: a point-in-time copy at no space cost. Returns
    /// false with the errno when the filesystem cannot (EOPNOTSUPP: no reflink, e.g. ext4, tmpfs or XFS without
    /// reflink=1; EXDEV: another filesystem; EINVAL: unsuitable files; ENOTTY).
    /// </summary>
    /// <param name="source">The file to clone, open for reading.</param>
    /// <param name="destination">An empty regular file open for writing, on the same filesystem.</param>
    /// <param name="path">The destination's path, used only in error messages.</param>
    /// <param name="errno">The tolerated errno when the result is false, else 0.</param>
    /// <exception cref="NativeIoException">Any other failure (ENOSPC, EIO, EBADF, ...).</exception>
    public static bool TryClone(SafeFileHandle source, SafeFileHandle destination, string path, out int errno)
    {
        Interop.EnsureSupportedArchitecture();
        int result;
        while (Interop.Interrupted(result = Interop.Ioctl(destination, Interop.FICLONE, source)))
        {
        }

        return Interop.TryCheck(result, "ioctl(FICLONE)", path, [EOPNOTSUPP, EXDEV, EINVAL, ENOTTY], out errno);
    }

    /// <summary>
    /// ioctl(FIFREEZE) on the filesystem mounted at <paramref name="mountPoint"/>: flushes it and blocks every
    /// writer until <see cref="TryThaw"/>. The caller must make sure nothing it needs writes there meanwhile.
    /// </summary>
    /// <exception cref="NativeIoException">EBUSY (already frozen), EOPNOTSUPP (the filesystem cannot freeze), EPERM (not root), ...</exception>
    public static void Freeze(string mountPoint) => FreezeIoctl(mountPoint, Interop.FIFREEZE, "ioctl(FIFREEZE)", tolerated: []);

    /// <summary>ioctl(FITHAW): thaws the filesystem mounted at <paramref name="mountPoint"/>; false when it was not frozen (EINVAL).</summary>
    /// <exception cref="NativeIoException">Any other failure (ENOENT, EPERM, ...).</exception>
    public static bool TryThaw(string mountPoint) => FreezeIoctl(mountPoint, Interop.FITHAW, "ioctl(FITHAW)", tolerated: [EINVAL]);

    private static bool FreezeIoctl(string mountPoint, uint request, string operation, ReadOnlySpan<int> tolerated)
    {
        ValidatePath(mountPoint);
        Interop.EnsureSupportedArchitecture();
        using SafeFileHandle directory = OpenCore(
            mountPoint,
            Interop.OpenFlags.O_RDONLY | Interop.OpenFlags.O_DIRECTORY | Interop.OpenFlags.O_CLOEXEC,
            tolerated: [])!;
        int result;
        while (Interop.Interrupted(result = Interop.Ioctl(directory, request, 0)))
        {
        }

        return Interop.TryCheck(result, operation, mountPoint, tolerated, out _);
    }

    /// <summary>fsync(2): data and metadata of the file reach stable storage.</summary>
    /// <param name="handle">The open file.</param>
    /// <param name="path">The file's path, used only in error messages.</param>
    /// <exception cref="NativeIoException">EIO means written data may be lost; do not retry and assume it is durable.</exception>
    public static void Fsync(SafeFileHandle handle, string path) => FsyncCore(handle, path);

    /// <summary>
    /// Opens the directory (O_RDONLY | O_DIRECTORY | O_CLOEXEC), fsyncs it and closes it, so a
    /// rename, link or create inside it is durable.
    /// </summary>
    /// <exception cref="NativeIoException">ENOENT, ENOTDIR, EACCES, EIO, ...</exception>
    public static void FsyncDirectory(string directoryPath)
    {
        ValidatePath(directoryPath);
        using SafeFileHandle directory = OpenCore(
            directoryPath,
            Interop.OpenFlags.O_RDONLY | Interop.OpenFlags.O_DIRECTORY | Interop.OpenFlags.O_CLOEXEC,
            tolerated: [])!;
        FsyncCore(directory, directoryPath);
    }

    /// <summary>
    /// link(2) <paramref name="newPath"/> to <paramref name="existingPath"/>: an atomic
    /// create-only publish. Returns false, touching nothing, when <paramref name="newPath"/>
    /// already exists (EEXIST).
    /// </summary>
    /// <exception cref="NativeIoException">Any other failure (ENOENT source, EXDEV across filesystems, EPERM on filesystems without hard links, ...).</exception>
    public static bool TryLinkNoReplace(string existingPath, string newPath)
    {
        ValidatePath(existingPath);
        ValidatePath(newPath);
        int result = Interop.Link(existingPath, newPath);
        // Message reads "link '/a' to '/b': ...": ENOENT may concern either name, so both are shown.
        return Interop.TryCheck(result, $"link '{existingPath}' to", newPath, [EEXIST], out _);
    }

    /// <summary>
    /// Opens <paramref name="path"/> with O_DIRECT | O_CLOEXEC and O_RDWR or O_RDONLY. Returns null
    /// when the filesystem rejects O_DIRECT (EINVAL) so the caller can fall back to buffered I/O.
    /// I/O on the handle must use buffers, offsets and lengths aligned to the logical sector size.
    /// </summary>
    /// <exception cref="NativeIoException">Any other failure (ENOENT, EACCES, EISDIR, ...).</exception>
    public static SafeFileHandle? TryOpenDirect(string path, bool write)
    {
        ValidatePath(path);
        int flags = Interop.OpenFlags.O_DIRECT
            | Interop.OpenFlags.O_CLOEXEC
            | (write ? Interop.OpenFlags.O_RDWR : Interop.OpenFlags.O_RDONLY);
        return OpenCore(path, flags, tolerated: [EINVAL]);
    }

    /// <summary>True when the effective user id is 0 (geteuid), e.g. to decide whether device tests can run.</summary>
    public static bool IsRoot => Interop.GetEUid() == 0;

    private static SafeFileHandle? OpenCore(string path, int flags, ReadOnlySpan<int> tolerated)
    {
        int fd;

        // open can be interrupted on slow filesystems (NFS, FUSE); the runtime retries the same way.
        while (Interop.Interrupted(fd = Interop.Open(path, flags)))
        {
        }

        return Interop.TryCheck(fd, "open", path, tolerated, out _)
            ? new SafeFileHandle(fd, ownsHandle: true)
            : null;
    }

    private static void FsyncCore(SafeFileHandle handle, string? path)
    {
        int result;
        while (Interop.Interrupted(result = Interop.FSync(handle)))
        {
        }

        Interop.Check(result, "fsync", path);
    }

    /// <summary>
    /// The UTF-8 marshaller stops at the first NUL, so "a\0b" would silently operate on "a".
    /// </summary>
    private static void ValidatePath(string path, [CallerArgumentExpression(nameof(path))] string? paramName = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path, paramName);
        if (path.Contains('\0'))
        {
            throw new ArgumentException("Path contains a NUL character.", paramName);
        }
    }
}
