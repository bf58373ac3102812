using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Engine.Sources;

/// <summary>What a volume is read from.</summary>
public enum SourceKind { ImageFile, BlockDevice }

/// <summary>
/// A volume read with positional reads: a raw disk image file or a Linux block device. Thread-safe
/// (pread), but the backup pipeline uses one sequential reader per device: two streams on one cold
/// disk were measured 2× slower (ref/perf.md §5).
/// </summary>
public sealed class BlockSource : IBlockSource
{
    private readonly SafeFileHandle _handle;
    private SafeFileHandle? _direct;
    private readonly bool _seekData;

    /// <summary>O_DIRECT reads need buffers, offsets and lengths aligned to this.</summary>
    public const int DirectAlignment = 4096;

    private BlockSource(string path, SafeFileHandle handle, SourceKind kind, long size, FileStat stat)
    {
        Path = path;
        _handle = handle;
        Kind = kind;
        Size = size;
        Stat = stat;
        _seekData = kind == SourceKind.ImageFile && LinuxFile.SupportsSeekData(handle);
    }

    public string Path { get; }
    public SourceKind Kind { get; }
    public long Size { get; }
    public FileStat Stat { get; }
    public SafeFileHandle Handle => _handle;

    /// <summary>Identifies the volume for finding its previous recovery point: the canonical path.</summary>
    public string SourceKey => Path;

    /// <summary>Opens an image file, a block device or an NBD URI (<see cref="NbdBlockSource"/>).</summary>
    public static IBlockSource OpenAny(string pathOrUri) =>
        NbdBlockSource.IsNbd(pathOrUri) ? NbdBlockSource.Open(pathOrUri)
        : QemuSource.IsQemu(pathOrUri) ? QemuSource.Open(pathOrUri)
        : Open(pathOrUri);

    /// <summary>Opens a source, with one clear <see cref="SourceException"/> for every way it can be wrong.</summary>
    public static BlockSource Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        FileStat st;
        try { st = LinuxFile.Stat(full); }
        catch (NativeIoException e) { throw new SourceException($"cannot read source '{path}': {e.Message}", e); }
        SourceKind kind = st.Kind switch
        {
            FileKind.Missing => throw new SourceException($"source '{path}' does not exist"),
            FileKind.Directory => throw new SourceException($"source '{path}' is a directory; give a disk image file or a block device"),
            FileKind.Regular => SourceKind.ImageFile,
            FileKind.BlockDevice => SourceKind.BlockDevice,
            _ => throw new SourceException($"source '{path}' is not a regular file or block device"),
        };
        SafeFileHandle handle;
        try { handle = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite); }
        catch (UnauthorizedAccessException e) { throw new SourceException($"cannot read source '{path}': permission denied", e); }
        catch (IOException e) { throw new SourceException($"cannot read source '{path}': {e.Message}", e); }
        try
        {
            long size = kind == SourceKind.BlockDevice ? LinuxFile.GetBlockDeviceSize(handle, full) : RandomAccess.GetLength(handle);
            // Probe one read so "opens but cannot read" (EIO, EISDIR on odd files) fails here, clearly.
            if (size > 0)
            {
                Span<byte> probe = stackalloc byte[512];
                RandomAccess.Read(handle, probe, 0);
            }
            if (kind == SourceKind.ImageFile)
                LinuxFile.Fadvise(handle, 0, 0, FileAdvice.Sequential);
            return new BlockSource(full, handle, kind, size, st);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            handle.Dispose();
            throw new SourceException($"cannot read source '{path}': {e.Message}", e);
        }
    }

    /// <summary>True once <see cref="TryEnableDirectIo"/> succeeded: reads bypass the page cache.</summary>
    public bool DirectIo => _direct is not null;

    /// <summary>
    /// Switches reads to O_DIRECT: no copy through the page cache and no eviction of the server's working
    /// set. False when the filesystem refuses O_DIRECT (the caller then stays buffered).
    /// </summary>
    public bool TryEnableDirectIo()
    {
        _direct ??= LinuxFile.TryOpenDirect(Path, write: false);
        return _direct is not null;
    }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/> (short only at the end of the volume).</summary>
    public int ReadAt(Span<byte> buffer, long offset) => ReadFully(_handle, buffer, offset);

    /// <summary>
    /// Reads <paramref name="length"/> bytes at <paramref name="offset"/> into <paramref name="alignedBuffer"/>, whose
    /// address is <see cref="DirectAlignment"/>-aligned and whose capacity covers the length rounded up.
    /// Uses O_DIRECT when enabled (offset must then be aligned), buffered reads otherwise.
    /// </summary>
    public int ReadBatch(Memory<byte> alignedBuffer, long offset, int length) => ReadBatch(alignedBuffer.Span, offset, length);

    /// <inheritdoc cref="ReadBatch(Memory{byte}, long, int)"/>
    public int ReadBatch(Span<byte> alignedBuffer, long offset, int length)
    {
        if (_direct is null || offset % DirectAlignment != 0) return ReadFully(_handle, alignedBuffer[..length], offset);
        int rounded = (length + DirectAlignment - 1) & ~(DirectAlignment - 1);
        int n = ReadFully(_direct, alignedBuffer[..rounded], offset);
        return Math.Min(n, length);
    }

    /// <summary>pread until the buffer is full or the end of the file; returns the bytes read.</summary>
    internal static int ReadFully(SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(handle, buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>
    /// The first offset at or after <paramref name="offset"/> that may hold data; holes of sparse image
    /// files (SEEK_DATA) read as zeros and are skipped without reading. Returns <see cref="Size"/> when
    /// only holes remain.
    /// </summary>
    public long NextData(long offset)
    {
        if (!_seekData || offset >= Size) return Math.Min(offset, Size);
        long next = LinuxFile.SeekData(_handle, offset);
        return next < 0 ? Size : Math.Min(next, Size);
    }

    /// <summary>Drops pages we read from the page cache, so a backup does not evict the server's working set.</summary>
    public void DropCache(long offset, long length)
    {
        if (Kind == SourceKind.ImageFile || Kind == SourceKind.BlockDevice)
            LinuxFile.Fadvise(_handle, offset, length, FileAdvice.DontNeed);
    }

    public void Dispose()
    {
        _direct?.Dispose();
        _handle.Dispose();
    }
}
