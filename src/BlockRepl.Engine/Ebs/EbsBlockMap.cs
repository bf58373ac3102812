using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using BlockRepl.Core.Hashing;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Engine.Ebs;

/// <summary>
/// What one EBS snapshot of a chain holds, per 512 KiB block (docs/ebs.md §3): the XXH3-128 and SHA-256 of
/// the block's content. An all-zero entry means the block reads as zeros; an all-0xFF entry means "unknown"
/// (it must be written). The sealed file names the completed snapshot it describes; the working copy of a
/// pending snapshot is rebuilt from the sealed map plus the journal of acknowledged puts on every (re)start.
/// </summary>
internal static class EbsBlockMap
{
    public const int HeaderSize = 4096;
    public const int EntrySize = BlockHash.Size + 32;    // 48
    public const int BlockSize = Storage.Ebs.EbsLimits.BlockSize;
    private const ushort Version = 1;
    private const int HeadLength = 128;
    private static ReadOnlySpan<byte> Magic => "BREBSMAP"u8;

    /// <summary>SHA-256 of an all-zero 512 KiB block (ref/ebs.md §5).</summary>
    public static readonly byte[] ZeroBlockSha256 = SHA256.HashData(new byte[BlockSize]);

    public static long BlockCount(long volumeBytes) => (volumeBytes + BlockSize - 1) / BlockSize;
    public static long EntryOffset(long block) => HeaderSize + block * EntrySize;

    public static bool IsZero(ReadOnlySpan<byte> entry) => !entry.ContainsAnyExcept((byte)0);
    public static bool IsUnknown(ReadOnlySpan<byte> entry) => !entry.ContainsAnyExcept((byte)0xFF);

    public sealed record Header(long VolumeBytes, long BlockCount, string SnapshotId, string ChainId);

    /// <summary>Creates a working map whose entries are all zero (a new chain: unwritten blocks read as zeros).</summary>
    public static SafeFileHandle CreateZero(string path, long blockCount)
    {
        var h = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read);
        RandomAccess.SetLength(h, EntryOffset(blockCount));
        return h;
    }

    /// <summary>Creates a working map whose entries are all "unknown" (every block will be written).</summary>
    public static SafeFileHandle CreateUnknown(string path, long blockCount)
    {
        var h = CreateZero(path, blockCount);
        var buf = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            buf.AsSpan().Fill(0xFF);
            long end = EntryOffset(blockCount);
            for (long o = HeaderSize; o < end; o += buf.Length)
                RandomAccess.Write(h, buf.AsSpan(0, (int)Math.Min(buf.Length, end - o)), o);
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
        return h;
    }

    /// <summary>Creates a working map from a sealed one (entries copied; the header stays invalid until sealed).</summary>
    public static SafeFileHandle CreateFrom(string sealedPath, string path, long blockCount) =>
        Repository.MapFiles.CopyUnsealed(sealedPath, path, HeadLength, EntryOffset(blockCount));

    public static void Seal(SafeFileHandle h, string path, Header header)
    {
        ulong sum = ChecksumEntries(h, header.BlockCount);
        Span<byte> head = stackalloc byte[HeadLength];
        head.Clear();
        Magic.CopyTo(head);
        BinaryPrimitives.WriteUInt16LittleEndian(head[8..], Version);
        BinaryPrimitives.WriteInt32LittleEndian(head[12..], BlockSize);
        BinaryPrimitives.WriteInt64LittleEndian(head[16..], header.VolumeBytes);
        BinaryPrimitives.WriteInt64LittleEndian(head[24..], header.BlockCount);
        BinaryPrimitives.WriteUInt64LittleEndian(head[32..], sum);
        WriteString(head[40..80], header.SnapshotId);
        WriteString(head[80..120], header.ChainId);
        BinaryPrimitives.WriteUInt64LittleEndian(head[120..], Checksum.Compute(head[..120]));
        RandomAccess.Write(h, head, 0);
        LinuxFile.Fsync(h, path);
    }

    /// <summary>Opens a sealed map if it is intact and describes <paramref name="snapshotId"/> of a volume of this size.</summary>
    public static SafeFileHandle? TryOpen(string path, long volumeBytes, string snapshotId, string chainId, out string? reason)
    {
        if (!File.Exists(path)) { reason = "no block map in the state directory"; return null; }
        SafeFileHandle h;
        try { h = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { reason = $"block map unreadable: {e.Message}"; return null; }
        try
        {
            Span<byte> head = stackalloc byte[HeadLength];
            if (RandomAccess.Read(h, head, 0) != HeadLength || !head[..8].SequenceEqual(Magic)
                || Checksum.Compute(head[..120]) != BinaryPrimitives.ReadUInt64LittleEndian(head[120..]))
                return Fail(out reason, "block map is torn or corrupt");
            if (BinaryPrimitives.ReadUInt16LittleEndian(head[8..]) != Version) return Fail(out reason, "block map has another version");
            long bytes = BinaryPrimitives.ReadInt64LittleEndian(head[16..]);
            long count = BinaryPrimitives.ReadInt64LittleEndian(head[24..]);
            if (ReadString(head[80..120]) != chainId) return Fail(out reason, "block map belongs to another chain");
            if (ReadString(head[40..80]) != snapshotId) return Fail(out reason, "block map describes another snapshot");
            if (bytes != volumeBytes) return Fail(out reason, $"volume size changed ({bytes} -> {volumeBytes} bytes)");
            if (count != BlockCount(volumeBytes) || RandomAccess.GetLength(h) != EntryOffset(count)) return Fail(out reason, "block map is truncated");
            if (ChecksumEntries(h, count) != BinaryPrimitives.ReadUInt64LittleEndian(head[32..])) return Fail(out reason, "block map entries are corrupt");
            reason = null;
            return h;
        }
        catch (IOException e) { return Fail(out reason, $"block map unreadable: {e.Message}"); }

        SafeFileHandle? Fail(out string? r, string why)
        {
            r = why;
            h.Dispose();
            return null;
        }
    }

    private static ulong ChecksumEntries(SafeFileHandle h, long blockCount) =>
        Repository.ChangeMap.ChecksumRange(h, HeaderSize, EntryOffset(blockCount));

    private static void WriteString(Span<byte> d, string s)
    {
        if (Encoding.ASCII.GetByteCount(s) > d.Length - 1) throw new ArgumentException($"'{s}' is too long for the block map header");
        d[0] = (byte)Encoding.ASCII.GetBytes(s, d[1..]);
    }

    private static string ReadString(ReadOnlySpan<byte> s) => s[0] < s.Length ? Encoding.ASCII.GetString(s.Slice(1, s[0])) : "";
}

