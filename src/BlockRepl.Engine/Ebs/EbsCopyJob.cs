using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using BlockRepl.Engine.Jobs;
using BlockRepl.Native.Linux;
using BlockRepl.Storage.Ebs;
using Serilog;

namespace BlockRepl.Engine.Ebs;

public sealed record EbsCopyResult(string SourceSnapshotId, string SnapshotId, string? ParentSnapshotId, string? SourceParentSnapshotId,
    string Mode, int BlocksCopied, int ZeroBlocks, long VolumeSizeGiB, string Status, double Seconds);

/// <summary>Which source snapshots were already copied to which destination snapshots (docs/ebs.md §5).</summary>
public sealed class EbsCopyState
{
    public int Version { get; set; } = 1;
    public List<EbsCopyPair> Pairs { get; set; } = [];
}

public sealed class EbsCopyPair
{
    public required string Source { get; init; }
    public required string Destination { get; init; }
    public DateTimeOffset Time { get; init; }
}

/// <summary>
/// Copies an EBS snapshot to another Region or account endpoint (the seed's Region A → Region B DR). The first copy
/// moves every block the snapshot lists; later copies find the newest already-copied snapshot of the same lineage
/// (ListChangedBlocks answers UNRELATED_SNAPSHOTS otherwise) and move only the blocks changed since it, chained with
/// ParentSnapshotId in the destination. The ClientToken is derived from the source snapshot and the destination, so an
/// interrupted copy resumes the same pending snapshot; every block read is verified against its SHA-256.
/// </summary>
public sealed class EbsCopyJob(IEbsClient from, IEbsClient to, string stateDir, ILogger log, int workers = 16)
{
    private const int BlockSize = EbsLimits.BlockSize;
    public JobProgress Progress { get; } = new();
    /// <summary>How many recent copies are tried as the incremental base.</summary>
    private const int BaseCandidates = 8;

