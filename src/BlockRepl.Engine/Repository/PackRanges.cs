using BlockRepl.Core;
using BlockRepl.Storage;

namespace BlockRepl.Engine.Repository;

/// <summary>A blob to read: its id, where it is stored, and a caller's tag (e.g. the chunk index it restores).</summary>
public readonly record struct BlobRead(ChunkId Id, BlobLocation Location, long Tag);

/// <summary>
/// One ranged read of a pack, <c>[Offset, Offset + Length)</c>, covering <see cref="Blobs"/> (sorted by
/// offset; blobs may repeat or overlap when one blob is needed at several places).
/// </summary>
public sealed class PackRange(int pack, long offset, int length, BlobRead[] blobs)
{
    public int Pack { get; } = pack;
    public long Offset { get; } = offset;
    public int Length { get; } = length;
    public BlobRead[] Blobs { get; } = blobs;

    /// <summary>The stored bytes of <paramref name="blob"/> inside a buffer holding this range.</summary>
    public ReadOnlyMemory<byte> Slice(ReadOnlyMemory<byte> range, in BlobRead blob) =>
        range.Slice((int)(blob.Location.Offset - Offset), blob.Location.StoredLength);
}

/// <summary>How blobs are merged into ranged reads (docs/s3.md, "Reads").</summary>
public sealed record PackRangeOptions
{
    /// <summary>Neighbouring blobs of one pack are read together when at most this many unneeded bytes lie between them.</summary>
    public int MaxGap { get; init; } = 1 << 20;

    /// <summary>A range is not grown past this size (a single blob larger than it is still one range).</summary>
    public int MaxRange { get; init; } = 16 << 20;

    /// <summary>Ranged reads in flight at once.</summary>
    public int Parallelism { get; init; } = 8;

    /// <summary>Bound on the bytes of range buffers held at once (reads in flight plus ranges being decoded).</summary>
    public long MaxBytesInFlight { get; init; } = 64L << 20;

/// <summary>For object stores, where every GET costs a round trip and a request fee: few, large ranges.</summary>
    public static PackRangeOptions Default { get; } = new();

    /// <summary>
    /// For a local directory, where a read costs a syscall and unneeded bytes cost real I/O: merge only
    /// touching neighbours into modest ranges (measured: a 256 MiB restore as fast as per-chunk reads,
    /// about 6 MiB more peak memory instead of 40 with 16 MiB ranges).
    /// </summary>
    public static PackRangeOptions Local { get; } = new()
    {
        MaxGap = 64 << 10,
        MaxRange = 2 << 20,
        Parallelism = Math.Max(2, Environment.ProcessorCount),
        MaxBytesInFlight = 16L << 20,
    };

    /// <summary><see cref="Local"/> for a <see cref="LocalBackend"/>, else <see cref="Default"/>.</summary>
    public static PackRangeOptions For(IBackend backend) => backend is LocalBackend ? Local : Default;
}

/// <summary>
/// Plans and performs coalesced reads of blobs: on an object store a GET costs a round trip and a request
/// fee whatever its size, so the blobs a job needs from one pack are read in a few large ranges rather
/// than one GET each. Only <see cref="IBackend.ReadAtAsync"/> is used; the backend interface stays small.
/// </summary>
public static class PackRanges
{
    /// <summary>
    /// Groups <paramref name="blobs"/> by pack, sorts them by offset and merges neighbours whose gap is at
    /// most <see cref="PackRangeOptions.MaxGap"/> into ranges of at most <see cref="PackRangeOptions.MaxRange"/>.
    /// Reorders <paramref name="blobs"/>.
    /// </summary>
    public static List<PackRange> Plan(Span<BlobRead> blobs, PackRangeOptions options)
    {
        blobs.Sort(static (a, b) => a.Location.Pack != b.Location.Pack ? a.Location.Pack.CompareTo(b.Location.Pack) : a.Location.Offset.CompareTo(b.Location.Offset));
        var ranges = new List<PackRange>();
        int start = 0;
        while (start < blobs.Length)
        {
            ref readonly var first = ref blobs[start];
            long offset = first.Location.Offset;
            long end = offset + first.Location.StoredLength;
            int i = start + 1;
            for (; i < blobs.Length; i++)
            {
                ref readonly var b = ref blobs[i];
                if (b.Location.Pack != first.Location.Pack) break;
                long bEnd = Math.Max(end, b.Location.Offset + b.Location.StoredLength);
                if (b.Location.Offset - end > options.MaxGap || bEnd - offset > options.MaxRange) break;
                end = bEnd;
            }
            ranges.Add(new PackRange(first.Location.Pack, offset, checked((int)(end - offset)), blobs[start..i].ToArray()));
            start = i;
        }
        return ranges;
    }
}

/// <summary>
/// A bound on bytes held at once, shared by concurrent readers: <see cref="AcquireAsync"/> waits until the
/// amount fits. Waiters are served in order (one at a time holds the gate), so a large request is not starved
/// by small ones and no two waiters each hold part of what they need.
/// </summary>
public sealed class ByteBudget : IDisposable
{
    private const int Unit = 64 << 10;
    private readonly int _units;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly SemaphoreSlim _free;

    public ByteBudget(long capacity)
    {
        _units = (int)Math.Clamp(capacity / Unit, 1, int.MaxValue);
        _free = new SemaphoreSlim(_units, _units);
    }

    /// <summary>Waits for <paramref name="bytes"/> (capped at the capacity); returns the amount to pass to <see cref="Release"/>.</summary>
    public async ValueTask<int> AcquireAsync(long bytes, CancellationToken ct)
    {
        int units = (int)Math.Clamp((bytes + Unit - 1) / Unit, 1, _units);
        await _gate.WaitAsync(ct).ConfigureAwait(false);
        int taken = 0;
        try
        {
            for (; taken < units; taken++) await _free.WaitAsync(ct).ConfigureAwait(false);
            return units;
        }
        catch
        {
            if (taken > 0) _free.Release(taken);
            throw;
        }
        finally { _gate.Release(); }
    }

    /// <summary>Gives back what <see cref="AcquireAsync"/> returned.</summary>
    public void Release(int units) => _free.Release(units);

    public void Dispose()
    {
        _gate.Dispose();
        _free.Dispose();
    }
}
