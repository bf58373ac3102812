using System.Buffers.Binary;

namespace BlockRepl.Core.Formats;

/// <summary>
/// A node of a recovery point's block map, stored as a <see cref="BlobType.Tree"/> blob addressed by its SHA-256.
/// <c>u8 level | u8 reserved | u16 count | u32 reserved | count × id[32]</c>. Level 0 holds chunk ids, level k&gt;0
/// holds ids of level k-1 nodes. A zero id means all-zero content (a zero chunk or an all-zero subtree), so
/// unchanged and empty parts of a volume cost nothing in a new recovery point. Trailing zero ids are trimmed.
/// </summary>
public static class TreeNode
{
    public const int HeaderSize = 8;

    public static int Encode(int level, ReadOnlySpan<ChunkId> children, Span<byte> destination)
    {
        int count = children.Length;
        while (count > 0 && children[count - 1].IsZero) count--;
        int size = HeaderSize + count * ChunkId.Size;
        if (destination.Length < size) ThrowHelper.ThrowBufferTooSmall(nameof(destination));
        destination[..HeaderSize].Clear();
        destination[0] = (byte)level;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], (ushort)count);
        for (int i = 0; i < count; i++) children[i].Write(destination[(HeaderSize + i * ChunkId.Size)..]);
        return size;
    }

    /// <summary>Decodes into <paramref name="children"/> (zero-filled beyond the stored count); returns the level.</summary>
    public static int Decode(ReadOnlySpan<byte> node, Span<ChunkId> children, string what)
    {
        if (node.Length < HeaderSize) ThrowHelper.ThrowCorrupt(what, "tree node truncated");
        int level = node[0];
        int count = BinaryPrimitives.ReadUInt16LittleEndian(node[2..]);
        if (count > children.Length || node.Length != HeaderSize + count * ChunkId.Size)
            ThrowHelper.ThrowCorrupt(what, "tree node size does not match its count");
        for (int i = 0; i < count; i++) children[i] = ChunkId.Read(node[(HeaderSize + i * ChunkId.Size)..]);
        children[count..].Clear();
        return level;
    }
}
