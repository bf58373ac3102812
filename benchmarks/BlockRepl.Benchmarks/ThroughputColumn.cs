using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace BlockRepl.Benchmarks;

/// <summary>
/// GB/s of block content: the <c>BlockSize</c> parameter divided by the mean (or the fastest) time per
/// operation; bytes per ns = 10^9 B/s. Blank for benchmarks without a block size. The "best" variant
/// reads the Min statistic, which on a shared, noisy machine is the better estimate of the code's own cost.
/// </summary>
public sealed class ThroughputColumn(bool fromMin = false) : IColumn
{
    public string Id => nameof(ThroughputColumn) + (fromMin ? ".Min" : ".Mean");
    public string ColumnName => fromMin ? "GB/s (Min)" : "GB/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => fromMin ? 1 : 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => fromMin
        ? "Block content per second at the fastest iteration, BlockSize / Min (10^9 bytes/s)"
        : "Block content processed per second, BlockSize / Mean (10^9 bytes/s)";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, summary.Style);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        double? time = fromMin ? stats?.Min : stats?.Mean;
        var size = benchmarkCase.Parameters.Items.FirstOrDefault(p => p.Name == "BlockSize")?.Value;
        if (time is not > 0 || size is not int bytes) return "-";
        return (bytes / time.Value).ToString("0.00", CultureInfo.InvariantCulture);
    }

    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
}
