using K4os.Compression.LZ4;

namespace BlockRepl.Core.Compression;

/// <summary>How a blob's stored bytes relate to its content.</summary>
public enum BlobCompression : byte
{
    /// <summary>Stored as is (LZ4 did not save space).</summary>
    None = 0,
    /// <summary>A raw LZ4 block (no frame); the content length is kept beside it.</summary>
    Lz4 = 1,
}

/// <summary>LZ4 block compression (K4os, fast level) with a "store raw when it doesn't pay" rule.</summary>
public static class Lz4Block
{
    /// <summary>Worst-case LZ4 output for <paramref name="length"/> input bytes.</summary>
    public static int MaxEncodedLength(int length) => LZ4Codec.MaximumOutputSize(length);

    /// <summary>
    /// Compresses <paramref name="source"/> into <paramref name="destination"/>. Returns false (and writes
    /// nothing useful) when the output would not be smaller than the input by at least 1/32, or does
    /// not fit; the caller then stores the content raw.
    /// </summary>
    public static bool TryEncode(ReadOnlySpan<byte> source, Span<byte> destination, out int written)
    {
        // LZ4Codec.Encode returns -1 (or 0) when destination is too small: never trust it blindly.
        int limit = Math.Min(destination.Length, source.Length - ((source.Length + 31) >> 5));
        written = limit <= 0 ? -1 : LZ4Codec.Encode(source, destination[..limit], LZ4Level.L00_FAST);
        if (written <= 0) { written = 0; return false; }
        return true;
    }

    /// <summary>
    /// Decodes an LZ4 block that must expand to exactly <paramref name="destination"/>.Length bytes.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        int n = LZ4Codec.Decode(source, destination);
        return n == destination.Length;
    }

    /// <summary>Decodes, throwing <see cref="CorruptDataException"/> when the block is malformed.</summary>
    public static void Decode(ReadOnlySpan<byte> source, Span<byte> destination, string what)
    {
        if (!TryDecode(source, destination))
            ThrowHelper.ThrowCorrupt(what, "LZ4 block does not decode to its recorded length");
    }
}
