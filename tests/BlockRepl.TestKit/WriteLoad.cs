using Microsoft.Win32.SafeHandles;

namespace BlockRepl.TestKit;

/// <summary>Seeded write loads that change an image between two backups.</summary>
public static class WriteLoad
{
    /// <summary>
    /// Overwrites <paramref name="count"/> distinct, randomly chosen, <paramref name="blockSize"/>-aligned
    /// blocks of an existing file or block device with seeded random bytes (written in offset order).
    /// A partial block at the end of the file is never chosen.
    /// </summary>
    /// <returns>The offsets written, ascending.</returns>
    public static long[] ScatteredWrites(string path, int count, int blockSize, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        long blocks = Files.Length(handle, path) / blockSize;
        if (count > blocks)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"{path} has only {blocks} whole blocks of {blockSize} bytes; cannot change {count}.");
        }

        var rng = new SeededRandom(seed);
        long[] offsets = PickDistinct(ref rng, blocks, count);
        for (int i = 0; i < offsets.Length; i++)
        {
            offsets[i] *= blockSize;
        }

        Array.Sort(offsets);
        byte[] buffer = new byte[blockSize];
        foreach (long offset in offsets)
        {
            rng.Fill(buffer);
            RandomAccess.Write(handle, buffer, offset);
        }

        return offsets;
    }

    /// <summary>
    /// <see cref="ScatteredWrites"/> with count = ⌊<paramref name="fraction"/> × whole blocks⌋ (at least 1
    /// when <paramref name="fraction"/> &gt; 0); e.g. 0.01 of a 4 GiB image at 64 KiB = 655 blocks.
    /// </summary>
    public static long[] ScatteredWritesFraction(string path, double fraction, int blockSize, int seed)
    {
        if (double.IsNaN(fraction) || fraction < 0 || fraction > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "Must be in [0, 1].");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        long blocks;
        using (SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            blocks = Files.Length(handle, path) / blockSize;
        }

        long count = (long)(fraction * blocks);
        if (count == 0 && fraction > 0 && blocks > 0)
        {
            count = 1;
        }

        return ScatteredWrites(path, checked((int)count), blockSize, seed);
    }

    /// <summary><paramref name="count"/> distinct values in [0, <paramref name="n"/>), in selection order.</summary>
    private static long[] PickDistinct(ref SeededRandom rng, long n, int count)
    {
        var result = new long[count];
        if (count > n / 4 && n <= int.MaxValue)
        {
            // Dense: partial Fisher–Yates over the whole index range.
            long[] all = new long[n];
            for (long i = 0; i < n; i++)
            {
                all[i] = i;
            }

            for (int i = 0; i < count; i++)
            {
                long j = i + (long)rng.NextUInt64((ulong)(n - i));
                (all[i], all[j]) = (all[j], all[i]);
                result[i] = all[i];
            }

            return result;
        }

        // Sparse: rejection sampling; at most 1 in 4 draws is a repeat.
        var seen = new HashSet<long>(count);
        for (int i = 0; i < count;)
        {
            long v = (long)rng.NextUInt64((ulong)n);
            if (seen.Add(v))
            {
                result[i++] = v;
            }
        }

        return result;
    }
}
