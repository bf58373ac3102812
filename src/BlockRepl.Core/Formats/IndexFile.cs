using System.Buffers.Binary;

namespace BlockRepl.Core.Formats;

/// <summary>The blobs of one or more packs, so a repository is known without reading packs.</summary>
public sealed record PackIndex(PackId Pack, long PackLength, BlobEntry[] Entries);

/// <summary>
/// Index file payload (inside an <see cref="Envelope"/> with magic "BRINDEX"): <c>u32 packCount</c>, then per pack
/// <c>packId[16] | u64 packLength | u32 entryCount | u32 reserved | entries (64 B each)</c>.
/// </summary>
public static class IndexFile
{
    public const ushort Version = 1;
    public static ReadOnlySpan<byte> Magic => "BRINDEX\0"u8;

    public static byte[] Serialize(IReadOnlyList<PackIndex> packs)
    {
        int size = 4;
        foreach (var p in packs) size += 32 + p.Entries.Length * BlobEntry.Size;
        var payload = new byte[size];
        var s = payload.AsSpan();
        BinaryPrimitives.WriteInt32LittleEndian(s, packs.Count);
        int o = 4;
        foreach (var p in packs)
        {
            p.Pack.Write(s[o..]);
            BinaryPrimitives.WriteInt64LittleEndian(s[(o + 16)..], p.PackLength);
            BinaryPrimitives.WriteInt32LittleEndian(s[(o + 24)..], p.Entries.Length);
            o += 32;
            foreach (var e in p.Entries) { e.Write(s[o..]); o += BlobEntry.Size; }
        }
        return Envelope.Wrap(Magic, Version, payload);
    }

    public static List<PackIndex> Deserialize(ReadOnlySpan<byte> file, string what)
    {
        var s = Envelope.Unwrap(file, Magic, Version, what, out _);
        if (s.Length < 4) ThrowHelper.ThrowCorrupt(what, "truncated");
        int count = BinaryPrimitives.ReadInt32LittleEndian(s);
        var result = new List<PackIndex>(Math.Max(0, Math.Min(count, 1 << 16)));
        int o = 4;
        for (int i = 0; i < count; i++)
        {
            if (o + 32 > s.Length) ThrowHelper.ThrowCorrupt(what, "truncated pack group");
            var id = PackId.Read(s[o..]);
            long len = BinaryPrimitives.ReadInt64LittleEndian(s[(o + 16)..]);
            int n = BinaryPrimitives.ReadInt32LittleEndian(s[(o + 24)..]);
            o += 32;
            if (n < 0 || (long)o + (long)n * BlobEntry.Size > s.Length) ThrowHelper.ThrowCorrupt(what, "truncated entries");
            var entries = new BlobEntry[n];
            for (int j = 0; j < n; j++) { entries[j] = BlobEntry.Read(s.Slice(o, BlobEntry.Size), what); o += BlobEntry.Size; }
            result.Add(new PackIndex(id, len, entries));
        }
        if (o != s.Length) ThrowHelper.ThrowCorrupt(what, "trailing bytes");
        return result;
    }
}

/// <summary>A pack's random 128-bit name.</summary>
public readonly record struct PackId(ulong Low, ulong High)
{
    public static PackId NewRandom()
    {
        Span<byte> b = stackalloc byte[16];
        System.Security.Cryptography.RandomNumberGenerator.Fill(b);
        return Read(b);
    }
    public static PackId Read(ReadOnlySpan<byte> s) => new(BinaryPrimitives.ReadUInt64LittleEndian(s), BinaryPrimitives.ReadUInt64LittleEndian(s[8..]));
    public void Write(Span<byte> d) { BinaryPrimitives.WriteUInt64LittleEndian(d, Low); BinaryPrimitives.WriteUInt64LittleEndian(d[8..], High); }
    public override string ToString() { Span<byte> b = stackalloc byte[16]; Write(b); return Convert.ToHexStringLower(b); }
    public static PackId Parse(string hex)
    {
        var b = Convert.FromHexString(hex);
        if (b.Length != 16) throw new FormatException($"'{hex}' is not a pack id");
        return Read(b);
    }
}
