using System.Buffers;
using System.Collections.Concurrent;
using BlockRepl.Core;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;
using BlockRepl.Storage;

namespace BlockRepl.Engine.Jobs;

public sealed class VerifyReport
{
    public List<string> Problems { get; } = [];
    public List<string> Notes { get; } = [];
    public int Snapshots { get; set; }
    public int Packs { get; set; }
    public long Blobs { get; set; }
    public long BytesRead { get; set; }
    /// <summary>Recovery point id → problems that make it unrestorable.</summary>
    public SortedDictionary<string, List<string>> Affected { get; } = new(StringComparer.Ordinal);
    public bool Ok => Problems.Count == 0;
}

/// <summary>
/// Checks a repository: config, index files, pack presence and sizes, every manifest and every tree node
/// (always), and with <c>readData</c> every stored blob re-read and re-hashed. Names the recovery points
/// each problem affects. Read-only: never changes the repository.
/// </summary>
public sealed class VerifyJob(IBackend backend)
{
    public JobProgress Progress { get; } = new();

    public async Task<VerifyReport> RunAsync(bool readData, CancellationToken ct = default)
    {
        var report = new VerifyReport();
        var repo = await Repo.OpenAsync(backend, loadIndex: false, ct).ConfigureAwait(false);

        Progress.Phase = "index";
        var indexKeys = new List<string>();
        await foreach (var o in backend.ListAsync(Repo.IndexPrefix, ct).ConfigureAwait(false)) indexKeys.Add(o.Key);
        indexKeys.Sort(StringComparer.Ordinal);
        var packEntries = new Dictionary<PackId, PackIndex>();
        foreach (var key in indexKeys)
        {
            try
            {
                foreach (var p in IndexFile.Deserialize(await backend.ReadAllAsync(key, ct).ConfigureAwait(false), $"index file {key}"))
                {
                    repo.AddPackIndex(p);
                    packEntries[p.Pack] = p;
                }
            }
            catch (Exception e) when (e is CorruptDataException or UnsupportedFormatException)
            {
                report.Problems.Add(e.Message);
            }
        }

        Progress.Phase = "packs";
        var packsOnStore = new Dictionary<string, long>(StringComparer.Ordinal);
        await foreach (var o in backend.ListAsync(Repo.DataPrefix, ct).ConfigureAwait(false)) packsOnStore[o.Key] = o.Length;
        var bad = new ConcurrentDictionary<ChunkId, string>();
        var brokenPacks = new HashSet<PackId>();
        foreach (var (id, p) in packEntries)
        {
            string key = Repo.PackKey(id);
            string? problem = !packsOnStore.TryGetValue(key, out long len) ? $"pack {key} is missing"
                : len != p.PackLength ? $"pack {key} has {len} bytes, the index says {p.PackLength}" : null;
            if (problem is null) continue;
            brokenPacks.Add(id);
            report.Problems.Add(problem);
            foreach (var e in p.Entries) bad.TryAdd(e.Id, problem);
        }
        int unindexed = packsOnStore.Keys.Count(k => !packEntries.ContainsKey(PackIdFromKey(k)));
        if (unindexed > 0)
            report.Notes.Add($"{unindexed} pack(s) are not in the index (left by an interrupted backup); no recovery point uses them");
        report.Packs = packEntries.Count;
        report.Blobs = packEntries.Values.Sum(p => (long)p.Entries.Length);

        if (readData)
        {
            Progress.Phase = "reading data";
            Progress.TotalBytes = packEntries.Values.Sum(p => p.PackLength);
            long bytesRead = 0;
            var problems = new ConcurrentBag<string>();
            var readable = packEntries.Values.Where(p => !brokenPacks.Contains(p.Pack)).ToList();
            await Parallel.ForEachAsync(readable, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(2, Environment.ProcessorCount), CancellationToken = ct }, async (p, c) =>
            {
                string key = Repo.PackKey(p.Pack);
                await CheckPackTableAsync(key, p, problems, c).ConfigureAwait(false);
                // The blobs of a pack are read in a few large ranges (PackRanges), not one GET each.
                var blobs = new BlobRead[p.Entries.Length];
                for (int i = 0; i < blobs.Length; i++)
                {
                    var e = p.Entries[i];
                    blobs[i] = new BlobRead(e.Id, new BlobLocation(0, e.Offset, e.StoredLength, e.RawLength, e.Type, e.Compression, e.StoredChecksum), i);
                }
                byte[] data = ArrayPool<byte>.Shared.Rent(1 << 20);
                try
                {
                    foreach (var range in PackRanges.Plan(blobs, PackRangeOptions.For(backend)))
                    {
                        byte[] buffer = ArrayPool<byte>.Shared.Rent(range.Length);
                        try
                        {
                            var bytes = buffer.AsMemory(0, range.Length);
                            string? rangeProblem = null;
                            try { await backend.ReadExactlyAtAsync(key, range.Offset, bytes, c).ConfigureAwait(false); }
                            catch (StorageException ex) { rangeProblem = ex.Message; problems.Add(ex.Message); }
                            foreach (var b in range.Blobs)
                            {
                                if (rangeProblem is not null) { bad.TryAdd(b.Id, rangeProblem); continue; }
                                try
                                {
                                    if (b.Location.RawLength > data.Length || b.Location.RawLength < 0)
                                        throw new CorruptDataException($"blob {b.Id} in {key}", $"raw length {b.Location.RawLength} is not a valid chunk length");
                                    var stored = range.Slice(bytes, b).Span;
                                    if (b.Location.Compression == Core.Compression.BlobCompression.None) stored.CopyTo(data);
                                    Repo.VerifyBlob(b.Id, b.Location, stored, data.AsSpan(0, b.Location.RawLength), key);
                                }
                                catch (CorruptDataException ex)
                                {
                                    problems.Add(ex.Message);
                                    bad.TryAdd(b.Id, ex.Message);
                                }
                            }
                        }
                        finally { ArrayPool<byte>.Shared.Return(buffer); }
                        long rangeStored = range.Blobs.Sum(b => (long)b.Location.StoredLength);
                        Progress.DoneBytes = Interlocked.Add(ref bytesRead, rangeStored);
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(data);
                }
            }).ConfigureAwait(false);
            report.Problems.AddRange(problems.OrderBy(x => x, StringComparer.Ordinal));
            report.BytesRead = bytesRead;
        }

        Progress.Phase = "recovery points";
        var manifests = await repo.ListSnapshotsAsync((key, e) => report.Problems.Add(e.Message), ct).ConfigureAwait(false);
        report.Snapshots = manifests.Count;
        var cleanNodes = new HashSet<ChunkId>();
        foreach (var m in manifests)
        {
            var found = new List<string>();
            try
            {
                await WalkAsync(repo, m, ChunkId.Parse(m.Root), m.TreeLevels - 1, bad, cleanNodes, found, ct).ConfigureAwait(false);
            }
            catch (FormatException e) { found.Add($"manifest {m.Id}: {e.Message}"); }
            if (found.Count > 0)
            {
                report.Affected[m.Id] = found;
                foreach (var f in found.Where(f => !report.Problems.Contains(f))) report.Problems.Add(f);
            }
        }
        Progress.Phase = "done";
        return report;
    }

