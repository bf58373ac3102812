using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;
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
        string full = Path.GetFullPath(target);
        FileStat st;
        try { st = LinuxFile.Stat(full); }
        catch (NativeIoException e) { throw new TargetException($"cannot use target '{target}': {e.Message}", e); }

        // Check the recovery point's structure before touching the target: every tree node readable and
        // every chunk present in the index. Missing data fails here, with the target unchanged.
        Progress.Phase = "checking recovery point";
        await CheckStructureAsync(m, ct).ConfigureAwait(false);

        bool inPlace;
        bool isDevice = false;
        string writePath = full;
        SafeFileHandle handle;
        switch (st.Kind)
        {
            case FileKind.Directory:
                throw new TargetException($"target '{target}' is a directory; give a file or block device path");
            case FileKind.BlockDevice:
                handle = OpenTarget(full, FileMode.Open, target);
                long devSize = LinuxFile.GetBlockDeviceSize(handle, full);
                if (devSize < m.Size)
                {
                    handle.Dispose();
                    throw new TargetException($"target device '{target}' is too small: {devSize} bytes, the recovery point needs {m.Size}");
                }
                inPlace = true;
                isDevice = true;
                break;
            case FileKind.Regular:
                handle = OpenTarget(full, FileMode.Open, target);
                if (RandomAccess.GetLength(handle) != m.Size) RandomAccess.SetLength(handle, m.Size);
                inPlace = true;
                break;
            case FileKind.Missing:
                string? dir = Path.GetDirectoryName(full);
                if (dir is null || !Directory.Exists(dir))
                    throw new TargetException($"target directory '{dir}' does not exist");
                writePath = full + ".blockrepl-partial";
                handle = OpenTarget(writePath, FileMode.Create, target);
                RandomAccess.SetLength(handle, m.Size);
                inPlace = false;
                break;
            default:
                throw new TargetException($"target '{target}' is not a regular file or block device");
        }

        long written = 0, unchanged = 0, zero = 0;
        Progress.TotalBytes = m.Size;
        Progress.Phase = "restoring";
        try
        {
            using (handle)
            {
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
                        var existing = inPlace ? ArrayPool<byte>.Shared.Rent(m.ChunkSize) : null;
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
                                        if (inPlace && BlockSource.ReadFully(handle, existing.AsSpan(0, len), offset) == len && existing.AsSpan(0, len).SequenceEqual(content))
                                            Interlocked.Add(ref unchanged, len);
                                        else
                                        {
                                            RandomAccess.Write(handle, content, offset);
                                            Interlocked.Add(ref written, len);
                                        }
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
                            if (existing is not null) ArrayPool<byte>.Shared.Return(existing);
                        }
                    }, cts.Token);
                }

                var zeroBuf = inPlace ? new byte[m.ChunkSize] : null;
                var cmpBuf = inPlace ? new byte[m.ChunkSize] : null;
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
                                if (ids[i].IsZero) { zero += ZeroRange(handle, first + i, 1); continue; }
                                if (!repo.Index.TryGet(ids[i], out var loc))
                                    throw new CorruptDataException($"chunk {ids[i]}", "missing from the repository");
                                window.Add(new BlobRead(ids[i], loc, first + i));
                            }
                            if (window.Count >= windowChunks) await FlushAsync().ConfigureAwait(false);
                            Progress.DoneBytes = Math.Min(m.Size, (first + count) * m.ChunkSize);
                        },
                        (first, count) =>
                        {
                            zero += ZeroRange(handle, first, count);
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

                long ZeroRange(SafeFileHandle h, long firstChunk, long count)
                {
                    long offset = firstChunk * m.ChunkSize;
                    long len = Math.Min(count * m.ChunkSize, m.Size - offset);
                    if (!inPlace || len <= 0) return Math.Max(0, len);
                    if (!isDevice && LinuxFile.TryPunchHole(h, offset, len)) return len;
                    // Device (or no hole punching): write zeros only where the target is not already zero.
                    for (long o = offset; o < offset + len; o += m.ChunkSize)
                    {
                        int l = (int)Math.Min(m.ChunkSize, offset + len - o);
                        if (BlockSource.ReadFully(h, cmpBuf.AsSpan(0, l), o) == l && ZeroDetector.IsAllZero(cmpBuf.AsSpan(0, l))) continue;
                        RandomAccess.Write(h, zeroBuf.AsSpan(0, l), o);
                        Interlocked.Add(ref written, l);
                    }
                    return len;
                }

                Progress.Phase = "syncing";
                LinuxFile.Fsync(handle, writePath);
            }
            if (!inPlace)
            {
                File.Move(writePath, full, overwrite: false);
                LinuxFile.FsyncDirectory(Path.GetDirectoryName(full)!);
            }
        }
        catch
        {
            if (!inPlace) { try { File.Delete(writePath); } catch (IOException) { } }
            throw;
        }
        Progress.Phase = "done";
        log.Debug("Restored {Id} to {Target}: {Written} bytes written", m.Id, full, written);
        return new RestoreResult(full, m.Size, written, unchanged, zero, inPlace, sw.Elapsed.TotalSeconds,
            (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds);
    }

    private static SafeFileHandle OpenTarget(string path, FileMode mode, string shown)
    {
        try { return File.OpenHandle(path, mode, FileAccess.ReadWrite, FileShare.Read); }
        catch (UnauthorizedAccessException e) { throw new TargetException($"cannot write target '{shown}': permission denied", e); }
        catch (IOException e) { throw new TargetException($"cannot write target '{shown}': {e.Message}", e); }
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
