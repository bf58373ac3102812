using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using Serilog;

namespace BlockRepl.Engine.Jobs;

public sealed record RestoreResult(string Target, long Size, long WrittenBytes, long UnchangedBytes, long ZeroBytes, bool InPlace, double Seconds, double CpuSeconds);

/// <summary>
/// Restores a recovery point to a file or block device. A new file is written sparse under a temporary
/// name and renamed into place only when complete and fsynced. Onto an existing file or device, only the
/// chunks that differ are written (each chunk is compared with the target first). Chunks are read from the
/// packs in coalesced ranges (<see cref="PackRanges"/>), several in flight within a byte budget; every chunk
/// is verified against its SHA-256 before it is written.
/// </summary>
public sealed class RestoreJob(Repo repo, ILogger log, int workers = 0, PackRangeOptions? ranges = null)
{
    /// <summary>Chunks collected from the tree before they are grouped into pack ranges (more = better merging).</summary>
    private const long WindowBytes = 512L << 20;

    public JobProgress Progress { get; } = new();
    private readonly PackRangeOptions _ranges = ranges ?? PackRangeOptions.For(repo.Backend);
    // Readers both wait on the store and verify (SHA-256, LZ4) what arrived: more of them than cores hides latency.
    private readonly int _readers = workers > 0 ? workers : Math.Max((ranges ?? PackRangeOptions.For(repo.Backend)).Parallelism, Environment.ProcessorCount);

