using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;

namespace BlockRepl.Core.Hashing;

/// <summary>
/// XXH3-128 of a block: the cheap change-detection fingerprint (6× faster than SHA-256).
/// Never used as a content address: a repository addresses content by <see cref="ChunkId"/>.
/// </summary>
public readonly record struct BlockHash(ulong Low, ulong High)
{
    public const int Size = 16;

    public bool IsZero => (Low | High) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BlockHash Compute(ReadOnlySpan<byte> data)
    {
        UInt128 h = XxHash128.HashToUInt128(data);
        return new BlockHash((ulong)h, (ulong)(h >> 64));
    }

    public static BlockHash Read(ReadOnlySpan<byte> source) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(source), BinaryPrimitives.ReadUInt64LittleEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(destination, Low);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], High);
    }
}

/// <summary>XXH3-64 checksums of stored structures (headers, tables, whole small files).</summary>
public static class Checksum
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Compute(ReadOnlySpan<byte> data) => XxHash3.HashToUInt64(data);
}
