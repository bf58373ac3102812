namespace BlockRepl.Engine.Throttling;

/// <summary>
/// What replicating a volume over a link costs (docs/estimate.md): the initial sync and the daily change, in
/// bytes sent and time at the link's rate. Link rates are decimal bit/s like network links (1 Gbps =
/// 125,000,000 B/s); byte figures are plain bytes.
/// </summary>
/// <param name="SizeBytes">Volume size.</param>
/// <param name="AllocatedBytes">Bytes not in holes (what a full read must look at).</param>
/// <param name="ZeroFraction">Share of allocated bytes in all-zero chunks (sampled); these are not sent.</param>
/// <param name="CompressionRatio">LZ4 output / input of the non-zero sampled chunks, 1 when it did not pay (≤ 1).</param>
/// <param name="LinkBitsPerSecond">The link's rate.</param>
/// <param name="DailyChangeBytes">Bytes changed per day (assumed, or measured from a repository).</param>
public sealed record TransferEstimate(long SizeBytes, long AllocatedBytes, double ZeroFraction, double CompressionRatio, long LinkBitsPerSecond, long DailyChangeBytes)
{
    public const double SecondsPerDay = 86_400;

    /// <summary>The link in bytes per second.</summary>
    public double LinkBytesPerSecond => LinkBitsPerSecond / 8.0;

    /// <summary>What the initial sync sends: allocated, non-zero, compressed.</summary>
    public long InitialSendBytes => (long)Math.Round(AllocatedBytes * (1 - ZeroFraction) * CompressionRatio);

    public double InitialSyncSeconds => SecondsAt(InitialSendBytes, LinkBitsPerSecond);

    /// <summary>The initial sync if every allocated byte went over the link as is.</summary>
    public double InitialSyncSecondsUncompressed => SecondsAt(AllocatedBytes, LinkBitsPerSecond);

    /// <summary>What a day's change sends (changed data assumed to compress like the sample).</summary>
    public long DailySendBytes => (long)Math.Round(DailyChangeBytes * CompressionRatio);

    public double DailySyncSeconds => SecondsAt(DailySendBytes, LinkBitsPerSecond);

    /// <summary>Share of a day the link is busy with the daily change (1 = saturated).</summary>
    public double DailyLinkUtilization => DailySyncSeconds / SecondsPerDay;

    /// <summary>True when a day's change fits in a day at the link's rate.</summary>
    public bool KeepsUp => DailySyncSeconds < SecondsPerDay;

    /// <summary>Seconds to send <paramref name="bytes"/> at <paramref name="bitsPerSecond"/>.</summary>
    public static double SecondsAt(long bytes, long bitsPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bitsPerSecond, 1);
        return bytes * 8.0 / bitsPerSecond;
    }

    /// <summary>
    /// Average bytes changed per day over recovery points (time, changed bytes) of one source: the changes of
    /// every point after the first, divided by the days from the first to the last. Null with fewer than two
    /// points or no time between them.
    /// </summary>
    public static double? ChangedBytesPerDay(IEnumerable<(DateTimeOffset Time, long ChangedBytes)> points)
    {
        var ordered = points.OrderBy(p => p.Time).ToList();
        if (ordered.Count < 2) return null;
        double days = (ordered[^1].Time - ordered[0].Time).TotalDays;
        if (days <= 0) return null;
        return ordered.Skip(1).Sum(p => (double)p.ChangedBytes) / days;
    }
}
