using System.Buffers.Binary;
using BlockRepl.Core.Compression;

namespace BlockRepl.Core.Formats;

/// <summary>What a blob holds.</summary>
public enum BlobType : byte
{
    /// <summary>A chunk of volume content.</summary>
    Data = 1,
    /// <summary>A node of a recovery point's block-map tree.</summary>
    Tree = 2,
}

/// <summary>
/// One blob inside a pack: 64 bytes on disk, in the pack's trailer table and in index files.
/// <c>id[32] | u64 offset | u32 storedLength | u32 rawLength | u8 type | u8 compression | u16 reserved | u64 xxh3(stored bytes)</c>
/// </summary>
public readonly record struct BlobEntry(
    ChunkId Id, long Offset, int StoredLength, int RawLength, BlobType Type, BlobCompression Compression, ulong StoredChecksum)
{
    public const int Size = 64;

    public void Write(Span<byte> d)
    {
        Id.Write(d);
        BinaryPrimitives.WriteInt64LittleEndian(d[32..], Offset);
        BinaryPrimitives.WriteInt32LittleEndian(d[40..], StoredLength);
        BinaryPrimitives.WriteInt32LittleEndian(d[44..], RawLength);
        d[48] = (byte)Type;
        d[49] = (byte)Compression;
        BinaryPrimitives.WriteUInt16LittleEndian(d[50..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(d[52..], StoredChecksum);
        BinaryPrimitives.WriteUInt32LittleEndian(d[60..], 0);
    }

    public static BlobEntry Read(ReadOnlySpan<byte> s, string what)
    {
        var e = new BlobEntry(
            ChunkId.Read(s),
            BinaryPrimitives.ReadInt64LittleEndian(s[32..]),
            BinaryPrimitives.ReadInt32LittleEndian(s[40..]),
            BinaryPrimitives.ReadInt32LittleEndian(s[44..]),
            (BlobType)s[48],
            (BlobCompression)s[49],
            BinaryPrimitives.ReadUInt64LittleEndian(s[52..]));
        if (e.Type is not (BlobType.Data or BlobType.Tree) || e.Compression is not (BlobCompression.None or BlobCompression.Lz4)
            || e.Offset < PackFormat.HeaderSize || e.StoredLength <= 0 || e.RawLength <= 0
            || (e.Compression == BlobCompression.None && e.StoredLength != e.RawLength))
            ThrowHelper.ThrowCorrupt(what, $"invalid blob entry for {e.Id}");
        return e;
    }
}
