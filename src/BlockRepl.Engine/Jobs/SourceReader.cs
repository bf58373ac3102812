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
/// Batches start on 512 KiB block boundaries and never cross a <see cref="SourceReader.BatchSize"/> boundary.
/// </summary>
public interface IBatchObserver
{
    /// <summary>The change-tracking checkpoint the observer's map was taken at (see <see cref="ITrackedSource"/>), or null.</summary>
    string? TrackingBase { get; }

    /// <summary>Before the first batch: what this run reads. A full read skips holes (they read as zeros); a
    /// changed-only read passes every changed range, holes included, and leaves the rest unchanged.</summary>
    void OnReadPlan(ReadPlan plan);

    void OnBatch(ReadOnlySpan<byte> data, long offset, CancellationToken ct);
}

/// <summary>The single sequential reader every scan of a source uses (one reader per device: ref/perf.md §5).</summary>
internal static class SourceReader
{
    /// <summary>Read unit: four 512 KiB EBS blocks.</summary>
    public const int BatchSize = 4 * Core.Formats.ChunkGeometry.BlockSize;

    /// <summary>Pinned buffers with room to start on a page boundary: O_DIRECT reads DMA straight into them.</summary>
    public static byte[] NewBuffer() => GC.AllocateUninitializedArray<byte>(BatchSize + BlockSource.DirectAlignment, pinned: true);

    /// <summary>
    /// Reads what <paramref name="plan"/> asks for, front to back, into free buffers: every data range of the source
    /// (holes skipped and counted), or only the changed ranges (holes inside them passed on as zero batches, since a
    /// range that became zero must replicate as zeros). Returns the hole bytes skipped.
    /// </summary>
    public static long ReadLoop(IBlockSource source, ReadPlan plan, BoundedQueue<byte[]> free, BoundedQueue<ReadBatch> work, Jobs.JobProgress progress, CancellationToken ct)
    {
        long size = source.Size;
        if (plan.Ranges is null)
        {
            long holes = ReadRange(source, 0, size, zeroFillHoles: false, BatchAlignment, 0, free, work, progress, ct);
            progress.DoneBytes = size;
            return holes;
        }
        long done = 0;
        // Changed ranges are many small scattered reads: where the source allows, several are in flight at once
        // (each hands its batch to the workers when it lands; batches are independent, so their order is free).
        using var inFlight = source.MaxConcurrentReads > 1 ? new ConcurrentReads(source.MaxConcurrentReads) : null;
        foreach (var r in plan.Ranges)
        {
            if (r.Offset < 0 || r.End > size || r.Offset % plan.Alignment != 0)
                throw new SourceException($"source '{source.Path}' reported a changed range {r.Offset}+{r.Length} outside its {size} bytes or off the {plan.Alignment}-byte grid");
            ReadRange(source, r.Offset, r.End, zeroFillHoles: true, plan.Alignment, done, free, work, progress, ct, inFlight);
            done += r.Length;
        }
        inFlight?.WaitAll();
        progress.DoneBytes = done;
        return 0;
    }

    /// <summary>Batches of a full read start on this boundary (a 512 KiB EBS block: also a multiple of every chunk size).</summary>
    public const int BatchAlignment = Core.Formats.ChunkGeometry.BlockSize;

