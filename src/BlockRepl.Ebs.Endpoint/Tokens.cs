using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// Block and page tokens: opaque, MAC-protected, expiring. Every token starts with the bytes FB FF BF and is
/// 32 bytes long, so its base64 form always contains '+', '/' and '=' (ref/ebs.md §15.5): a client that forgets
/// to percent-encode them in a query string fails every time, not once in a while.
/// </summary>
internal sealed class TokenCodec(byte[] key)
{
    private const int Length = 32;
    private static ReadOnlySpan<byte> Prefix => [0xFB, 0xFF, 0xBF];

    public enum Kind : byte { Block = 1, ListPage = 2, ChangedPage = 3 }

    public string Create(Kind kind, string snapshotId, string? otherSnapshotId, int index, DateTimeOffset expiry)
    {
        Span<byte> t = stackalloc byte[Length];
        Prefix.CopyTo(t);
        t[3] = (byte)kind;
        BinaryPrimitives.WriteInt64LittleEndian(t[4..], expiry.ToUnixTimeSeconds());
        BinaryPrimitives.WriteInt32LittleEndian(t[12..], index);
        Mac(t[..16], snapshotId, otherSnapshotId, t[16..]);
        return Convert.ToBase64String(t);
    }

    /// <summary>Reads a token made by <see cref="Create"/> for the same kind and snapshots; false if forged, mangled or expired.</summary>
    public bool TryRead(string token, Kind kind, string snapshotId, string? otherSnapshotId, DateTimeOffset now, out int index, out bool expired)
    {
        index = -1;
        expired = false;
        Span<byte> t = stackalloc byte[Length + 3];
        if (token.Length > 64 || !Convert.TryFromBase64String(token, t, out int n) || n != Length) return false;
        t = t[..Length];
        if (!t[..3].SequenceEqual(Prefix) || t[3] != (byte)kind) return false;
        Span<byte> mac = stackalloc byte[16];
        Mac(t[..16], snapshotId, otherSnapshotId, mac);
        if (!CryptographicOperations.FixedTimeEquals(mac, t[16..])) return false;
        index = BinaryPrimitives.ReadInt32LittleEndian(t[12..]);
        expired = BinaryPrimitives.ReadInt64LittleEndian(t[4..]) < now.ToUnixTimeSeconds();
        return !expired;
    }

    private void Mac(ReadOnlySpan<byte> header, string snapshotId, string? other, Span<byte> into)
    {
        byte[] message = [.. header, .. Encoding.ASCII.GetBytes(snapshotId), 0, .. Encoding.ASCII.GetBytes(other ?? "")];
        Span<byte> full = stackalloc byte[32];
        HMACSHA256.HashData(key, message, full);
        full[..into.Length].CopyTo(into);
    }
}
