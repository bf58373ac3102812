using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using BlockRepl.Core;
using BlockRepl.Core.Hashing;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Engine.Repository;

/// <summary>
/// The persisted per-volume change map (docs/format.md §7): for every chunk, the XXH3-128 of its content
/// and its SHA-256 id as stored in the recovery point named in the header. Entries are written positionally
/// by the backup workers into a new file, which replaces the old one by rename only after the recovery point
/// is committed. Any doubt (checksum, size, chunk size, repository, missing recovery point) means the map is
/// ignored and the run rescans against the repository: a wrong incremental is impossible by construction,
/// because an unchanged XXH3-128 is the only thing that lets a chunk reuse its recorded SHA-256.
/// </summary>
public static class ChangeMap
{
    public const int HeaderSize = 4096;     // entries start page-aligned
    public const int EntrySize = BlockHash.Size + ChunkId.Size;   // 48
    private const ushort Version = 1;
    private static ReadOnlySpan<byte> Magic => "BRCHGMAP"u8;

    public sealed record Header(int ChunkSize, long VolumeSize, string RepoId, string SnapshotId, ulong EntriesChecksum);

    public static string FileName(string repoId, string sourceKey)
    {
        var h = SHA256.HashData(Encoding.UTF8.GetBytes(repoId + "\n" + sourceKey));
        return $"{repoId[..Math.Min(16, repoId.Length)]}-{Convert.ToHexStringLower(h.AsSpan(0, 12))}.map";
    }

    public static long EntryOffset(long chunkIndex) => HeaderSize + chunkIndex * EntrySize;

    /// <summary>Creates the working file of a run: header zeroed (invalid) until <see cref="Seal"/>, entries sparse zero.</summary>
    public static SafeFileHandle CreateWorking(string path, long chunkCount)
    {
        var h = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.SetLength(h, EntryOffset(chunkCount));
        return h;
    }

    /// <summary>
    /// Creates the working file of a run that reads only changed ranges: a copy of the sealed map at
    /// <paramref name="sealedPath"/> with its header zeroed (invalid) until <see cref="Seal"/>.
    /// </summary>
    public static SafeFileHandle CreateWorkingFrom(string sealedPath, string path, long chunkCount) =>
        MapFiles.CopyUnsealed(sealedPath, path, HeaderSize, EntryOffset(chunkCount));

    /// <summary>Computes the entries' checksum, writes the header and fsyncs. The caller then renames into place.</summary>
    public static void Seal(SafeFileHandle h, string path, long chunkCount, Header header)
    {
        ulong sum = ChecksumEntries(h, chunkCount);
        Span<byte> head = stackalloc byte[80];
        head.Clear();
        Magic.CopyTo(head);
        BinaryPrimitives.WriteUInt16LittleEndian(head[8..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(head[12..], header.ChunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(head[16..], header.VolumeSize);
        WriteId(head[24..40], header.RepoId);
        WriteId(head[40..56], header.SnapshotId);
        BinaryPrimitives.WriteUInt64LittleEndian(head[56..], sum);
        BinaryPrimitives.WriteInt64LittleEndian(head[64..], chunkCount);
        BinaryPrimitives.WriteUInt64LittleEndian(head[72..], Checksum.Compute(head[..72]));
        RandomAccess.Write(h, head, 0);
        LinuxFile.Fsync(h, path);
    }

    /// <summary>Opens an existing map if it is intact and matches; otherwise returns null and why.</summary>
    public static SafeFileHandle? TryOpen(string path, int chunkSize, long volumeSize, string repoId, out Header? header, out string? reason)
    {
        header = null;
        if (!File.Exists(path)) { reason = "no change map yet"; return null; }
        SafeFileHandle h;
        try { h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { reason = $"change map unreadable: {e.Message}"; return null; }
        try
        {
            Span<byte> head = stackalloc byte[80];
            if (RandomAccess.Read(h, head, 0) != 80 || !head[..8].SequenceEqual(Magic)
                || Checksum.Compute(head[..72]) != BinaryPrimitives.ReadUInt64LittleEndian(head[72..]))
            { reason = "change map is torn or corrupt"; h.Dispose(); return null; }
            if (BinaryPrimitives.ReadUInt16LittleEndian(head[8..]) != Version) { reason = "change map has another version"; h.Dispose(); return null; }
            var hd = new Header(BinaryPrimitives.ReadInt32LittleEndian(head[12..]), BinaryPrimitives.ReadInt64LittleEndian(head[16..]),
                ReadId(head[24..40]), ReadId(head[40..56]), BinaryPrimitives.ReadUInt64LittleEndian(head[56..]));
            long count = BinaryPrimitives.ReadInt64LittleEndian(head[64..]);
            if (hd.RepoId != repoId) { reason = "change map belongs to another repository"; h.Dispose(); return null; }
            if (hd.ChunkSize != chunkSize) { reason = "change map has another chunk size"; h.Dispose(); return null; }
            if (hd.VolumeSize != volumeSize) { reason = $"volume size changed ({hd.VolumeSize} -> {volumeSize} bytes)"; h.Dispose(); return null; }
            if (count != Core.Formats.ChunkGeometry.ChunkCount(volumeSize, chunkSize) || RandomAccess.GetLength(h) != EntryOffset(count))
            { reason = "change map is truncated"; h.Dispose(); return null; }
            if (ChecksumEntries(h, count) != hd.EntriesChecksum) { reason = "change map entries are corrupt"; h.Dispose(); return null; }
            header = hd;
            reason = null;
            return h;
        }
        catch (IOException e) { reason = $"change map unreadable: {e.Message}"; h.Dispose(); return null; }
    }

    private static ulong ChecksumEntries(SafeFileHandle h, long chunkCount) => ChecksumRange(h, HeaderSize, EntryOffset(chunkCount));

    /// <summary>XXH3 of the bytes [<paramref name="start"/>, <paramref name="end"/>) of a state file, read in 1 MiB pieces.</summary>
    internal static ulong ChecksumRange(SafeFileHandle h, long start, long end)
    {
        var hasher = new XxHash3();
        var buf = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            for (long o = start; o < end;)
            {
                int n = RandomAccess.Read(h, buf.AsSpan(0, (int)Math.Min(buf.Length, end - o)), o);
                if (n <= 0) throw new IOException("unexpected end of state file");
                hasher.Append(buf.AsSpan(0, n));
                o += n;
            }
            return hasher.GetCurrentHashAsUInt64();
        }
        finally { System.Buffers.ArrayPool<byte>.Shared.Return(buf); }
    }

    private static void WriteId(Span<byte> d, string hex)
    {
        d.Clear();
        var b = Convert.FromHexString(hex);
        b.AsSpan(0, Math.Min(16, b.Length)).CopyTo(d);
    }

    private static string ReadId(ReadOnlySpan<byte> s) => Convert.ToHexStringLower(s);
}

/// <summary>What the change map and the EBS block map (both a header and fixed-size entries) share.</summary>
internal static class MapFiles
{
    /// <summary>
    /// Copies a sealed map to a run's working file, its first <paramref name="headerLength"/> bytes zeroed (so it
    /// is invalid until sealed) and sized to <paramref name="length"/>.
    /// </summary>
    public static SafeFileHandle CopyUnsealed(string sealedPath, string path, int headerLength, long length)
    {
        File.Copy(sealedPath, path, overwrite: true);
        var h = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.Write(h, new byte[headerLength], 0);
        RandomAccess.SetLength(h, length);
        return h;
    }
}
