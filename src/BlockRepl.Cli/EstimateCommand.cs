using System.Globalization;
using BlockRepl.Core.Compression;
using BlockRepl.Engine;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using BlockRepl.Engine.Throttling;
using BlockRepl.Native.Linux;
using BlockRepl.Storage.Ebs;

namespace BlockRepl.Cli;

/// <summary>
/// <c>blockrepl estimate SOURCE --link 1Gbps [--daily-change 2%] [--repo R] [--json]</c>: how long the initial
/// sync and each day's change take over a link (docs/estimate.md). Reads the allocation map and at most
/// <see cref="MaxSampleBytes"/> of seeded random 64 KiB chunks, so it is quick on a large disk.
/// </summary>
internal static class EstimateCommand
{
    public const int SampleChunk = 64 * 1024;
    public const long MaxSampleBytes = 256L << 20;
    public const double DefaultDailyChangePercent = 2;
    private const int SampleSeed = 20261202;
    /// <summary>Granule of the allocation walk for sources that only answer NextData (NBD).</summary>
    private const long AllocationGranule = 1L << 20;

    public static async Task<int> RunAsync(string[] argv, CancellationToken ct)
    {
        var a = Args.Parse(argv, new HashSet<string>(["--link", "--daily-change", "--repo", "--endpoint-url"]), new HashSet<string>(["--json", "--verbose", "--no-progress"]));
        if (a.Positionals.Count != 1) throw new UsageException("estimate needs exactly one source: blockrepl estimate <image|device|nbd://…> --link 1Gbps [--daily-change 2%] [--repo R]");
        long linkBits = ParseLink(a.Required("--link", "RATE: the link speed, e.g. 1Gbps or 500Mbps"));
        string? repoLocation = a.Value("--repo");
        double? percent = a.Value("--daily-change") is { } dc ? ParsePercent(dc) : null;
        if (percent is not null && repoLocation is not null)
            throw new UsageException("give either --daily-change (assumed) or --repo (measured from its recovery points), not both");
        string path = a.Positionals[0];
        if (QemuSource.IsQemu(path))
            throw new UsageException($"estimate reads image files, block devices and nbd:// exports only; export '{path}' over NBD (qemu-nbd, nbd-server-start) and give its nbd:// URI");

        using var source = BlockSource.OpenAny(path);
        var extents = Allocation(source, ct);
        long allocated = extents.Sum(e => e.Length);
        var sample = Sample(source, extents, allocated, ct);

        long dailyChange;
        string dailyBasis;
        if (repoLocation is not null)
        {
            await using var repo = await RepositoryLocator.OpenAsync(repoLocation, loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
            var points = (await repo.ListSnapshotsAsync(ct: ct).ConfigureAwait(false)).Where(m => m.SourceKey == source.SourceKey).ToList();
            double perDay = TransferEstimate.ChangedBytesPerDay(points.Select(m => (m.Time, m.Stats.ChangedBytes)))
                ?? throw new UsageException($"repository {repo.Location} has {points.Count} recovery point(s) of {source.SourceKey}; measuring the daily change needs at least two taken at different times (or give --daily-change)");
            dailyChange = (long)Math.Round(perDay);
            dailyBasis = $"measured over {points.Count} recovery points";
        }
        else
        {
            double p = percent ?? DefaultDailyChangePercent;
            dailyChange = (long)Math.Round(allocated * p / 100);
            dailyBasis = $"{p.ToString("0.###", CultureInfo.InvariantCulture)} % of allocated{(percent is null ? " (assumed; --daily-change or --repo to change)" : "")}";
        }

        var est = new TransferEstimate(source.Size, allocated, sample.ZeroFraction, sample.Ratio, linkBits, dailyChange);
        string link = BandwidthSchedule.FormatRate(linkBits);
        if (a.Flag("--json"))
        {
            Commands.WriteJson(w =>
            {
                w.WriteStartObject();
                w.WriteString("source", source.Path);
                w.WriteNumber("sizeBytes", est.SizeBytes);
                w.WriteNumber("allocatedBytes", est.AllocatedBytes);
                w.WriteNumber("sampledBytes", sample.Bytes);
                w.WriteNumber("sampledChunks", sample.Chunks);
                w.WriteNumber("zeroFraction", Math.Round(est.ZeroFraction, 4));
                w.WriteNumber("compressionRatio", Math.Round(est.CompressionRatio, 4));
                w.WriteNumber("linkBitsPerSecond", est.LinkBitsPerSecond);
                w.WriteNumber("linkBytesPerSecond", est.LinkBytesPerSecond);
                w.WriteNumber("initialSendBytes", est.InitialSendBytes);
                w.WriteNumber("initialSyncSeconds", Math.Round(est.InitialSyncSeconds, 3));
                w.WriteNumber("initialSyncSecondsUncompressed", Math.Round(est.InitialSyncSecondsUncompressed, 3));
                w.WriteString("dailyChangeBasis", repoLocation is null ? "percent" : "repository");
                w.WriteNumber("dailyChangeBytes", est.DailyChangeBytes);
                w.WriteNumber("dailySendBytes", est.DailySendBytes);
                w.WriteNumber("dailySyncSeconds", Math.Round(est.DailySyncSeconds, 3));
                w.WriteNumber("dailyLinkUtilization", Math.Round(est.DailyLinkUtilization, 6));
                w.WriteBoolean("keepsUp", est.KeepsUp);
                w.WriteEndObject();
            });
            return ExitCodes.Ok;
        }
        Console.WriteLine($"source          {source.Path}: {Format.Bytes(est.SizeBytes)}, {Format.Bytes(est.AllocatedBytes)} allocated");
        Console.WriteLine($"sample          {sample.Chunks} chunks of 64 KiB ({Format.Bytes(sample.Bytes)}): {est.ZeroFraction:0.0 %} zero, LZ4 to {est.CompressionRatio:0.0 %}");
        Console.WriteLine($"initial sync    {Format.Bytes(est.InitialSendBytes)} to send: {Days(est.InitialSyncSeconds)} at {link} ({Days(est.InitialSyncSecondsUncompressed)} uncompressed)");
        Console.WriteLine($"daily change    {Format.Bytes(est.DailyChangeBytes)}/day ({dailyBasis}): {Format.Bytes(est.DailySendBytes)} to send, {Days(est.DailySyncSeconds)}/day at {link} ({est.DailyLinkUtilization:0.0 %} of the link)");
        Console.WriteLine(est.KeepsUp ? "link keeps up   yes" : $"link keeps up   NO: a day's change needs {Days(est.DailySyncSeconds)} at {link}; replication falls further behind every day");
        return ExitCodes.Ok;
    }

    private static string Days(double seconds) =>
        seconds >= 2 * TransferEstimate.SecondsPerDay ? $"{seconds / TransferEstimate.SecondsPerDay:0.0} days" : Format.Duration(seconds);

    /// <summary><c>--link</c>: a rate like 1Gbps (decimal bit/s), not unlimited.</summary>
    internal static long ParseLink(string text)
    {
        try
        {
            return BandwidthSchedule.ParseRate(text) ?? throw new UsageException($"--link {text}: give the link's speed, e.g. 1Gbps or 500Mbps");
        }
        catch (BandwidthScheduleException) { throw new UsageException($"--link '{text}': not a link speed; give bits per second with Kbps, Mbps or Gbps (decimal), e.g. 1Gbps or 500Mbps"); }
    }

    /// <summary><c>--daily-change</c>: a percentage of the allocated bytes, <c>2%</c> or <c>2</c>, above 0 and at most 100.</summary>
    internal static double ParsePercent(string text)
    {
        string t = text.Trim().TrimEnd('%').Trim();
        if (double.TryParse(t, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double p) && p > 0 && p <= 100) return p;
        throw new UsageException($"--daily-change '{text}': give a percentage of the allocated bytes above 0 and at most 100, e.g. 2%");
    }

    /// <summary>The source's allocated ranges, merged, in order.</summary>
    private static List<(long Start, long Length)> Allocation(IBlockSource source, CancellationToken ct)
    {
        var extents = new List<(long Start, long Length)>();
        void Add(long start, long end)
        {
            if (end <= start) return;
            if (extents.Count > 0 && extents[^1].Start + extents[^1].Length == start)
                extents[^1] = (extents[^1].Start, end - extents[^1].Start);
            else extents.Add((start, end - start));
        }
        long size = source.Size;
        if (source is BlockSource { Kind: SourceKind.BlockDevice })
        {
            Add(0, size);     // a device has no holes to ask about
            return extents;
        }
        bool exactHoles = source is BlockSource { Kind: SourceKind.ImageFile };
        long pos = 0;
        while (pos < size)
        {
            ct.ThrowIfCancellationRequested();
            long start = source.NextData(pos);
            if (start >= size) break;
            long end;
            if (exactHoles)
            {
                try { end = Math.Min(size, LinuxFile.SeekHole(((BlockSource)source).Handle, start)); }
                catch (NativeIoException) { end = size; }
                if (end <= start) end = Math.Min(size, start + AllocationGranule);
            }
            else end = Math.Min(size, start - start % AllocationGranule + AllocationGranule);
            Add(start, end);
            pos = end;
        }
        return extents;
    }

    private readonly record struct SampleResult(int Chunks, long Bytes, double ZeroFraction, double Ratio);

    /// <summary>
    /// Reads every allocated 64 KiB chunk when they fit in <see cref="MaxSampleBytes"/>, else that many bytes of
    /// chunks at seeded random places (uniform over allocated bytes), and measures zeros and LZ4 as a backup would.
    /// </summary>
    private static SampleResult Sample(IBlockSource source, List<(long Start, long Length)> extents, long allocated, CancellationToken ct)
    {
        var chunks = new List<(long Offset, int Length)>();
        if (allocated <= MaxSampleBytes)
        {
            foreach (var (start, length) in extents)
                for (long o = start; o < start + length;)
                {
                    long next = Math.Min(start + length, o - o % SampleChunk + SampleChunk);
                    chunks.Add((o, (int)(next - o)));
                    o = next;
                }
        }
        else
        {
            var cumulative = new long[extents.Count];
            long sum = 0;
            for (int i = 0; i < extents.Count; i++) { cumulative[i] = sum; sum += extents[i].Length; }
            var rng = new Random(SampleSeed);
            var seen = new HashSet<long>();
            int wanted = (int)(MaxSampleBytes / SampleChunk);
            for (int tries = 0; seen.Count < wanted && tries < wanted * 4; tries++)
            {
                long r = rng.NextInt64(allocated);
                int i = Array.BinarySearch(cumulative, r);
                if (i < 0) i = ~i - 1;
                var (start, length) = extents[i];
                long at = start + (r - cumulative[i]);
                long chunkStart = Math.Max(start, at - at % SampleChunk);
                if (!seen.Add(chunkStart)) continue;
                long chunkEnd = Math.Min(start + length, chunkStart - chunkStart % SampleChunk + SampleChunk);
                chunks.Add((chunkStart, (int)(chunkEnd - chunkStart)));
            }
            chunks.Sort();
        }

        var buffer = new byte[SampleChunk];
        var encoded = new byte[Lz4Block.MaxEncodedLength(SampleChunk)];
        long total = 0, zero = 0, raw = 0, stored = 0;
        foreach (var (offset, length) in chunks)
        {
            ct.ThrowIfCancellationRequested();
            int n = source.ReadBatch(buffer, offset, length);
            var data = buffer.AsSpan(0, n);
            total += n;
            if (!data.ContainsAnyExcept((byte)0)) { zero += n; continue; }
            raw += n;
            stored += Lz4Block.TryEncode(data, encoded, out int written) ? written : n;
        }
        return new SampleResult(chunks.Count, total, total == 0 ? 0 : (double)zero / total, raw == 0 ? 1 : (double)stored / raw);
    }
}

/// <summary><c>--bwlimit SCHEDULE</c> of backup: the process-wide limiter and the decorators it feeds (docs/bandwidth.md).</summary>
internal static class BandwidthOptions
{
    /// <summary>The limiter for <c>--bwlimit</c>, or null when absent or unlimited at every time.</summary>
    public static BandwidthLimiter? Limiter(string? text)
    {
        if (text is null) return null;
        BandwidthSchedule schedule;
        try { schedule = BandwidthSchedule.Parse(text); }
        catch (BandwidthScheduleException e) { throw new UsageException($"--bwlimit: {e.Message}"); }
        return schedule.IsUnlimited ? null : new BandwidthLimiter(schedule);
    }

    public static IEbsClient Throttle(IEbsClient client, BandwidthLimiter? limiter) =>
        limiter is null ? client : new ThrottledEbsClient(client, limiter);
}
