using System.Buffers;
using System.Diagnostics;
using System.Threading.Channels;
using BlockRepl.Engine.Jobs;
using BlockRepl.Storage.Ebs;
using Serilog;

namespace BlockRepl.Engine.Ebs;

public sealed record EbsRestoreResult(string SnapshotId, string Target, long Size, long Blocks, long WrittenBytes, long UnchangedBytes, bool InPlace, double Seconds);

/// <summary>
/// Restores an EBS snapshot to a file or block device: ListSnapshotBlocks page by page (bounded memory whatever
/// the volume size), GetSnapshotBlock with the SHA-256 of every block verified by the client, sparse writes on a
/// new file and only differing ranges on an existing one. Blocks the snapshot does not list read as zeros.
/// </summary>
public sealed class EbsRestoreJob(IEbsClient client, ILogger log, int workers = 16)
{
    private const int BlockSize = EbsLimits.BlockSize;
    public JobProgress Progress { get; } = new();

    /// <param name="size">The volume's size in bytes; null means the snapshot's size in GiB.</param>
    public async Task<EbsRestoreResult> RunAsync(string snapshotId, string target, long? size, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        Progress.Phase = "listing snapshot blocks";
        EbsBlockPage first;
        try { first = await client.ListSnapshotBlocksAsync(snapshotId, maxResults: 10000, ct: ct).ConfigureAwait(false); }
        catch (EbsException e) when (e.IsNotFound || e.Reason == "INVALID_SNAPSHOT_ID")
        {
            throw new NotFoundException($"EBS snapshot {snapshotId} not found in {client.Region} (or not completed yet): {e.Message}");
        }
        long volumeBytes = size ?? EbsVolume.GiBToBytes(first.VolumeSizeGiB);
        long blockCount = (volumeBytes + BlockSize - 1) / BlockSize;
        Progress.TotalBytes = volumeBytes;

        using var target0 = RestoreTarget.Open(target, volumeBytes);
        var t = target0;
        var listed = new ulong[(blockCount + 63) / 64];
        long blocks = 0;
        Progress.Phase = "restoring";
        var channel = Channel.CreateBounded<EbsBlock>(new BoundedChannelOptions(Math.Max(64, workers * 4)) { SingleWriter = true });
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var tasks = new Task[Math.Max(1, workers)];
        for (int w = 0; w < tasks.Length; w++)
        {
            tasks[w] = Task.Run(async () =>
            {
                var buf = ArrayPool<byte>.Shared.Rent(BlockSize);
                var scratch = ArrayPool<byte>.Shared.Rent(BlockSize);
                try
                {
                    await foreach (var b in channel.Reader.ReadAllAsync(cts.Token).ConfigureAwait(false))
                    {
                        int n = await client.GetSnapshotBlockAsync(snapshotId, b.BlockIndex, b.BlockToken, buf, cts.Token).ConfigureAwait(false);
                        long offset = (long)b.BlockIndex * BlockSize;
                        int len = (int)Math.Min(Math.Min(n, BlockSize), volumeBytes - offset);
                        t.Write(buf.AsSpan(0, len), offset, scratch);
                        Progress.AddStored(len);
                        Progress.DoneBytes = Math.Max(Progress.DoneBytes, offset + len);
                    }
                }
                catch
                {
                    cts.Cancel();
                    throw;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buf);
                    ArrayPool<byte>.Shared.Return(scratch);
                }
            }, cts.Token);
        }
        try
        {
            var page = first;
            while (true)
            {
                foreach (var b in page.Blocks)
                {
                    if (b.BlockIndex < 0 || b.BlockIndex >= blockCount)
                    {
                        if (size is not null && b.BlockIndex >= blockCount) continue;   // beyond the bytes asked for
                        throw new Core.CorruptDataException($"EBS snapshot {snapshotId}", $"lists block {b.BlockIndex} outside its volume of {blockCount} blocks");
                    }
                    listed[b.BlockIndex >> 6] |= 1UL << (b.BlockIndex & 63);
                    blocks++;
                    await channel.Writer.WriteAsync(b, cts.Token).ConfigureAwait(false);
                }
                if (page.NextToken is null) break;
                page = await client.ListSnapshotBlocksAsync(snapshotId, pageToken: page.NextToken, maxResults: 10000, ct: cts.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { /* a worker failed: its error is reported below */ }
        finally { channel.Writer.TryComplete(); }
        await Task.WhenAll(tasks).ConfigureAwait(false);
        ct.ThrowIfCancellationRequested();

        if (t.InPlace)
        {
            Progress.Phase = "clearing blocks the snapshot does not have";
            var scratch = new byte[BlockSize];
            for (long i = 0; i < blockCount; i++)
                if ((listed[i >> 6] & (1UL << (int)(i & 63))) == 0) t.Zero(i * BlockSize, BlockSize, scratch);
        }
        Progress.Phase = "syncing";
        t.Commit();
        Progress.Phase = "done";
        log.Debug("Restored EBS {Id} to {Target}: {Blocks} blocks", snapshotId, t.FullPath, blocks);
        return new EbsRestoreResult(snapshotId, t.FullPath, volumeBytes, blocks, t.WrittenBytes, t.UnchangedBytes, t.InPlace, Math.Round(sw.Elapsed.TotalSeconds, 3));
    }
}

/// <summary>Volume-size facts of EBS.</summary>
public static class EbsVolume
{
    /// <summary>
    /// List responses document VolumeSize in GiB, but an AWS CLI example shows bytes (ref/ebs.md §7): a value
    /// above the 64 TiB maximum in GiB is taken as bytes.
    /// </summary>
    public static long GiBToBytes(long volumeSize) => volumeSize > EbsLimits.MaxVolumeSizeGiB ? volumeSize : volumeSize << 30;

    public static long BytesToGiB(long bytes) => Math.Max(1, (bytes + (1L << 30) - 1) >> 30);
}
