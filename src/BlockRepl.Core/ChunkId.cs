using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace BlockRepl.Core;

/// <summary>
/// The SHA-256 of a chunk's or tree node's content: its address in a repository.
/// The all-zero value is reserved for "all-zero content" (nothing stored).
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = Size)]
public readonly struct ChunkId : IEquatable<ChunkId>
{
    public const int Size = 32;

    private readonly ulong _a, _b, _c, _d;

    private ChunkId(ulong a, ulong b, ulong c, ulong d) { _a = a; _b = b; _c = c; _d = d; }

    /// <summary>The id of all-zero content of any length (never stored).</summary>
    public static ChunkId Zero => default;

    public bool IsZero => (_a | _b | _c | _d) == 0;

    public static ChunkId Read(ReadOnlySpan<byte> source)
    {
        if (source.Length < Size) ThrowHelper.ThrowBufferTooSmall(nameof(source));
        return new ChunkId(
            BinaryPrimitives.ReadUInt64LittleEndian(source),
            BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(source[24..]));
    }

    public void Write(Span<byte> destination)
    {
        if (destination.Length < Size) ThrowHelper.ThrowBufferTooSmall(nameof(destination));
        BinaryPrimitives.WriteUInt64LittleEndian(destination, _a);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], _b);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], _c);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], _d);
    }

    /// <summary>SHA-256 of <paramref name="content"/>; allocation free.</summary>
    [SkipLocalsInit]
    public static ChunkId Compute(ReadOnlySpan<byte> content)
    {
        Span<byte> digest = stackalloc byte[Size];
        SHA256.HashData(content, digest);
        return Read(digest);
    }

    public static ChunkId Parse(string hex)
    {
        if (hex.Length != Size * 2) throw new FormatException($"'{hex}' is not a 64-digit hex id.");
        Span<byte> bytes = stackalloc byte[Size];
        if (Convert.FromHexString(hex, bytes, out _, out int written) != System.Buffers.OperationStatus.Done || written != Size)
            throw new FormatException($"'{hex}' is not a 64-digit hex id.");
        return Read(bytes);
    }

    public override string ToString()
    {
        Span<byte> bytes = stackalloc byte[Size];
        Write(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    public bool Equals(ChunkId other) => _a == other._a && _b == other._b && _c == other._c && _d == other._d;
    public override bool Equals(object? obj) => obj is ChunkId other && Equals(other);

    // SHA-256 output is uniformly distributed: any 8 bytes are a good hash.
    public override int GetHashCode() => (int)_a ^ (int)(_a >> 32);
    /// <summary>The first 8 bytes: a uniformly distributed hash-table key.</summary>
    public ulong Low => _a;

    public static bool operator ==(ChunkId left, ChunkId right) => left.Equals(right);
    public static bool operator !=(ChunkId left, ChunkId right) => !left.Equals(right);
}
