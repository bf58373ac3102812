using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace BlockRepl.TestKit;

/// <summary>
/// xoshiro256** seeded through SplitMix64 (Blackman and Vigna). Used instead of
/// <see cref="System.Random"/> because its output is fixed by this file, not by the runtime, and it
/// fills buffers at several GB/s, so multi-GiB images are generated at disk speed.
/// </summary>
internal struct SeededRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public SeededRandom(long seed)
    {
        ulong x = unchecked((ulong)seed);
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    /// <summary>A generator for an independent stream derived from <paramref name="seed"/> and a purpose tag.</summary>
    public static SeededRandom Derive(long seed, ulong stream) =>
        new(unchecked(seed ^ (long)(stream * 0x9E3779B97F4A7C15UL)));

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, <paramref name="bound"/>) (Lemire's multiply-shift with rejection).</summary>
    public ulong NextUInt64(ulong bound)
    {
        if (bound == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bound));
        }

        ulong threshold = (0 - bound) % bound;
        while (true)
        {
            ulong high = Math.BigMul(NextUInt64(), bound, out ulong low);
            if (low >= threshold)
            {
                return high;
            }
        }
    }

    public int NextInt(int bound) => (int)NextUInt64((ulong)bound);

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Fills the span; byte order is fixed (little-endian) so output is identical on every host.</summary>
    public void Fill(Span<byte> buffer)
    {
        Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(buffer);
        for (int i = 0; i < words.Length; i++)
        {
            ulong v = NextUInt64();
            words[i] = BitConverter.IsLittleEndian ? v : BinaryPrimitives.ReverseEndianness(v);
        }

        Span<byte> tail = buffer[(words.Length * sizeof(ulong))..];
        if (!tail.IsEmpty)
        {
            Span<byte> last = stackalloc byte[sizeof(ulong)];
            BinaryPrimitives.WriteUInt64LittleEndian(last, NextUInt64());
            last[..tail.Length].CopyTo(tail);
        }
    }
}
