using BenchmarkDotNet.Attributes;
using BlockRepl.Core;
using BlockRepl.Core.Compression;
using BlockRepl.Core.Hashing;

namespace BlockRepl.Benchmarks;

/// <summary>
/// The per-block primitives of the backup pipeline over the mixed <see cref="Corpus"/>, one operation per
/// block. Each invocation walks the next 128 blocks and the walk wraps around the 64 MiB corpus, so data
/// comes from DRAM, not cache. The Allocated column must read '-' (0 B per block) for every row.
/// </summary>
[MemoryDiagnoser]
public class BlockBenchmarks
{
    public const int BlocksPerInvoke = 128;

    [Params(64 * 1024, 512 * 1024)]
    public int BlockSize { get; set; }

    private byte[] _corpus = [];
    private byte[] _output = [];
    private int _offset;

    // LZ4 blocks of the corpus's text segments, back to back, for the decode benchmark.
    private byte[] _compressed = [];
    private int[] _compressedOffsets = [];
    private int[] _compressedLengths = [];
    private int _nextCompressed;

    [GlobalSetup]
    public void Setup()
    {
        _corpus = Corpus.Create();
        _output = GC.AllocateUninitializedArray<byte>(Lz4Block.MaxEncodedLength(BlockSize), pinned: true);

        var offsets = new List<int>();
        var lengths = new List<int>();
        using var all = new MemoryStream();
        var scratch = new byte[Lz4Block.MaxEncodedLength(BlockSize)];
        for (int o = 0; o < Corpus.Size; o += BlockSize)
        {
            if (Corpus.KindOfSegment(o / Corpus.SegmentSize) != Corpus.Kind.Text) continue;
            if (!Lz4Block.TryEncode(_corpus.AsSpan(o, BlockSize), scratch, out int written))
                throw new InvalidOperationException("text blocks of the corpus must compress");
            offsets.Add((int)all.Position);
            lengths.Add(written);
            all.Write(scratch, 0, written);
        }
        _compressed = all.ToArray();
        _compressedOffsets = [.. offsets];
        _compressedLengths = [.. lengths];
    }

    private ReadOnlySpan<byte> NextBlock()
    {
        var block = new ReadOnlySpan<byte>(_corpus, _offset, BlockSize);
        _offset += BlockSize;
        if (_offset == _corpus.Length) _offset = 0;
        return block;
    }

    [Benchmark(OperationsPerInvoke = BlocksPerInvoke, Description = "ZeroDetector.IsAllZero")]
    public int ZeroCheck()
    {
        int zeros = 0;
        for (int i = 0; i < BlocksPerInvoke; i++)
            if (ZeroDetector.IsAllZero(NextBlock())) zeros++;
        return zeros;
    }

    [Benchmark(OperationsPerInvoke = BlocksPerInvoke, Description = "BlockHash.Compute (XXH3-128)")]
    public ulong Xxh3_128()
    {
        ulong acc = 0;
        for (int i = 0; i < BlocksPerInvoke; i++) acc ^= BlockHash.Compute(NextBlock()).Low;
        return acc;
    }

    [Benchmark(OperationsPerInvoke = BlocksPerInvoke, Description = "ChunkId.Compute (SHA-256)")]
    public ulong Sha256()
    {
        ulong acc = 0;
        for (int i = 0; i < BlocksPerInvoke; i++) acc ^= ChunkId.Compute(NextBlock()).Low;
        return acc;
    }

    /// <summary>On the whole mix: random blocks fail the 1/32 rule, zero blocks collapse.</summary>
    [Benchmark(OperationsPerInvoke = BlocksPerInvoke, Description = "Lz4Block.TryEncode (mix)")]
    public long Lz4Encode()
    {
        long total = 0;
        for (int i = 0; i < BlocksPerInvoke; i++)
            if (Lz4Block.TryEncode(NextBlock(), _output, out int written)) total += written;
        return total;
    }

    /// <summary>Restore's decode of stored LZ4 blocks (the text blocks of the corpus).</summary>
    [Benchmark(OperationsPerInvoke = BlocksPerInvoke, Description = "Lz4Block.TryDecode (text)")]
    public int Lz4Decode()
    {
        int ok = 0;
        var destination = _output.AsSpan(0, BlockSize);
        for (int i = 0; i < BlocksPerInvoke; i++)
        {
            int k = _nextCompressed;
            _nextCompressed = k + 1 == _compressedOffsets.Length ? 0 : k + 1;
            if (Lz4Block.TryDecode(_compressed.AsSpan(_compressedOffsets[k], _compressedLengths[k]), destination)) ok++;
        }
        return ok;
    }

    /// <summary>
    /// What a backup worker does with a chunk of a full backup (BackupJob.WorkLoop): zero check, and for
    /// non-zero chunks XXH3-128, SHA-256, then LZ4 or a raw copy into the pack buffer.
    /// </summary>
    [Benchmark(OperationsPerInvoke = BlocksPerInvoke)]
    public ulong PipelinePerChunk()
    {
        ulong acc = 0;
        for (int i = 0; i < BlocksPerInvoke; i++)
        {
            var data = NextBlock();
            if (ZeroDetector.IsAllZero(data)) continue;
            acc ^= BlockHash.Compute(data).Low;
            acc ^= ChunkId.Compute(data).Low;
            if (Lz4Block.TryEncode(data, _output, out int written)) acc += (ulong)written;
            else data.CopyTo(_output);
        }
        return acc;
    }
}
