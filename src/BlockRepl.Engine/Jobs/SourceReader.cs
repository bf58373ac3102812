using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using BlockRepl.Engine.Sources;

namespace BlockRepl.Engine.Jobs;

/// <summary>A read unit: <see cref="Start"/> is where the aligned data begins inside <see cref="Buffer"/>.</summary>
internal readonly record struct ReadBatch(byte[] Buffer, int Start, long Offset, int Length)
{
    public ReadOnlySpan<byte> Data => Buffer.AsSpan(Start, Length);
}

/// <summary>
/// Sees every batch the backup reader produced, on the worker thread that processes it, before its buffer is
/// reused: how one read of the source feeds a second target (an EBS snapshot chain) in the same run.
/// Batches start on <see cref="SourceReader.BatchSize"/> boundaries; holes skipped by SEEK_DATA are never passed.
/// </summary>
public interface IBatchObserver
{
    void OnBatch(ReadOnlySpan<byte> data, long offset, CancellationToken ct);
}

/// <summary>The single sequential reader every scan of a source uses (one reader per device: ref/perf.md §5).</summary>
internal static class SourceReader
{
    /// <summary>Read unit: four 512 KiB EBS blocks.</summary>
    public const int BatchSize = 4 * Core.Formats.ChunkGeometry.BlockSize;

    /// <summary>Pinned buffers with room to start on a page boundary: O_DIRECT reads DMA straight into them.</summary>
    public static byte[] NewBuffer() => GC.AllocateUninitializedArray<byte>(BatchSize + BlockSource.DirectAlignment, pinned: true);

    /// <summary>Reads the source front to back into free buffers, skipping holes; returns the hole bytes skipped.</summary>
    public static long ReadLoop(IBlockSource source, BoundedQueue<byte[]> free, BoundedQueue<ReadBatch> work, Jobs.JobProgress progress, CancellationToken ct)
    {
        long size = source.Size;
        long pos = 0, holes = 0;
        while (pos < size)
        {
            long next = source.NextData(pos);
            if (next >= size) { holes += size - pos; break; }
            long start = next - next % BatchSize;
            if (start < pos) start = pos;
            holes += start - pos;
            int len = (int)Math.Min(BatchSize, size - start);
            ct.ThrowIfCancellationRequested();
            free.TryTake(out var buf);
            int align = AlignedStart(buf!);
            int n = source.ReadBatch(buf.AsMemory(align), start, len);
            if (n != len)
                throw new SourceException($"source '{source.Path}' ended at {start + n} bytes, expected {size}: was it truncated during the backup?");
            pos = start + len;
            progress.DoneBytes = pos;
            work.Add(new ReadBatch(buf!, align, start, len));
        }
        progress.DoneBytes = size;
        return holes;
    }

    private static unsafe int AlignedStart(byte[] pinned)
    {
        long address = (long)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (int)((BlockSource.DirectAlignment - address % BlockSource.DirectAlignment) % BlockSource.DirectAlignment);
    }

    /// <summary>
    /// Reads the whole source once with one reader thread and <paramref name="workers"/> threads that hand
    /// each batch to <paramref name="observer"/>. Memory is bounded by 2×workers+2 batch buffers. Returns hole bytes.
    /// </summary>
    public static long Scan(IBlockSource source, int workers, IBatchObserver observer, Jobs.JobProgress progress, bool dropCache, CancellationToken outerCt)
    {
        workers = Math.Max(1, workers);
        int bufferCount = workers * 2 + 2;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(outerCt);
        var ct = cts.Token;
        var free = new BoundedQueue<byte[]>(bufferCount);
        var work = new BoundedQueue<ReadBatch>(bufferCount);
        for (int i = 0; i < bufferCount; i++) free.Add(NewBuffer());
        using var cancelQueues = ct.Register(() => { free.Cancel(); work.Cancel(); });
        Exception? failure = null;
        long holes = 0;
        void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref failure, e, null);
            try { cts.Cancel(); } catch (ObjectDisposedException) { }
        }

        var reader = new Thread(() =>
        {
            try { holes = ReadLoop(source, free, work, progress, ct); }
            catch (OperationCanceledException) { }
            catch (Exception e) { Fail(e); }
            finally { work.Complete(); }
        }) { Name = "blockrepl-reader", IsBackground = true };
        var threads = new Thread[workers];
        for (int w = 0; w < workers; w++)
        {
            threads[w] = new Thread(() =>
            {
                try
                {
                    while (work.TryTake(out var batch))
                    {
                        observer.OnBatch(batch.Data, batch.Offset, ct);
                        if (dropCache && !source.DirectIo) source.DropCache(batch.Offset, batch.Length);
                        free.Add(batch.Buffer);
                    }
                }
                catch (OperationCanceledException) { }
                catch (Exception e) { Fail(e); }
            }) { Name = $"blockrepl-worker-{w}", IsBackground = true };
        }
        reader.Start();
        foreach (var t in threads) t.Start();
        reader.Join();
        foreach (var t in threads) t.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        outerCt.ThrowIfCancellationRequested();
        return holes;
    }
}
