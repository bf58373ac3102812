using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using BlockRepl.Benchmarks;

// dotnet run -c Release --project benchmarks/BlockRepl.Benchmarks -- --filter '*' [--job short]
// `--job short` (3 warm-up + 3 measured iterations, one process) is the quick run; without it BDN's
// default job iterates until the confidence interval settles. Results: BenchmarkDotNet.Artifacts/.
var config = DefaultConfig.Instance
    .AddColumn(StatisticColumn.Min)
    .AddColumn(new ThroughputColumn(), new ThroughputColumn(fromMin: true))
    .WithOptions(ConfigOptions.DisableLogFile);
BenchmarkSwitcher.FromAssembly(typeof(ThroughputColumn).Assembly).Run(args, config);
