using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// One snapshot's block storage: <c>blocks.dat</c>, a sparse file holding block i at i·524288, and
/// <c>blocks.log</c>, an append-only log of 40-byte records (index int32 LE, SHA-256, CRC-32 of both) naming
/// the blocks written and their digests, so reads never rehash.
/// </summary>
/// <remarks>
/// Puts are group-committed: each put writes its data, then queues its record; one flusher at a time fsyncs
/// the data file, appends every queued record in one write, fsyncs the log and only then acknowledges the
/// batch. A record is therefore never durable before its data, and 64 concurrent puts cost two fsyncs per
/// batch rather than per block. A torn tail record (crash mid-append) fails its CRC and is cut off on open.
/// </remarks>
internal sealed class BlockFile : IDisposable
{
    public const int BlockSize = 524288;
    private const int RecordSize = 40;

    private readonly string _dataPath;
    private readonly string _logPath;
    private readonly bool _durable;
    private readonly SafeFileHandle _data;
    private SafeFileHandle? _log;
    private long _logLength;
    private readonly Lock _gate = new();
    private List<PendingRecord> _queue = [];
    private bool _flushing;
    private readonly Action<int, Sha256Digest> _onCommitted;

    private readonly record struct PendingRecord(int Index, Sha256Digest Digest, TaskCompletionSource Done);

    private BlockFile(string dir, bool durable, bool writable, Action<int, Sha256Digest> onCommitted)
    {
        _dataPath = Path.Combine(dir, "blocks.dat");
        _logPath = Path.Combine(dir, "blocks.log");
        _durable = durable;
        _onCommitted = onCommitted;
        _data = File.OpenHandle(_dataPath, writable ? FileMode.OpenOrCreate : FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read, FileShare.ReadWrite);
        if (writable) _log = File.OpenHandle(_logPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
    }

    /// <summary>Creates the files of a new snapshot (and makes their names durable).</summary>
    public static BlockFile Create(string dir, bool durable, Action<int, Sha256Digest> onCommitted)
    {
        var f = new BlockFile(dir, durable, writable: true, onCommitted);
        if (durable) LinuxFile.FsyncDirectory(dir);
        return f;
    }

    /// <summary>Opens an existing snapshot's files and replays the log into <paramref name="blocks"/> (last record per index wins).</summary>
    public static BlockFile Open(string dir, bool durable, bool writable, Dictionary<int, Sha256Digest> blocks, Action<int, Sha256Digest> onCommitted)
    {
        string logPath = Path.Combine(dir, "blocks.log");
        if (!File.Exists(Path.Combine(dir, "blocks.dat"))) File.WriteAllBytes(Path.Combine(dir, "blocks.dat"), []);
        long valid = 0;
        if (File.Exists(logPath))
        {
            byte[] log = File.ReadAllBytes(logPath);
            for (; valid + RecordSize <= log.Length; valid += RecordSize)
            {
                ReadOnlySpan<byte> r = log.AsSpan((int)valid, RecordSize);
                if (Crc32.HashToUInt32(r[..36]) != BinaryPrimitives.ReadUInt32LittleEndian(r[36..])) break;
                blocks[BinaryPrimitives.ReadInt32LittleEndian(r)] = Sha256Digest.From(r[4..36]);
            }
            if (valid != log.Length && writable)
            {
                using var fs = new FileStream(logPath, FileMode.Open, FileAccess.Write);
                fs.SetLength(valid);
                if (durable) fs.Flush(flushToDisk: true);
            }
        }
        var f = new BlockFile(dir, durable, writable, onCommitted) { _logLength = valid };
        return f;
    }

    /// <summary>Writes block <paramref name="index"/> and returns once it and its digest are durable (see remarks).</summary>
    public async Task WriteAsync(int index, ReadOnlyMemory<byte> data, Sha256Digest digest, CancellationToken ct)
    {
        await RandomAccess.WriteAsync(_data, data, (long)index * BlockSize, ct).ConfigureAwait(false);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        bool lead;
        lock (_gate)
        {
            _queue.Add(new PendingRecord(index, digest, done));
            lead = !_flushing;
            _flushing = true;
        }
        if (lead) _ = Task.Run(FlushLoop, CancellationToken.None);
        await done.Task.ConfigureAwait(false);
    }

    private void FlushLoop()
    {
        while (true)
        {
            List<PendingRecord> batch;
            lock (_gate)
            {
                if (_queue.Count == 0) { _flushing = false; return; }
                batch = _queue;
                _queue = [];
            }
            byte[] buffer = ArrayPool<byte>.Shared.Rent(batch.Count * RecordSize);
            try
            {
                var log = _log ?? throw new InvalidOperationException("the snapshot is sealed; its block log is closed");
                if (_durable) LinuxFile.Fsync(_data, _dataPath);
                for (int i = 0; i < batch.Count; i++)
                {
                    Span<byte> r = buffer.AsSpan(i * RecordSize, RecordSize);
                    BinaryPrimitives.WriteInt32LittleEndian(r, batch[i].Index);
                    var digest = batch[i].Digest;
                    ((ReadOnlySpan<byte>)digest).CopyTo(r[4..]);
                    BinaryPrimitives.WriteUInt32LittleEndian(r[36..], Crc32.HashToUInt32(r[..36]));
                }
                RandomAccess.Write(log, buffer.AsSpan(0, batch.Count * RecordSize), _logLength);
                _logLength += batch.Count * RecordSize;
                if (_durable) LinuxFile.Fsync(log, _logPath);
                foreach (var p in batch) _onCommitted(p.Index, p.Digest);
                foreach (var p in batch) p.Done.TrySetResult();
            }
            catch (Exception e)
            {
                foreach (var p in batch) p.Done.TrySetException(e);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>Reads block <paramref name="index"/> into <paramref name="into"/> (zeros where nothing was written).</summary>
    public async ValueTask ReadAsync(int index, Memory<byte> into, CancellationToken ct)
    {
        int total = 0;
        while (total < BlockSize)
        {
            int n = await RandomAccess.ReadAsync(_data, into[total..BlockSize], (long)index * BlockSize + total, ct).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        into.Span[total..BlockSize].Clear();
    }

    /// <summary>Synchronous <see cref="ReadAsync"/>, for recovery at start-up.</summary>
    public void Read(int index, Span<byte> into)
    {
        int total = 0;
        while (total < BlockSize)
        {
            int n = RandomAccess.Read(_data, into[total..BlockSize], (long)index * BlockSize + total);
            if (n == 0) break;
            total += n;
        }
        into[total..BlockSize].Clear();
    }

    /// <summary>Closes the log once the snapshot can no longer change (completed or error).</summary>
    public void Seal()
    {
        lock (_gate)
        {
            if (_flushing || _queue.Count > 0) return; // a late flush still needs it; Dispose closes it
            _log?.Dispose();
            _log = null;
        }
    }

    public void Dispose()
    {
        _data.Dispose();
        _log?.Dispose();
    }
}
