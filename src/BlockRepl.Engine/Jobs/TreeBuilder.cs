using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;

namespace BlockRepl.Engine.Jobs;

/// <summary>
/// Builds a recovery point's block-map tree bottom-up from chunk ids given in volume order. Nodes are
/// content-addressed, so a node whose children did not change hashes to the parent recovery point's
/// node id and is deduplicated: the metadata a recovery point adds grows with what changed, not with
/// the volume size.
/// </summary>
internal sealed class TreeBuilder
{
    private readonly Repo _repo;
    private readonly PackWriter _packs;
    private readonly int _levels;
    private readonly ChunkId[][] _pending;
    private readonly int[] _counts;
    private readonly byte[] _encode;
    private readonly byte[] _compressed;

    public long NodesWritten { get; private set; }
    public long NodeBytes { get; private set; }

    public TreeBuilder(Repo repo, PackWriter packs, int levels)
    {
        _repo = repo;
        _packs = packs;
        _levels = levels;
        _pending = new ChunkId[levels][];
        _counts = new int[levels];
        for (int i = 0; i < levels; i++) _pending[i] = new ChunkId[i == 0 ? ChunkGeometry.LeafFanout : ChunkGeometry.NodeFanout];
        int max = TreeNode.HeaderSize + ChunkGeometry.NodeFanout * ChunkId.Size;
        _encode = new byte[max];
        _compressed = new byte[Lz4Block.MaxEncodedLength(max)];
    }

    public void AddChunk(in ChunkId id) => Push(0, id);

    private void Push(int level, in ChunkId id)
    {
        _pending[level][_counts[level]++] = id;
        if (_counts[level] == _pending[level].Length && level < _levels - 1)
            Push(level + 1, Emit(level));
    }

    private ChunkId Emit(int level)
    {
        var children = _pending[level].AsSpan(0, _counts[level]);
        _counts[level] = 0;
        bool allZero = true;
        foreach (ref readonly var c in children) if (!c.IsZero) { allZero = false; break; }
        if (allZero) return ChunkId.Zero;
        int len = TreeNode.Encode(level, children, _encode);
        var node = _encode.AsSpan(0, len);
        var id = ChunkId.Compute(node);
        if (_repo.Index.TryClaim(id, BlobType.Tree))
        {
            if (Lz4Block.TryEncode(node, _compressed, out int w))
                _packs.Add(BlobType.Tree, id, _compressed.AsSpan(0, w), len, BlobCompression.Lz4);
            else
                _packs.Add(BlobType.Tree, id, node, len, BlobCompression.None);
            NodesWritten++;
            NodeBytes += len;
        }
        return id;
    }

    /// <summary>Flushes partial nodes upward and returns the root id (zero for an all-zero volume).</summary>
    public ChunkId Finish()
    {
        for (int level = 0; level < _levels - 1; level++)
            if (_counts[level] > 0) Push(level + 1, Emit(level));
        return _counts[_levels - 1] > 0 ? Emit(_levels - 1) : ChunkId.Zero;
    }
}

/// <summary>Walks a recovery point's tree in volume order.</summary>
internal static class TreeWalker
{
    /// <summary>
    /// Calls <paramref name="onLeafRange"/> for each run of chunks: (first chunk index, ids). Zero subtrees are
    /// reported as a single zero-run with a null span (count given).
    /// </summary>
    public static async Task WalkAsync(Repo repo, Manifest m, Func<long, ChunkId[], int, Task> onChunks, Func<long, long, Task> onZeroRun,
        Action<ChunkId>? onNode = null, CancellationToken ct = default)
    {
        long chunkCount = ChunkGeometry.ChunkCount(m.Size, m.ChunkSize);
        var root = ChunkId.Parse(m.Root);
        await WalkNodeAsync(repo, m, root, m.TreeLevels - 1, 0, chunkCount, onChunks, onZeroRun, onNode, null, ct).ConfigureAwait(false);
    }

    private static long Span(Manifest m, int level)
    {
        long s = m.LeafFanout;
        for (int i = 0; i < level; i++) s *= m.NodeFanout;
        return s;
    }

    private static async Task WalkNodeAsync(Repo repo, Manifest m, ChunkId id, int level, long first, long chunkCount,
        Func<long, ChunkId[], int, Task> onChunks, Func<long, long, Task> onZeroRun, Action<ChunkId>? onNode, byte[]? prefetched, CancellationToken ct)
    {
        long covers = Math.Min(Span(m, level), chunkCount - first);
        if (covers <= 0) return;
        if (id.IsZero) { await onZeroRun(first, covers).ConfigureAwait(false); return; }
        ct.ThrowIfCancellationRequested();
        onNode?.Invoke(id);
        var bytes = prefetched ?? await repo.ReadTreeNodeAsync(id, ct).ConfigureAwait(false);
        var children = new ChunkId[level == 0 ? m.LeafFanout : m.NodeFanout];
        string what = $"tree node {id}";
        int actualLevel = TreeNode.Decode(bytes, children, what);
        if (actualLevel != level) ThrowHelper.ThrowCorrupt(what, $"level {actualLevel}, expected {level}");
        if (level == 0)
        {
            await onChunks(first, children, (int)covers).ConfigureAwait(false);
            return;
        }
        long childSpan = Span(m, level - 1);
        int used = (int)Math.Min(children.Length, (chunkCount - first + childSpan - 1) / childSpan);
        var nodes = await PrefetchAsync(repo, children.AsSpan(0, used).ToArray(), ct).ConfigureAwait(false);
        for (int i = 0; i < used; i++)
        {
            long childFirst = first + i * childSpan;
            nodes.TryGetValue(children[i], out var node);
            await WalkNodeAsync(repo, m, children[i], level - 1, childFirst, chunkCount, onChunks, onZeroRun, onNode, node, ct).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Reads the child nodes of one interior node in coalesced pack ranges (a backup writes them next to each
    /// other, so 256 leaves are usually one GET instead of 256). Best effort: a node that is missing, or whose
    /// range or blob is corrupt, is left out and read (and reported) by the walk in its turn.
    /// </summary>
    internal static async Task<Dictionary<ChunkId, byte[]>> PrefetchAsync(Repo repo, ChunkId[] ids, CancellationToken ct)
    {
        var result = new Dictionary<ChunkId, byte[]>();
        var wanted = new List<BlobRead>(ids.Length);
        var seen = new HashSet<ChunkId>();
        foreach (var id in ids)
            if (!id.IsZero && seen.Add(id) && repo.Index.TryGet(id, out var loc) && !loc.IsPending && loc.Type == BlobType.Tree)
                wanted.Add(new BlobRead(id, loc, 0));
        if (wanted.Count < 2) return result;
        foreach (var range in PackRanges.Plan(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(wanted), PackRangeOptions.For(repo.Backend)))
        {
            var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(range.Length);
            try
            {
                var bytes = buffer.AsMemory(0, range.Length);
                try { await repo.ReadRangeAsync(range, bytes, ct).ConfigureAwait(false); }
                catch (Exception e) when (e is CorruptDataException or Storage.StorageException) { continue; }
                foreach (var blob in range.Blobs)
                {
                    var node = new byte[blob.Location.RawLength];
                    try { repo.TakeBlob(range, bytes, blob, node).CopyTo(node); }
                    catch (CorruptDataException) { continue; }
                    result[blob.Id] = node;
                }
            }
            finally { System.Buffers.ArrayPool<byte>.Shared.Return(buffer); }
        }
        return result;
    }
}
