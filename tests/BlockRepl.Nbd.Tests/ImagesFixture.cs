using BlockRepl.TestKit;

namespace BlockRepl.Nbd.Tests;

/// <summary>
/// Disk images built once per test run with qemu-img/qemu-io, plus their expected contents in memory:
/// a raw image of seeded random data with zero runs, the same content as qcow2, a sparse qcow2 with two
/// persistent dirty bitmaps, and a 6 GiB sparse qcow2 (more than one 32-bit BLOCK_STATUS request).
/// </summary>
public sealed class ImagesFixture : IDisposable
{
    public const long Mi = 1024 * 1024;

    /// <summary>Not a multiple of 64 KiB, and larger than the 32 MiB read limit.</summary>
    public const int RawSize = (int)(48 * Mi) + 12 * 1024;

    public const long SparseSize = 64 * Mi;
    public const long HugeSize = 6L * 1024 * Mi;

    /// <summary>A write made with qemu-io; Pattern null = write -z (zeros).</summary>
    public sealed record Write(long Offset, int Length, byte? Pattern);

    /// <summary>Before bitmap b1 exists: must stay clean.</summary>
    public static readonly Write[] BeforeBitmaps = [new(0, 128 * 1024, 0x11)];

    /// <summary>After b1, before b2.</summary>
    public static readonly Write[] AfterB1 = [new(1 * Mi, 64 * 1024, 0xab), new(10 * Mi, 4096, 0xcd), new(20 * Mi, 64 * 1024, null)];

    /// <summary>After both bitmaps: unaligned, spans several clusters.</summary>
    public static readonly Write[] AfterB2 = [new(40 * Mi - 4096, 200 * 1024, 0xef)];

    public static readonly Write[] HugeWrites = [new(5L * 1024 * Mi, 4096, 0x5a)];

    public const int BitmapGranularity = 64 * 1024;

    private readonly TempDir _dir = new("blockrepl-nbd");

    public TempDir Dir => _dir;
    public string RawPath { get; }
    public string Qcow2Path { get; }
    public string SparsePath { get; }
    public string HugePath { get; }
    public byte[] RawContent { get; }
    public byte[] SparseContent { get; }

    public ImagesFixture()
    {
        RawContent = new byte[RawSize];
        new Random(5).NextBytes(RawContent);
        RawContent.AsSpan((int)(3 * Mi), (int)(2 * Mi)).Clear();       // zero runs: qcow2 stores them as holes or zero clusters
        RawContent.AsSpan((int)(40 * Mi) + 100, 300 * 1024).Clear();
        RawPath = _dir.File("raw.img");
        File.WriteAllBytes(RawPath, RawContent);
        Qcow2Path = _dir.File("disk.qcow2");
        QemuImg($"convert -f raw -O qcow2 {Processes.Quote(RawPath)} {Processes.Quote(Qcow2Path)}");

        SparsePath = _dir.File("sparse.qcow2");
        QemuImg($"create -f qcow2 {Processes.Quote(SparsePath)} {SparseSize}");
        SparseContent = new byte[SparseSize];
        QemuIo(SparsePath, BeforeBitmaps, SparseContent);
        QemuImg($"bitmap --add {Processes.Quote(SparsePath)} b1");
        QemuIo(SparsePath, AfterB1, SparseContent);
        QemuImg($"bitmap --add {Processes.Quote(SparsePath)} b2");
        QemuIo(SparsePath, AfterB2, SparseContent);

        HugePath = _dir.File("huge.qcow2");
        QemuImg($"create -f qcow2 {Processes.Quote(HugePath)} {HugeSize}");
        QemuImg($"bitmap --add {Processes.Quote(HugePath)} b1");
        QemuIo(HugePath, HugeWrites, null);
    }

    /// <summary>The writes as a bitmap of <see cref="BitmapGranularity"/> records them: rounded out, merged.</summary>
    public static List<(long Offset, long Length)> DirtyRanges(IEnumerable<Write> writes)
    {
        var ranges = new List<(long Offset, long Length)>();
        foreach (var w in writes.OrderBy(w => w.Offset))
        {
            long start = w.Offset / BitmapGranularity * BitmapGranularity;
            long end = (w.Offset + w.Length + BitmapGranularity - 1) / BitmapGranularity * BitmapGranularity;
            if (ranges.Count > 0 && ranges[^1].Offset + ranges[^1].Length >= start)
                ranges[^1] = (ranges[^1].Offset, Math.Max(end, ranges[^1].Offset + ranges[^1].Length) - ranges[^1].Offset);
            else
                ranges.Add((start, end - start));
        }
        return ranges;
    }

    private static void QemuImg(string args) => Processes.Run("qemu-img", args);

    private static void QemuIo(string image, IEnumerable<Write> writes, byte[]? content)
    {
        var args = new List<string> { "-f qcow2" };
        foreach (var w in writes)
        {
            args.Add(w.Pattern is { } p ? $"-c \"write -P 0x{p:x2} {w.Offset} {w.Length}\"" : $"-c \"write -z {w.Offset} {w.Length}\"");
            if (content is not null)
                content.AsSpan((int)w.Offset, w.Length).Fill(w.Pattern ?? 0);
        }
        args.Add(Processes.Quote(image));
        Processes.Run("qemu-io", string.Join(' ', args));
    }

    public void Dispose() => _dir.Dispose();
}

[CollectionDefinition(Name)]
public sealed class NbdCollection : ICollectionFixture<ImagesFixture>
{
    public const string Name = "nbd";
}