    public async Task<EbsCopyResult> RunAsync(string snapshotId, EbsTargetOptions options, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        Directory.CreateDirectory(stateDir);
        string statePath = Path.Combine(stateDir, StateName());
        var state = Load(statePath);
        var done = state.Pairs.FindLast(p => p.Source == snapshotId);
        if (done is not null)
            return new EbsCopyResult(snapshotId, done.Destination, null, null, "ALREADY_COPIED", 0, 0, 0, "completed", 0);

        // Find the incremental base: the newest copied snapshot that ListChangedBlocks relates to this one.
        Progress.Phase = "finding the incremental base";
        EbsCopyPair? basePair = null;
        EbsChangedBlockPage? firstChanged = null;
        foreach (var p in state.Pairs.AsEnumerable().Reverse().Take(BaseCandidates))
        {
            try
            {
                firstChanged = await from.ListChangedBlocksAsync(p.Source, snapshotId, maxResults: 10000, ct: ct).ConfigureAwait(false);
                basePair = p;
                break;
            }
            catch (EbsException e) when (e.ErrorType == "ValidationException") { log.Debug("EBS copy: {Base} is not a base: {Error}", p.Source, e.Message); }
        }
        EbsBlockPage? firstBlocks = null;
        if (basePair is null)
        {
            try { firstBlocks = await from.ListSnapshotBlocksAsync(snapshotId, maxResults: 10000, ct: ct).ConfigureAwait(false); }
            catch (EbsException e) when (e.IsNotFound)
            { throw new NotFoundException($"EBS snapshot {snapshotId} not found at {from.Endpoint} (or not completed yet)"); }
        }
        long gib = EbsVolume.BytesToGiB(EbsVolume.GiBToBytes(firstChanged?.VolumeSizeGiB ?? firstBlocks!.VolumeSizeGiB));
        string token = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"blockrepl-copy\n{snapshotId}\n{to.Endpoint}\n{to.Region}")))[..48];
        var info = await to.StartSnapshotAsync(new StartSnapshotRequest
        {
            VolumeSizeGiB = gib,
            ParentSnapshotId = basePair?.Destination,
            ClientToken = token,
            Description = options.Description ?? $"blockrepl copy of {snapshotId} from {from.Region}",
            Tags = [.. options.Tags, new EbsTag("blockrepl:copy-of", snapshotId), new EbsTag("blockrepl:copy-from", from.Region)],
            Encrypted = basePair is null && (options.Encrypted || options.KmsKeyArn is not null) ? true : null,
            KmsKeyArn = basePair is null ? options.KmsKeyArn : null,
            TimeoutMinutes = options.TimeoutMinutes,
        }, ct).ConfigureAwait(false);
        string dest = info.SnapshotId;
        string mode = basePair is null ? "FULL" : "INCREMENTAL";
        log.Information("EBS copy: {Mode} {Src} -> {Dest} ({Gib} GiB{Parent})", mode, snapshotId, dest, gib, basePair is null ? "" : ", parent " + basePair.Destination);

        string status = info.Status;
        int copied = 0, zeros = 0;
        if (status == "pending")
        {
            // Written blocks (a bitmap) and their digests (a temporary file at index × 32), for ChangedBlocksCount and
            // LINEAR: memory stays bounded whatever the volume size.
            long blockCount = gib * EbsLimits.BlocksPerGiB;
            var written = new ulong[(blockCount + 63) / 64];
            using var digests = File.OpenHandle(Path.Combine(stateDir, $"ebscopy-{dest}.digests"), FileMode.Create, FileAccess.ReadWrite,
                FileShare.None, FileOptions.DeleteOnClose);
            var channel = Channel.CreateBounded<(int Index, string? Token)>(new BoundedChannelOptions(Math.Max(64, workers * 4)) { SingleWriter = true });
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            Progress.Phase = "copying blocks";
            Progress.TotalBytes = gib << 30;
            var tasks = new Task[Math.Max(1, workers)];
            for (int w = 0; w < tasks.Length; w++)
            {
                tasks[w] = Task.Run(async () =>
                {
                    var buf = ArrayPool<byte>.Shared.Rent(BlockSize);
                    var sha = new byte[32];
                    try
                    {
                        await foreach (var (index, blockToken) in channel.Reader.ReadAllAsync(cts.Token).ConfigureAwait(false))
                        {
                            int n = 0;
                            if (blockToken is not null) n = await from.GetSnapshotBlockAsync(snapshotId, index, blockToken, buf, cts.Token).ConfigureAwait(false);
                            buf.AsSpan(n, BlockSize - n).Clear();
                            SHA256.HashData(buf.AsSpan(0, BlockSize), sha);
                            await to.PutSnapshotBlockAsync(dest, index, buf.AsMemory(0, BlockSize), sha, null, cts.Token).ConfigureAwait(false);
                            if (index < 0 || index >= blockCount)
                                throw new Core.CorruptDataException($"EBS snapshot {snapshotId}", $"lists block {index} outside its {gib} GiB volume");
                            RandomAccess.Write(digests, sha, index * 32L);
                            Interlocked.Or(ref written[index >> 6], 1UL << (index & 63));
                            if (blockToken is null) Interlocked.Increment(ref zeros);
                            Interlocked.Increment(ref copied);
                            Progress.AddStored(BlockSize);
                            Progress.DoneBytes = Math.Max(Progress.DoneBytes, ((long)index + 1) * BlockSize);
                        }
                    }
                    catch
                    {
                        cts.Cancel();
                        throw;
                    }
                    finally { ArrayPool<byte>.Shared.Return(buf); }
                }, cts.Token);
            }
            try
            {
                if (basePair is not null)
                {
                    var page = firstChanged!;
                    while (true)
                    {
                        // A block only in the base snapshot reads as zeros in this one.
                        foreach (var b in page.ChangedBlocks) await channel.Writer.WriteAsync((b.BlockIndex, b.SecondBlockToken), cts.Token).ConfigureAwait(false);
                        if (page.NextToken is null) break;
                        page = await from.ListChangedBlocksAsync(basePair.Source, snapshotId, pageToken: page.NextToken, maxResults: 10000, ct: cts.Token).ConfigureAwait(false);
                    }
                }
                else
                {
                    var page = firstBlocks!;
                    while (true)
                    {
                        foreach (var b in page.Blocks) await channel.Writer.WriteAsync((b.BlockIndex, b.BlockToken), cts.Token).ConfigureAwait(false);
                        if (page.NextToken is null) break;
                        page = await from.ListSnapshotBlocksAsync(snapshotId, pageToken: page.NextToken, maxResults: 10000, ct: cts.Token).ConfigureAwait(false);
                    }
                }
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { /* a worker failed: reported below */ }
            finally { channel.Writer.TryComplete(); }
            await Task.WhenAll(tasks).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();

            using var linear = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            int count = 0;
            var digest = new byte[32];
            for (long i = 0; i < blockCount; i++)
            {
                if ((written[i >> 6] & (1UL << (int)(i & 63))) == 0) continue;
                RandomAccess.Read(digests, digest, i * 32);
                linear.AppendData(digest);
                count++;
            }
            Progress.Phase = "completing";
            status = await to.CompleteSnapshotAsync(dest, count, linear.GetHashAndReset(), ct).ConfigureAwait(false);
        }
        if (options.Wait && status != "completed")
        {
            await to.WaitForCompletedAsync(dest, options.WaitTimeout, e => Progress.Phase = $"waiting for {dest} to complete ({e.TotalSeconds:0} s)", ct).ConfigureAwait(false);
            status = "completed";
        }
        if (status == "completed")
        {
            state.Pairs.Add(new EbsCopyPair { Source = snapshotId, Destination = dest, Time = DateTimeOffset.UtcNow });
            Save(statePath, state);
        }
        Progress.Phase = "done";
        return new EbsCopyResult(snapshotId, dest, basePair?.Destination, basePair?.Source, mode, copied, zeros, gib, status, Math.Round(sw.Elapsed.TotalSeconds, 3));
    }

    private string StateName()
    {
        var h = SHA256.HashData(Encoding.UTF8.GetBytes($"{from.Region}\n{from.Endpoint}\n{to.Region}\n{to.Endpoint}"));
        return $"ebscopy-{from.Region}-{to.Region}-{Convert.ToHexStringLower(h.AsSpan(0, 12))}.json";
    }

    private static EbsCopyState Load(string path)
    {
        if (!File.Exists(path)) return new EbsCopyState();
        try { return JsonSerializer.Deserialize(File.ReadAllBytes(path), EbsCopyJsonContext.Default.EbsCopyState) ?? new EbsCopyState(); }
        catch (JsonException e) { throw new RepositoryException($"EBS copy state '{path}' is corrupt ({e.Message}); move it away to copy in full again"); }
    }

    private static void Save(string path, EbsCopyState state) =>
        StateFile.WriteAtomically(path, fs => JsonSerializer.Serialize(fs, state, EbsCopyJsonContext.Default.EbsCopyState));
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(EbsCopyState))]
internal sealed partial class EbsCopyJsonContext : JsonSerializerContext;