    private static PackId PackIdFromKey(string key)
    {
        string name = Path.GetFileNameWithoutExtension(key);
        try { return PackId.Parse(name); } catch (FormatException) { return default; }
    }

    private async Task CheckPackTableAsync(string key, PackIndex p, ConcurrentBag<string> problems, CancellationToken ct)
    {
        try
        {
            var header = new byte[PackFormat.HeaderSize];
            await backend.ReadExactlyAtAsync(key, 0, header, ct).ConfigureAwait(false);
            PackFormat.CheckHeader(header, $"pack {key}");
            // The table and trailer in one read, sized by the index's entry count; the trailer decides.
            long tailLength = Math.Min(p.PackLength - PackFormat.HeaderSize, (long)p.Entries.Length * BlobEntry.Size + PackFormat.TrailerSize);
            var tail = new byte[Math.Max(PackFormat.TrailerSize, tailLength)];
            await backend.ReadExactlyAtAsync(key, p.PackLength - tail.Length, tail, ct).ConfigureAwait(false);
            var trailer = tail.AsSpan(tail.Length - PackFormat.TrailerSize).ToArray();
            var (tableOffset, count, sum) = PackFormat.ReadTrailer(trailer, p.PackLength, $"pack {key}");
            byte[] table;
            if (tableOffset == p.PackLength - tail.Length) table = tail[..^PackFormat.TrailerSize];
            else
            {
                table = new byte[count * BlobEntry.Size];
                await backend.ReadExactlyAtAsync(key, tableOffset, table, ct).ConfigureAwait(false);
            }
            var entries = PackFormat.ReadTable(table, trailer, count, sum, tableOffset, $"pack {key}");
            if (!entries.AsSpan().SequenceEqual(p.Entries))
                problems.Add($"pack {key}: its table does not match the index");
        }
        catch (Exception e) when (e is CorruptDataException or StorageException or UnsupportedFormatException)
        {
            problems.Add(e.Message);
        }
    }

    private static async Task<bool> WalkAsync(Repo repo, Manifest m, ChunkId id, int level, ConcurrentDictionary<ChunkId, string> bad,
        HashSet<ChunkId> cleanNodes, List<string> found, CancellationToken ct, byte[]? prefetched = null)
    {
        if (id.IsZero || cleanNodes.Contains(id)) return true;
        if (bad.TryGetValue(id, out var why)) { found.Add(why); return false; }
        byte[] node;
        try { node = prefetched ?? await repo.ReadTreeNodeAsync(id, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is CorruptDataException or StorageException)
        {
            found.Add(e.Message);
            return false;
        }
        var children = new ChunkId[level == 0 ? m.LeafFanout : m.NodeFanout];
        try
        {
            if (TreeNode.Decode(node, children, $"tree node {id}") != level)
            { found.Add($"tree node {id}: wrong level"); return false; }
        }
        catch (CorruptDataException e) { found.Add(e.Message); return false; }
        bool clean = true;
        var nodes = level == 0 ? null
            : await TreeWalker.PrefetchAsync(repo, children.Where(c => !cleanNodes.Contains(c) && !bad.ContainsKey(c)).ToArray(), ct).ConfigureAwait(false);
        foreach (var child in children)
        {
            if (child.IsZero) continue;
            if (level == 0)
            {
                if (bad.TryGetValue(child, out var reason)) { found.Add(reason); clean = false; }
                else if (!repo.Index.Contains(child)) { found.Add($"chunk {child} is missing from the repository"); clean = false; }
            }
            else if (!await WalkAsync(repo, m, child, level - 1, bad, cleanNodes, found, ct, nodes!.GetValueOrDefault(child)).ConfigureAwait(false)) clean = false;
        }
        if (clean) cleanNodes.Add(id);
        return clean;
    }
}
