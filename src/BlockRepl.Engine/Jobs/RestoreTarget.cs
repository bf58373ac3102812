using BlockRepl.Core;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Engine.Jobs;

/// <summary>
/// Where a restore writes: a new file (written sparse under a temporary name, renamed into place once complete
/// and fsynced), an existing file (resized, only differing ranges written) or a block device (must be large
/// enough; only differing ranges written). Thread-safe for positional writes of disjoint ranges.
/// </summary>
public sealed class RestoreTarget : IDisposable
{
    private readonly SafeFileHandle _handle;
    private readonly string _writePath;
    private bool _committed;

    public string FullPath { get; }
    public long Size { get; }
    /// <summary>True when the target existed: ranges are compared before writing, and zero ranges are cleared.</summary>
    public bool InPlace { get; }
    public bool IsDevice { get; }
    private long _written, _unchanged;
    public long WrittenBytes => Interlocked.Read(ref _written);
    public long UnchangedBytes => Interlocked.Read(ref _unchanged);

    private RestoreTarget(SafeFileHandle handle, string full, string writePath, long size, bool inPlace, bool isDevice)
    {
        _handle = handle;
        FullPath = full;
        _writePath = writePath;
        Size = size;
        InPlace = inPlace;
        IsDevice = isDevice;
    }

    /// <summary>Opens <paramref name="target"/> for a volume of <paramref name="size"/> bytes, with one clear <see cref="TargetException"/> per way it can be wrong.</summary>
    public static RestoreTarget Open(string target, long size)
    {
        string full = Path.GetFullPath(target);
        FileStat st;
        try { st = LinuxFile.Stat(full); }
        catch (NativeIoException e) { throw new TargetException($"cannot use target '{target}': {e.Message}", e); }
        SafeFileHandle handle;
        switch (st.Kind)
        {
            case FileKind.Directory:
                throw new TargetException($"target '{target}' is a directory; give a file or block device path");
            case FileKind.BlockDevice:
                handle = OpenHandle(full, FileMode.Open, target);
                long devSize = LinuxFile.GetBlockDeviceSize(handle, full);
                if (devSize < size)
                {
                    handle.Dispose();
                    throw new TargetException($"target device '{target}' is too small: {devSize} bytes, the recovery point needs {size}");
                }
                return new RestoreTarget(handle, full, full, size, inPlace: true, isDevice: true);
            case FileKind.Regular:
                handle = OpenHandle(full, FileMode.Open, target);
                if (RandomAccess.GetLength(handle) != size) RandomAccess.SetLength(handle, size);
                return new RestoreTarget(handle, full, full, size, inPlace: true, isDevice: false);
            case FileKind.Missing:
                string? dir = Path.GetDirectoryName(full);
                if (dir is null || !Directory.Exists(dir)) throw new TargetException($"target directory '{dir}' does not exist");
                string partial = full + ".blockrepl-partial";
                handle = OpenHandle(partial, FileMode.Create, target);
                RandomAccess.SetLength(handle, size);
                return new RestoreTarget(handle, full, partial, size, inPlace: false, isDevice: false);
            default:
                throw new TargetException($"target '{target}' is not a regular file or block device");
        }
    }

    private static SafeFileHandle OpenHandle(string path, FileMode mode, string shown)
    {
        try { return File.OpenHandle(path, mode, FileAccess.ReadWrite, FileShare.Read); }
        catch (UnauthorizedAccessException e) { throw new TargetException($"cannot write target '{shown}': permission denied", e); }
        catch (IOException e) { throw new TargetException($"cannot write target '{shown}': {e.Message}", e); }
    }

    /// <summary>
    /// Writes <paramref name="data"/> at <paramref name="offset"/>: on a new file all-zero data is left as a hole; in place,
    /// only when the target differs (<paramref name="scratch"/> holds the comparison read, at least data's length).
    /// </summary>
    public void Write(ReadOnlySpan<byte> data, long offset, Span<byte> scratch)
    {
        if (!InPlace)
        {
            if (ZeroDetector.IsAllZero(data)) return;
            RandomAccess.Write(_handle, data, offset);
            Interlocked.Add(ref _written, data.Length);
            return;
        }
        var existing = scratch[..data.Length];
        if (BlockSource.ReadFully(_handle, existing, offset) == data.Length && existing.SequenceEqual(data))
        {
            Interlocked.Add(ref _unchanged, data.Length);
            return;
        }
        RandomAccess.Write(_handle, data, offset);
        Interlocked.Add(ref _written, data.Length);
    }

    /// <summary>Makes a range read as zeros: nothing on a new file; a punched hole, or zeros written where the target is not already zero.</summary>
    public void Zero(long offset, long length, Span<byte> scratch)
    {
        length = Math.Min(length, Size - offset);
        if (!InPlace || length <= 0) return;
        if (!IsDevice && LinuxFile.TryPunchHole(_handle, offset, length)) return;
        for (long o = offset; o < offset + length;)
        {
            int l = (int)Math.Min(scratch.Length, offset + length - o);
            var cmp = scratch[..l];
            if (BlockSource.ReadFully(_handle, cmp, o) != l || !ZeroDetector.IsAllZero(cmp))
            {
                cmp.Clear();
                RandomAccess.Write(_handle, cmp, o);
                Interlocked.Add(ref _written, l);
            }
            o += l;
        }
    }

    /// <summary>fsyncs, and for a new file renames the temporary file into place.</summary>
    public void Commit()
    {
        LinuxFile.Fsync(_handle, _writePath);
        _handle.Dispose();
        if (!InPlace)
        {
            File.Move(_writePath, FullPath, overwrite: false);
            LinuxFile.FsyncDirectory(Path.GetDirectoryName(FullPath)!);
        }
        _committed = true;
    }

    /// <summary>Closes; a new file that was not committed is removed.</summary>
    public void Dispose()
    {
        _handle.Dispose();
        if (!_committed && !InPlace)
        {
            try { File.Delete(_writePath); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