/// <summary>
/// The journal of a pending snapshot (docs/ebs.md §4): checksummed 64-byte records. Before a block is put, an
/// INTENT record is made durable (group fsync by a flusher thread); after the service acknowledges it, an ACK
/// record with the block's XXH3-128 and SHA-256 is appended. On resume, ACKed blocks are known; blocks with an
/// INTENT but no ACK may hold anything and are put again. A torn tail is ignored. The journal is fsynced before
/// CompleteSnapshot, so a sealed snapshot is always fully described by it.
/// </summary>
internal sealed class EbsJournal : IDisposable
{
    public const int RecordSize = 64;
    private const int HeaderSize = 64;
    private const byte Intent = 1, Ack = 2;
    private static ReadOnlySpan<byte> Magic => "BREBSJNL"u8;
    private readonly FileStream _file;
    private readonly object _lock = new();
    private readonly byte[] _record = new byte[RecordSize];
    private long _written, _durable;
    private bool _closed;
    // The fsync round in progress (covering records up to _roundTarget), and the one after it.
    private TaskCompletionSource? _currentRound;
    private long _roundTarget;
    private TaskCompletionSource _nextRound = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Thread _flusher;

    public readonly record struct Entry(int Index, bool Acked, BlockHash Hash, byte[]? Sha256);

    private EbsJournal(FileStream file)
    {
        _file = file;
        _flusher = new Thread(FlushLoop) { Name = "blockrepl-journal", IsBackground = true };
        _flusher.Start();
    }

