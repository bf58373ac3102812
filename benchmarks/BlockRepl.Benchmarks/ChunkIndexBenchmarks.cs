using BenchmarkDotNet.Attributes;
using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;

namespace BlockRepl.Benchmarks;

/// <summary>Ids of a repository of about 1 M chunks (64 GiB of unique 64 KiB chunks).</summary>
internal static class IndexIds
{
    public const int Loaded = 1 << 20;

    public static ChunkId[] Make(int count, int salt)
    {
        var ids = new ChunkId[count];
        Span<byte> seed = stackalloc byte[8];
        for (int i = 0; i < count; i++)
        {
            BitConverter.TryWriteBytes(seed, ((long)salt << 32) | (uint)i);
            ids[i] = ChunkId.Compute(seed);
        }
        return ids;
    }

    public static ChunkIndex Load(ChunkId[] ids)
    {
        var index = new ChunkIndex();
        int pack = index.AddPack(PackId.NewRandom(), 32L << 20);
        for (int i = 0; i < ids.Length; i++)
            index.Set(ids[i], new BlobLocation(pack, 16 + i * 100L, 100, 65536, BlobType.Data, BlobCompression.Lz4, (ulong)i));
        return index;
    }
}

/// <summary>Lookups in a loaded index: the dedup check of every changed chunk, and the incremental's reuse check.</summary>
[MemoryDiagnoser]
public class ChunkIndexBenchmarks
{
    public const int OpsPerInvoke = 4096;

    private ChunkIndex _index = new();
    private ChunkId[] _present = [];
    private ChunkId[] _absent = [];
    private int _cursor;

    [GlobalSetup]
    public void Setup()
    {
        _present = IndexIds.Make(IndexIds.Loaded, 1);
        _absent = IndexIds.Make(IndexIds.Loaded, 2);
        _index = IndexIds.Load(_present);
    }

    private int NextSlice()
    {
        int start = _cursor;
        _cursor = start + OpsPerInvoke == IndexIds.Loaded ? 0 : start + OpsPerInvoke;
        return start;
    }

    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public int Contains_Hit()
    {
        int start = NextSlice(), hits = 0;
        for (int i = start; i < start + OpsPerInvoke; i++) if (_index.Contains(_present[i])) hits++;
        return hits;
    }

    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public int Contains_Miss()
    {
        int start = NextSlice(), hits = 0;
        for (int i = start; i < start + OpsPerInvoke; i++) if (_index.Contains(_absent[i])) hits++;
        return hits;
    }

    /// <summary>A chunk that is already stored: the claim fails (dedup), nothing is inserted.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public int TryClaim_Existing()
    {
        int start = NextSlice(), won = 0;
        for (int i = start; i < start + OpsPerInvoke; i++) if (_index.TryClaim(_present[i], BlobType.Data)) won++;
        return won;
    }
}

/// <summary>
/// Claims of new chunks (an insert each). The index is reset by <see cref="ChunkIndex.DropPending"/> before every
/// iteration, outside the measurement, so claims never cross the table's growth threshold: 128 invocations ×
/// 4096 claims = 512 Ki inserts into a 2 Mi-slot table holding 1 Mi entries (growth at 1.5 Mi).
/// </summary>
[MemoryDiagnoser]
[InvocationCount(128)]
public class ChunkIndexClaimBenchmarks
{
    public const int OpsPerInvoke = 4096;

    private ChunkIndex _index = new();
    private ChunkId[] _fresh = [];
    private int _cursor;

    [GlobalSetup]
    public void Setup()
    {
        _index = IndexIds.Load(IndexIds.Make(IndexIds.Loaded, 1));
        _fresh = IndexIds.Make(128 * OpsPerInvoke, 3);
    }

    [IterationSetup]
    public void ResetClaims()
    {
        _index.DropPending();
        _cursor = 0;
    }

    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public int TryClaim_New()
    {
        int start = _cursor, won = 0;
        if (start + OpsPerInvoke > _fresh.Length)
            throw new InvalidOperationException("more invocations per iteration than fresh ids: keep InvocationCount at 128");
        _cursor = start + OpsPerInvoke;
        for (int i = start; i < start + OpsPerInvoke; i++) if (_index.TryClaim(_fresh[i], BlobType.Data)) won++;
        return won;
    }
}
