using System.Buffers.Binary;
using System.Text;

namespace BlockRepl.Core.Tests;

/// <summary>
/// Deterministic inputs for the unit tests. Kept here (not in TestKit) so these tests depend on nothing
/// but the assemblies under test: the generators are a few lines and the seeds pin every byte.
/// </summary>
internal static class TestData
{
    /// <summary>SplitMix64 stream: incompressible bytes, identical on every run and host.</summary>
    public static byte[] Random(int length, ulong seed)
    {
        var buffer = new byte[length];
        FillRandom(buffer, seed);
        return buffer;
    }

    public static void FillRandom(Span<byte> buffer, ulong seed)
    {
        ulong x = seed;
        int i = 0;
        for (; i + 8 <= buffer.Length; i += 8)
            BinaryPrimitives.WriteUInt64LittleEndian(buffer[i..], Next(ref x));
        if (i < buffer.Length)
        {
            Span<byte> last = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(last, Next(ref x));
            last[..(buffer.Length - i)].CopyTo(buffer[i..]);
        }
    }

    /// <summary>Log-like text: repetitive enough that LZ4 saves well over 1/32, varied enough to be realistic.</summary>
    public static byte[] Text(int length, ulong seed)
    {
        string[] words = ["backup", "chunk", "volume", "INFO", "WARN", "worker", "read", "hashed", "stored", "bytes", "from", "/var/lib/data", "ok"];
        ulong x = seed;
        var sb = new StringBuilder(length + 64);
        while (sb.Length < length)
        {
            ulong r = Next(ref x);
            sb.Append("2026-11-25T12:").Append((r % 60).ToString("D2", System.Globalization.CultureInfo.InvariantCulture)).Append(' ');
            for (int w = 0; w < 6; w++) sb.Append(words[(int)((r >> (8 + w * 4)) % (ulong)words.Length)]).Append(' ');
            sb.Append((r >> 40) % 100000).Append('\n');
        }
        return Encoding.ASCII.GetBytes(sb.ToString(0, length));
    }

    public static ChunkId Id(int n) => ChunkId.Compute(BitConverter.GetBytes(n));

    private static ulong Next(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

/// <summary>A fresh directory under $TMPDIR, removed on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory() => Path = Directory.CreateTempSubdirectory("blockrepl-core-tests-").FullName;

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