    /// <summary>Opens the journal of <paramref name="snapshotId"/> and returns its intact records; a journal of another snapshot is discarded.</summary>
    public static EbsJournal Open(string path, string snapshotId, out List<Entry> entries)
    {
        entries = [];
        var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read, 1 << 16);
        try
        {
            var head = new byte[HeaderSize];
            bool valid = fs.Length >= HeaderSize && fs.Read(head) == HeaderSize && head.AsSpan(0, 8).SequenceEqual(Magic)
                && Checksum.Compute(head.AsSpan(0, 56)) == BinaryPrimitives.ReadUInt64LittleEndian(head.AsSpan(56))
                && head[8] <= 46 && Encoding.ASCII.GetString(head, 9, head[8]) == snapshotId;
            if (!valid)
            {
                fs.SetLength(0);
                Array.Clear(head);
                Magic.CopyTo(head);
                head[8] = (byte)Encoding.ASCII.GetBytes(snapshotId, head.AsSpan(9, 46));
                BinaryPrimitives.WriteUInt64LittleEndian(head.AsSpan(56), Checksum.Compute(head.AsSpan(0, 56)));
                fs.Position = 0;
                fs.Write(head);
                fs.Flush(flushToDisk: true);
                return new EbsJournal(fs);
            }
            var rec = new byte[RecordSize];
            long good = HeaderSize;
            while (fs.Read(rec) == RecordSize)
            {
                if (Checksum.Compute(rec.AsSpan(0, 56)) != BinaryPrimitives.ReadUInt64LittleEndian(rec.AsSpan(56))) break;
                bool acked = rec[4] == Ack;
                entries.Add(new Entry(BinaryPrimitives.ReadInt32LittleEndian(rec), acked, BlockHash.Read(rec.AsSpan(8)),
                    acked ? rec.AsSpan(24, 32).ToArray() : null));
                good += RecordSize;
            }
            fs.SetLength(good);
            fs.Position = good;
            return new EbsJournal(fs);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>Records that <paramref name="index"/> is about to be put; returns the sequence to pass to <see cref="WaitDurable"/>.</summary>
    public long AppendIntent(int index) => Append(index, Intent, default, default);

    /// <summary>Records an acknowledged put (written to the OS at once, to disk by the flusher).</summary>
    public void AppendAck(int index, BlockHash hash, ReadOnlySpan<byte> sha256) => Append(index, Ack, hash, sha256);

    private long Append(int index, byte kind, BlockHash hash, ReadOnlySpan<byte> sha256)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            var r = _record.AsSpan();
            r.Clear();
            BinaryPrimitives.WriteInt32LittleEndian(r, index);
            r[4] = kind;
            hash.Write(r[8..]);
            if (!sha256.IsEmpty) sha256.CopyTo(r[24..]);
            BinaryPrimitives.WriteUInt64LittleEndian(r[56..], Checksum.Compute(r[..56]));
            _file.Write(r);
            _file.Flush(flushToDisk: false);
            long seq = ++_written;
            Monitor.PulseAll(_lock);
            return seq;
        }
    }

    /// <summary>Blocks until every record up to <paramref name="seq"/> is on disk (group commit with other writers).</summary>
    public void WaitDurable(long seq)
    {
        lock (_lock)
        {
            while (_durable < seq && !_closed) Monitor.Wait(_lock);
            ObjectDisposedException.ThrowIf(_durable < seq, this);
        }
    }

    /// <summary>Completes when every record up to <paramref name="seq"/> is on disk, without blocking a thread.</summary>
    public Task WhenDurableAsync(long seq)
    {
        lock (_lock)
        {
            if (_durable >= seq) return Task.CompletedTask;
            if (_closed) return Task.FromException(new ObjectDisposedException(nameof(EbsJournal)));
            // Not covered by the round in progress: the flusher sees _written > its target and runs the next one.
            return _currentRound is not null && seq <= _roundTarget ? _currentRound.Task : _nextRound.Task;
        }
    }

    /// <summary>Everything appended so far is on disk when this returns.</summary>
    public void Sync()
    {
        long seq;
        lock (_lock) seq = _written;
        WaitDurable(seq);
    }

    private void FlushLoop()
    {
        while (true)
        {
            long target;
            TaskCompletionSource round;
            lock (_lock)
            {
                while (_durable == _written && !_closed) Monitor.Wait(_lock);
                if (_closed) { _nextRound.TrySetException(new ObjectDisposedException(nameof(EbsJournal))); return; }
                target = _written;
                round = _nextRound;
                _nextRound = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _currentRound = round;
                _roundTarget = target;
            }
            // fsync outside the lock, so appends continue meanwhile (they are covered by the next round).
            try { LinuxFile.Fsync(_file.SafeFileHandle, _file.Name); }
            catch (Exception e)
            {
                lock (_lock) { _closed = true; Monitor.PulseAll(_lock); _nextRound.TrySetException(e); }
                round.TrySetException(e);
                return;
            }
            lock (_lock) { _durable = Math.Max(_durable, target); _currentRound = null; Monitor.PulseAll(_lock); }
            round.TrySetResult();
        }
    }

    public void Dispose()
    {
        lock (_lock) { _closed = true; Monitor.PulseAll(_lock); }
        _flusher.Join();
        _nextRound.TrySetException(new ObjectDisposedException(nameof(EbsJournal)));
        _file.Dispose();
    }
}