    public async Task<RestoreResult> RunAsync(Manifest m, string target, CancellationToken ct = default)
    {
        var sw = Stopwatch.StartNew();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        if (m.ChunkSize != repo.ChunkSize && m.ChunkSize <= 0) throw new RepositoryException("manifest chunk size invalid");
        // Check the recovery point's structure before touching the target: every tree node readable and
        // every chunk present in the index. Missing data fails here, with the target unchanged.
        Progress.Phase = "checking recovery point";
        await CheckStructureAsync(m, ct).ConfigureAwait(false);

        using var t = RestoreTarget.Open(target, m.Size);
        bool inPlace = t.InPlace;
        long zero = 0;
        Progress.TotalBytes = m.Size;
        Progress.Phase = "restoring";
        // Chunks are read in coalesced pack ranges (PackRanges): the walk collects a window of chunks,
        // groups them by pack and offset, and readers fetch the ranges, several in flight, within a byte budget.
        var channel = Channel.CreateBounded<PackRange>(new BoundedChannelOptions(64) { SingleWriter = true });
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var budget = new ByteBudget(_ranges.MaxBytesInFlight);
        var tasks = new Task[_readers];
        for (int w = 0; w < _readers; w++)
        {
            tasks[w] = Task.Run(async () =>
            {
                int maxStored = K4os.Compression.LZ4.LZ4Codec.MaximumOutputSize(m.ChunkSize);
                var data = ArrayPool<byte>.Shared.Rent(m.ChunkSize);
                var existing = inPlace ? ArrayPool<byte>.Shared.Rent(m.ChunkSize) : [];
                try
                {
                    await foreach (var range in channel.Reader.ReadAllAsync(cts.Token).ConfigureAwait(false))
                    {
                        int units = await budget.AcquireAsync(range.Length, cts.Token).ConfigureAwait(false);
                        var buffer = ArrayPool<byte>.Shared.Rent(range.Length);
                        try
                        {
                            var bytes = buffer.AsMemory(0, range.Length);
                            await repo.ReadRangeAsync(range, bytes, cts.Token).ConfigureAwait(false);
                            foreach (var blob in range.Blobs)
                            {
                                long offset = blob.Tag * m.ChunkSize;
                                int len = (int)Math.Min(m.ChunkSize, m.Size - offset);
                                if (blob.Location.RawLength != len)
                                    throw new CorruptDataException($"chunk {blob.Id}", $"length {blob.Location.RawLength}, expected {len}");
                                if (blob.Location.StoredLength > maxStored)
                                    throw new CorruptDataException($"chunk {blob.Id}", $"stored length {blob.Location.StoredLength} exceeds the LZ4 bound {maxStored}");
                                var content = repo.TakeBlob(range, bytes, blob, data).Span;
                                t.Write(content, offset, existing);
                                Progress.AddStored(len);
                            }
                        }
                        finally
                        {
                            ArrayPool<byte>.Shared.Return(buffer);
                            budget.Release(units);
                        }
                    }
                }
                catch
                {
                    cts.Cancel();
                    throw;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(data);
                    if (existing.Length > 0) ArrayPool<byte>.Shared.Return(existing);
                }
            }, cts.Token);
        }

        var cmpBuf = inPlace ? new byte[m.ChunkSize] : [];
        int windowChunks = Math.Max(1024, (int)(WindowBytes / m.ChunkSize));
        var window = new List<BlobRead>(windowChunks);
        async Task FlushAsync()
        {
            if (window.Count == 0) return;
            foreach (var range in PackRanges.Plan(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(window), _ranges))
                await channel.Writer.WriteAsync(range, cts.Token).ConfigureAwait(false);
            window.Clear();
        }
        Task producer = WalkAndFlushAsync();
        async Task WalkAndFlushAsync()
        {
            await TreeWalker.WalkAsync(repo, m,
                async (first, ids, count) =>
                {
                    for (int i = 0; i < count; i++)
                    {
                        if (ids[i].IsZero) { zero += ZeroRange(first + i, 1); continue; }
                        if (!repo.Index.TryGet(ids[i], out var loc))
                            throw new CorruptDataException($"chunk {ids[i]}", "missing from the repository");
                        window.Add(new BlobRead(ids[i], loc, first + i));
                    }
                    if (window.Count >= windowChunks) await FlushAsync().ConfigureAwait(false);
                    Progress.DoneBytes = Math.Min(m.Size, (first + count) * m.ChunkSize);
                },
                (first, count) =>
                {
                    zero += ZeroRange(first, count);
                    Progress.DoneBytes = Math.Min(m.Size, (first + count) * m.ChunkSize);
                    return Task.CompletedTask;
                }, null, cts.Token).ConfigureAwait(false);
            await FlushAsync().ConfigureAwait(false);
        }
        try { await producer.ConfigureAwait(false); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // A worker failed and cancelled the walk: its error (awaited below) is the one to report.
        }
        catch
        {
            cts.Cancel();
            channel.Writer.TryComplete();
            try { await Task.WhenAll(tasks).ConfigureAwait(false); } catch { /* the walk's error wins */ }
            throw;
        }
        finally { channel.Writer.TryComplete(); }
        await Task.WhenAll(tasks).ConfigureAwait(false);

        long ZeroRange(long firstChunk, long count)
        {
            long offset = firstChunk * m.ChunkSize;
            long len = Math.Min(count * m.ChunkSize, m.Size - offset);
            if (len <= 0) return 0;
            t.Zero(offset, len, cmpBuf);
            return len;
        }

        Progress.Phase = "syncing";
        t.Commit();
        Progress.Phase = "done";
        log.Debug("Restored {Id} to {Target}: {Written} bytes written", m.Id, t.FullPath, t.WrittenBytes);
        return new RestoreResult(t.FullPath, m.Size, t.WrittenBytes, t.UnchangedBytes, zero, inPlace, sw.Elapsed.TotalSeconds,
            (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds);
    }

    private async Task CheckStructureAsync(Manifest m, CancellationToken ct)
    {
        long missing = 0;
        ChunkId firstMissing = default;
        await TreeWalker.WalkAsync(repo, m, (first, ids, count) =>
        {
            for (int i = 0; i < count; i++)
                if (!ids[i].IsZero && !repo.Index.Contains(ids[i])) { if (missing++ == 0) firstMissing = ids[i]; }
            return Task.CompletedTask;
        }, (_, _) => Task.CompletedTask, null, ct).ConfigureAwait(false);
        if (missing > 0)
            throw new CorruptDataException($"recovery point {m.Id[..8]}", $"{missing} chunks are missing from the repository (first: {firstMissing}); run 'blockrepl verify'");
    }
}
