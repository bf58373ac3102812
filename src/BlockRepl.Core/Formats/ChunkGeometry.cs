namespace BlockRepl.Core.Formats;

/// <summary>Fixed sizes shared by the change map, the repository and the EBS path.</summary>
public static class ChunkGeometry
{
    /// <summary>The change-map and EBS block size (EBS direct APIs accept only 512 KiB blocks).</summary>
    public const int BlockSize = 512 * 1024;
    /// <summary>Default repository chunk: 64 KiB (QEMU bitmap granularity; 1.0× stored for scattered 64 KiB writes).</summary>
    public const int DefaultChunkSize = 64 * 1024;
    public const int MinChunkSize = 4 * 1024;
    /// <summary>Chunk ids per leaf node (a leaf covers 4 MiB of volume at 64 KiB chunks, 2 KiB of ids).</summary>
    public const int LeafFanout = 64;
    /// <summary>Child ids per interior node (8 KiB).</summary>
    public const int NodeFanout = 256;
    public const long DefaultPackTargetSize = 32L << 20;

    public static bool IsValidChunkSize(int size) =>
        size >= MinChunkSize && size <= BlockSize && (size & (size - 1)) == 0;

    public static long ChunkCount(long volumeSize, int chunkSize) => (volumeSize + chunkSize - 1) / chunkSize;

    /// <summary>Tree levels needed so the root covers every chunk (at least 1).</summary>
    public static int TreeLevels(long chunkCount, int leafFanout = LeafFanout, int nodeFanout = NodeFanout)
    {
        int levels = 1;
        long covered = leafFanout;
        while (covered < chunkCount) { covered *= nodeFanout; levels++; }
        return levels;
    }
}
