using System.Buffers.Binary;

namespace BlockRepl.Benchmarks;

/// <summary>
/// The 64 MiB benchmark corpus: half random, a quarter log-like text, a quarter zeros, laid out in
/// 512 KiB segments in the repeating order random, text, random, zeros. Every window of 16 segments
/// (8 MiB) has exactly that mix, so a benchmark that walks 128 blocks per invocation (8 MiB of 64 KiB
/// blocks, or the whole corpus in 512 KiB blocks) sees the same content on every invocation. 64 MiB is
/// larger than the last-level cache of the machines we run on, so blocks stream from DRAM as they do
/// from a device read into pooled buffers.
/// </summary>
internal static class Corpus
{
    public const int Size = 64 << 20;
    public const int SegmentSize = 512 << 10;

    public enum Kind { Random, Text, Zeros }

    public static Kind KindOfSegment(int segment) => (segment % 4) switch
    {
        1 => Kind.Text,
        3 => Kind.Zeros,
        _ => Kind.Random,
    };

    /// <summary>Deterministic: the same bytes on every run and host (SplitMix64, fixed seeds).</summary>
    public static byte[] Create()
    {
        var corpus = GC.AllocateUninitializedArray<byte>(Size, pinned: true);
        ulong state = 0x5EED_B10C_0000_0001UL;
        for (int s = 0; s < Size / SegmentSize; s++)
        {
            var segment = corpus.AsSpan(s * SegmentSize, SegmentSize);
            switch (KindOfSegment(s))
            {
                case Kind.Random: FillRandom(segment, ref state); break;
                case Kind.Text: FillText(segment, ref state); break;
                default: segment.Clear(); break;
            }
        }
        return corpus;
    }

    private static void FillRandom(Span<byte> d, ref ulong state)
    {
        for (int i = 0; i < d.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(d[i..], Next(ref state));
    }

    private static readonly string[] Words =
    [
        "INFO", "WARN", "DEBUG", "ERROR", "request", "completed", "in", "ms", "user", "session", "GET", "POST",
        "/api/v1/orders", "/api/v1/users", "/static/app.js", "status", "200", "404", "500", "bytes", "from", "cache",
        "miss", "hit", "db", "query", "SELECT", "id", "name", "FROM", "orders", "WHERE", "customer", "=", "and",
        "the", "of", "to", "a", "is", "backup", "volume", "snapshot", "chunk", "worker", "thread", "pool",
    ];

    /// <summary>Log lines with timestamps, numbers and a small vocabulary: LZ4 keeps about half, like real logs.</summary>
    private static void FillText(Span<byte> d, ref ulong state)
    {
        int o = 0;
        while (o < d.Length)
        {
            ulong r = Next(ref state);
            o += Put(d[o..], $"2026-11-25T{(r >> 8) % 24:D2}:{(r >> 16) % 60:D2}:{(r >> 24) % 60:D2}.{(r >> 32) % 1000:D3}Z ");
            int words = 5 + (int)(r % 10);
            for (int w = 0; w < words && o < d.Length; w++)
            {
                ulong q = Next(ref state);
                o += Put(d[o..], (q & 7) == 0 ? $"{q >> 44} " : Words[(int)((q >> 3) % (ulong)Words.Length)] + " ");
            }
            if (o < d.Length) d[o++] = (byte)'\n';
        }
    }

    private static int Put(Span<byte> d, string s)
    {
        int n = Math.Min(d.Length, s.Length);
        for (int i = 0; i < n; i++) d[i] = (byte)s[i];
        return n;
    }

    private static ulong Next(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