    private static long ReadRange(IBlockSource source, long from, long to, bool zeroFillHoles, int alignment, long doneBefore,
        BoundedQueue<byte[]> free, BoundedQueue<ReadBatch> work, Jobs.JobProgress progress, CancellationToken ct, ConcurrentReads? inFlight = null)
    {
        long pos = from, holes = 0;
        while (pos < to)
        {
            long next = Math.Min(source.NextData(pos), to);
            long start;
            bool zero = false;
            if (next >= to && !zeroFillHoles) { holes += to - pos; break; }
            if (zeroFillHoles)
            {
                // [pos, next) reads as zeros: whole aligned units of it are passed on without a read.
                start = pos;
                next -= next % alignment;
                zero = next > pos;
            }
            else
            {
                start = next - next % BatchSize;
                if (start < pos) start = pos;
                holes += start - pos;
            }
            // Batches end on BatchSize boundaries (and at a zero run's end), so full reads keep their alignment.
            long end = Math.Min(to, start - start % BatchSize + BatchSize);
            if (zero) end = Math.Min(end, next);
            int len = (int)(end - start);
            ct.ThrowIfCancellationRequested();
            free.TryTake(out var buf);
            int align = AlignedStart(buf!);
            pos = end;
            progress.DoneBytes = doneBefore + (pos - from);
            if (zero)
            {
                buf.AsSpan(align, len).Clear();
                work.Add(new ReadBatch(buf!, align, start, len));
            }
            else if (inFlight is not null)
            {
                inFlight.Reserve();
                inFlight.Start(ReadOneAsync(source, buf!, align, start, len, work));
            }
            else
            {
                int n = source.ReadBatch(buf.AsMemory(align), start, len);
                Queue(source, n, buf!, align, start, len, work);
            }
        }
        return holes;
    }

    private static async Task ReadOneAsync(IBlockSource source, byte[] buf, int align, long start, int len, BoundedQueue<ReadBatch> work)
    {
        int n = await source.ReadBatchAsync(buf.AsMemory(align), start, len).ConfigureAwait(false);
        Queue(source, n, buf, align, start, len, work);
    }

    private static void Queue(IBlockSource source, int n, byte[] buf, int align, long start, int len, BoundedQueue<ReadBatch> work)
    {
        if (n != len)
            throw new SourceException($"source '{source.Path}' ended at {start + n} bytes, expected {source.Size}: was it truncated during the backup?");
        work.Add(new ReadBatch(buf, align, start, len));
    }

    /// <summary>At most N reads in flight (asynchronous: no thread waits for the network); the first failure is rethrown to the reader.</summary>
    private sealed class ConcurrentReads(int limit) : IDisposable
    {
        private readonly SemaphoreSlim _slots = new(limit, limit);
        private readonly int _limit = limit;
        private Exception? _failure;

        /// <summary>Call with a slot taken by <see cref="Reserve"/>; the slot is released when <paramref name="read"/> ends.</summary>
        public void Start(Task read)
        {
            read.ContinueWith(static (t, state) =>
            {
                var self = (ConcurrentReads)state!;
                if (t.Exception is { } e) Interlocked.CompareExchange(ref self._failure, e.InnerException ?? e, null);
                self._slots.Release();
            }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        /// <summary>Waits for a free slot (before the buffer is handed to a read).</summary>
        public void Reserve()
        {
            _slots.Wait();
            if (_failure is null) return;
            _slots.Release(); // Dispose waits for every slot
            ThrowIfFailed();
        }

        public void WaitAll()
        {
            for (int i = 0; i < _limit; i++) _slots.Wait();
            _slots.Release(_limit);
            ThrowIfFailed();
        }

        private void ThrowIfFailed()
        {
            if (_failure is { } f) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(f).Throw();
        }

        public void Dispose()
        {
            // Never release buffers that a read may still be writing into: wait for every read first.
            for (int i = 0; i < _limit; i++) _slots.Wait();
            _slots.Dispose();
        }
    }

    internal static unsafe int AlignedStart(byte[] pinned)
    {
        long address = (long)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
        return (int)((BlockSource.DirectAlignment - address % BlockSource.DirectAlignment) % BlockSource.DirectAlignment);
    }

    /// <summary>
    /// Reads the whole source once with one reader thread and <paramref name="workers"/> threads that hand
    /// each batch to <paramref name="observer"/>. Memory is bounded by 2×workers+2 batch buffers. Returns hole bytes.
    /// </summary>
    public static long Scan(IBlockSource source, ReadPlan plan, int workers, IBatchObserver observer, Jobs.JobProgress progress, bool dropCache, CancellationToken outerCt)
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
            try { holes = ReadLoop(source, plan, free, work, progress, ct); }
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
