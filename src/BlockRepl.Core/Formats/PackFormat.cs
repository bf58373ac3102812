using System.Buffers.Binary;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Core.Formats;

/// <summary>
/// Pack files group many blobs so an object store needs one request per tens of MiB, not per chunk.
/// <code>
/// header  16 B: "BRPACK" | u16 version | u64 reserved
/// blobs        stored bytes, back to back
/// table   n×64 B: BlobEntry
/// trailer 32 B: u64 tableOffset | u32 count | u16 version | u16 reserved | u64 xxh3(table ‖ trailer[0..16)) | "BRPKEND\0"
/// </code>
/// </summary>
public static class PackFormat
{
    public const ushort Version = 1;
    public const int HeaderSize = 16;
    public const int TrailerSize = 32;
    private static ReadOnlySpan<byte> HeaderMagic => "BRPACK"u8;
    private static ReadOnlySpan<byte> TrailerMagic => "BRPKEND\0"u8;

    public static void WriteHeader(Span<byte> d)
    {
        d[..HeaderSize].Clear();
        HeaderMagic.CopyTo(d);
        BinaryPrimitives.WriteUInt16LittleEndian(d[6..], Version);
    }

    public static void CheckHeader(ReadOnlySpan<byte> s, string what)
    {
        if (s.Length < HeaderSize || !s[..6].SequenceEqual(HeaderMagic) || s[8..HeaderSize].IndexOfAnyExcept((byte)0) >= 0)
            ThrowHelper.ThrowCorrupt(what, "bad pack header");
        ushort v = BinaryPrimitives.ReadUInt16LittleEndian(s[6..]);
        if (v > Version) ThrowHelper.ThrowUnsupportedVersion(what, v, Version);
    }

    /// <summary>Writes table + trailer for <paramref name="entries"/> into a new array.</summary>
    public static byte[] BuildTableAndTrailer(ReadOnlySpan<BlobEntry> entries, long tableOffset)
    {
        var buf = new byte[entries.Length * BlobEntry.Size + TrailerSize];
        for (int i = 0; i < entries.Length; i++)
            entries[i].Write(buf.AsSpan(i * BlobEntry.Size));
        int tableLen = entries.Length * BlobEntry.Size;
        var t = buf.AsSpan(tableLen);
        BinaryPrimitives.WriteInt64LittleEndian(t, tableOffset);
        BinaryPrimitives.WriteInt32LittleEndian(t[8..], entries.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(t[12..], Version);
        BinaryPrimitives.WriteUInt64LittleEndian(t[16..], Checksum.Compute(buf.AsSpan(0, tableLen + 16)));
        TrailerMagic.CopyTo(t[24..]);
        return buf;
    }

    /// <summary>Parses the trailer (the last 32 bytes of the pack): table offset and entry count.</summary>
    public static (long TableOffset, int Count, ulong TableChecksum) ReadTrailer(ReadOnlySpan<byte> trailer, long packLength, string what)
    {
        if (trailer.Length != TrailerSize || !trailer[24..].SequenceEqual(TrailerMagic))
            ThrowHelper.ThrowCorrupt(what, "bad pack trailer");
        long tableOffset = BinaryPrimitives.ReadInt64LittleEndian(trailer);
        int count = BinaryPrimitives.ReadInt32LittleEndian(trailer[8..]);
        if (count < 0 || tableOffset < HeaderSize || tableOffset + (long)count * BlobEntry.Size + TrailerSize != packLength)
            ThrowHelper.ThrowCorrupt(what, "pack trailer does not match the pack's length");
        return (tableOffset, count, BinaryPrimitives.ReadUInt64LittleEndian(trailer[16..]));
    }

    /// <summary>
    /// Checks the table and the trailer's first 16 bytes against the trailer checksum, then the version,
    /// and parses the entries.
    /// </summary>
    public static BlobEntry[] ReadTable(ReadOnlySpan<byte> table, ReadOnlySpan<byte> trailer, int count, ulong checksum, long tableOffset, string what)
    {
        var hasher = new System.IO.Hashing.XxHash3();
        hasher.Append(table);
        hasher.Append(trailer[..16]);
        if (table.Length != count * BlobEntry.Size || hasher.GetCurrentHashAsUInt64() != checksum)
            ThrowHelper.ThrowCorrupt(what, "pack table checksum mismatch");
        if (BinaryPrimitives.ReadUInt16LittleEndian(trailer[14..]) != 0)
            ThrowHelper.ThrowCorrupt(what, "pack trailer reserved field is not zero");
        ushort v = BinaryPrimitives.ReadUInt16LittleEndian(trailer[12..]);
        if (v > Version) ThrowHelper.ThrowUnsupportedVersion(what, v, Version);
        var entries = new BlobEntry[count];
        for (int i = 0; i < count; i++)
        {
            entries[i] = BlobEntry.Read(table.Slice(i * BlobEntry.Size, BlobEntry.Size), what);
            if (entries[i].Offset + entries[i].StoredLength > tableOffset)
                ThrowHelper.ThrowCorrupt(what, $"blob {entries[i].Id} lies outside the data area");
        }
        return entries;
    }
}
