using System.Buffers.Binary;
using System.Text;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Core.Formats;

/// <summary>
/// The checksummed wrapper of every small repository file (config, index, manifest):
/// <c>magic[8] | u16 version | u16 flags | u32 reserved | u64 payloadLength | payload | u64 xxh3(all before)</c>.
/// Little-endian. See docs/format.md §2.
/// </summary>
public static class Envelope
{
    public const int HeaderSize = 24;
    public const int TrailerSize = 8;

    public static byte[] Wrap(ReadOnlySpan<byte> magic, ushort version, ReadOnlySpan<byte> payload)
    {
        if (magic.Length != 8) ThrowHelper.ThrowArgument(nameof(magic), "magic must be 8 bytes");
        var buffer = new byte[HeaderSize + payload.Length + TrailerSize];
        magic.CopyTo(buffer);
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(8), version);
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(16), (ulong)payload.Length);
        payload.CopyTo(buffer.AsSpan(HeaderSize));
        int end = HeaderSize + payload.Length;
        BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(end), Checksum.Compute(buffer.AsSpan(0, end)));
        return buffer;
    }

    /// <summary>Checks magic, checksum and version; returns the payload.</summary>
    public static ReadOnlySpan<byte> Unwrap(ReadOnlySpan<byte> file, ReadOnlySpan<byte> magic, ushort supportedVersion, string what, out ushort version)
    {
        version = 0;
        if (file.Length < HeaderSize + TrailerSize)
            ThrowHelper.ThrowCorrupt(what, $"truncated ({file.Length} bytes)");
        if (!file[..8].SequenceEqual(magic))
            ThrowHelper.ThrowCorrupt(what, $"bad magic (expected {Encoding.ASCII.GetString(magic).TrimEnd('\0')})");
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(file[16..]);
        if (length != (ulong)(file.Length - HeaderSize - TrailerSize))
            ThrowHelper.ThrowCorrupt(what, $"length field {length} does not match file size {file.Length}");
        int end = HeaderSize + (int)length;
        ulong expected = BinaryPrimitives.ReadUInt64LittleEndian(file[end..]);
        if (Checksum.Compute(file[..end]) != expected)
            ThrowHelper.ThrowCorrupt(what, "checksum mismatch");
        version = BinaryPrimitives.ReadUInt16LittleEndian(file[8..]);
        if (version > supportedVersion)
            ThrowHelper.ThrowUnsupportedVersion(what, version, supportedVersion);
        return file.Slice(HeaderSize, (int)length);
    }

    public static ReadOnlySpan<byte> Magic(string ascii)
    {
        var m = new byte[8];
        Encoding.ASCII.GetBytes(ascii, m);
        return m;
    }
}
