namespace BlockRepl.Engine.Sources;

/// <summary>
/// A volume the backup pipeline reads: an image file or block device (<see cref="BlockSource"/>), or an NBD export
/// (<see cref="NbdBlockSource"/>). One reader thread calls it sequentially; implementations need not be thread-safe.
/// </summary>
public interface IBlockSource : IDisposable
{
    /// <summary>What the user named (path or URI), for messages and manifests.</summary>
    string Path { get; }
    /// <summary>Identifies the volume for finding its previous recovery point and change map.</summary>
    string SourceKey { get; }
    long Size { get; }
    /// <summary>True once reads bypass the page cache.</summary>
    bool DirectIo { get; }
    /// <summary>Switches to reads that bypass the page cache where the source has one; false when it cannot.</summary>
    bool TryEnableDirectIo();
    /// <summary>The first offset at or after <paramref name="offset"/> that may hold non-zero data; <see cref="Size"/> when none.</summary>
    long NextData(long offset);
    /// <summary>
    /// Reads <paramref name="length"/> bytes at <paramref name="offset"/> into <paramref name="alignedBuffer"/> (page-aligned,
    /// with room for the length rounded up to 4 KiB); returns the count, short only at the end of the volume.
    /// </summary>
    int ReadBatch(Memory<byte> alignedBuffer, long offset, int length);
    /// <summary>
    /// <see cref="ReadBatch"/> without holding a thread while the data travels: how the reader keeps
    /// <see cref="MaxConcurrentReads"/> network reads in flight. Completes only when nothing can still write into the buffer.
    /// </summary>
    ValueTask<int> ReadBatchAsync(Memory<byte> alignedBuffer, long offset, int length) => new(ReadBatch(alignedBuffer, offset, length));
    /// <summary>
    /// How many <see cref="ReadBatch"/> calls may run at once from different threads. 1 (the default) for files and
    /// devices: one sequential reader per device (ref/perf.md §5). A network source answers scattered small reads
    /// faster with several in flight.
    /// </summary>
    int MaxConcurrentReads => 1;

    /// <summary>Drops what was read from the page cache, where that applies.</summary>
    void DropCache(long offset, long length);
}
