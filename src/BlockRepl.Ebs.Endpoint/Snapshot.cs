using System.Diagnostics;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>One snapshot in memory: its metadata, the blocks written in it, its block file and its rate limiters.</summary>
internal sealed class Snapshot
{
    public Snapshot(SnapshotMeta meta, Snapshot? parent, int putRate, int getRate)
    {
        Meta = meta;
        Parent = parent;
        PutBucket = new TokenBucket(putRate);
        GetBucket = new TokenBucket(getRate);
        LastActivity = Stopwatch.GetTimestamp();
    }

    public SnapshotMeta Meta { get; }
    public string Id => Meta.SnapshotId;
    public Snapshot? Parent { get; }
    public Lock Gate { get; } = new();
    /// <summary>Blocks written in this snapshot (not inherited), index → digest. Guarded by <see cref="Gate"/>.</summary>
    public Dictionary<int, Sha256Digest> Own { get; } = [];
    public BlockFile Blocks { get; set; } = null!;
    public TokenBucket PutBucket { get; }
    public TokenBucket GetBucket { get; }
    /// <summary>Stopwatch timestamp of the start or the last accepted put (the idle Timeout counts from it).</summary>
    public long LastActivity { get; set; }
    /// <summary>Stopwatch timestamp of StartSnapshot in this process (for the "does not exist yet" fault); 0 after a restart.</summary>
    public long StartedInProcess { get; set; }
    /// <summary>Puts between their state check and their acknowledgement. Guarded by <see cref="Gate"/>.</summary>
    public int InFlightPuts { get; set; }
    public long VolumeBlocks => Meta.VolumeSize * 2048;
    public string PublicStatus => Meta.State == "completing" ? "pending" : Meta.State;
    public bool Completed => Meta.State == "completed";

    private EffectiveMap? _effective;

    /// <summary>
    /// Every block readable from this completed snapshot, ascending by index, with the snapshot that wrote it
    /// (itself or an ancestor). Computed once: a completed snapshot never changes.
    /// </summary>
    public EffectiveMap Effective()
    {
        if (_effective is { } e) return e;
        int[] own;
        lock (Gate)
        {
            own = [.. Own.Keys];
        }
        Array.Sort(own);
        if (Parent is null)
        {
            var sources = new Snapshot[own.Length];
            Array.Fill(sources, this);
            return _effective = new EffectiveMap(own, sources);
        }
        var p = Parent.Effective();
        var idx = new List<int>(own.Length + p.Indices.Length);
        var src = new List<Snapshot>(own.Length + p.Indices.Length);
        int i = 0, j = 0;
        while (i < own.Length || j < p.Indices.Length)
        {
            if (j >= p.Indices.Length || (i < own.Length && own[i] <= p.Indices[j]))
            {
                if (j < p.Indices.Length && own[i] == p.Indices[j]) j++;
                idx.Add(own[i++]);
                src.Add(this);
            }
            else
            {
                idx.Add(p.Indices[j]);
                src.Add(p.Sources[j++]);
            }
        }
        return _effective = new EffectiveMap([.. idx], [.. src]);
    }

    /// <summary>The root of this snapshot's ParentSnapshotId chain: snapshots are related when their roots match.</summary>
    public Snapshot Root()
    {
        var s = this;
        while (s.Parent is not null) s = s.Parent;
        return s;
    }
}

/// <summary>Sorted block indices and, at the same position, the snapshot holding that block's data.</summary>
internal sealed record EffectiveMap(int[] Indices, Snapshot[] Sources)
{
    /// <summary>Position of the first index ≥ <paramref name="index"/>.</summary>
    public int LowerBound(int index)
    {
        int i = Array.BinarySearch(Indices, index);
        return i >= 0 ? i : ~i;
    }

    public Snapshot? SourceOf(int index)
    {
        int i = Array.BinarySearch(Indices, index);
        return i >= 0 ? Sources[i] : null;
    }
}
