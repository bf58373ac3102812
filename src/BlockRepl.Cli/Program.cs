using System.Runtime.InteropServices;
using BlockRepl.Cli;
using BlockRepl.Engine;
using Serilog;
using Serilog.Events;

return await CliApp.RunAsync(args).ConfigureAwait(false);

namespace BlockRepl.Cli
{
    internal static class CliApp
    {
        public const string Usage = """
            blockrepl: block-level incremental backup and replication

            usage:
              blockrepl backup <image|device> --repo <dir|s3://…|ebs://REGION> [--to ebs://REGION] [--tag T]... [--state-dir DIR] [--host NAME] [--storage-class C] [--json] [--drop-cache] [--direct-io] [--point-in-time auto|reflink|none] [--lock-wait 10m]
              blockrepl snapshots --repo <dir> [--json]
              blockrepl restore <id|latest> --repo <dir> --to <file|device> [--json]
              blockrepl restore <snap-id|latest> --repo ebs://REGION --to <file|device> [--size BYTES]
              blockrepl verify --repo <dir> [--read-data] [--json]
              blockrepl copy --from <repo> --to <repo> [<id|latest>...] [--from-endpoint-url U] [--to-endpoint-url U] [--storage-class C] [--lock-wait 10m] [--json]
              blockrepl ebs-copy <snap-id> --from ebs://REGION --to ebs://REGION [--from-endpoint-url U] [--to-endpoint-url U] [--json]
              blockrepl forget --repo <dir|s3://…> <id>... [--dry-run] [--json]
              blockrepl prune --repo <dir|s3://…> [--dry-run] [--max-repack-waste 25%] [--remove-stale-locks] [--stale-lock-age 30m] [--json]
              blockrepl init --repo <dir> [--chunk-size 64K] [--storage-class C]
              blockrepl seed export <source> --to DIR [--repo TARGET] [--state-dir D] [--host NAME] [--json]   (docs/seed.md)
              blockrepl seed import --from DIR --repo <dir|s3://…> [--json]
              blockrepl estimate <image|device|nbd://…> --link 1Gbps [--daily-change 2% | --repo R] [--json]   (docs/estimate.md)
              blockrepl demo [--size 1G] [--keep] [--dir DIR]
              blockrepl ebs-endpoint --data DIR [--listen 127.0.0.1:PORT] [--no-auth] [--put-rate N] [--minute 60s] ... (docs/ebs-endpoint.md)
              blockrepl daemon [--config /etc/blockrepl/blockrepl.json] [--setting=value]...   (docs/daemon.md)
              blockrepl status [--url http://127.0.0.1:9184] [--config FILE] [--json]
              blockrepl inventory [--json] [--repo <dir|s3://…> [--state-dir DIR] [--name N]]   (docs/servers.md)
              blockrepl fleet --repo <dir|s3://…> [--json] [--endpoint-url U]
              blockrepl help | version

            sources: a raw image file, a block device, an NBD export (nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT),
              or a QEMU volume tracked by dirty bitmaps: qcow2:PATH (an image not in use) or qmp:SOCKET?node=NODE (a running VM)
            repositories: a local directory, or s3://bucket/prefix (credentials and region the AWS CLI way;
              --endpoint-url URL or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL for S3-compatible stores;
              --storage-class STANDARD_IA, GLACIER_IR… for packs, everything else stays STANDARD)
            EBS snapshot chains: ebs://REGION as a --repo/--to of backup (first run FULL, then incremental children
              with ParentSnapshotId; an interrupted snapshot resumes); --ebs-endpoint-url U or AWS_ENDPOINT_URL_EBS,
              --ebs-tag K=V, --ebs-description D, --ebs-encrypted, --ebs-kms-key ARN, --ebs-timeout MIN,
              --ebs-no-wait, --ebs-new-chain, --ebs-parent snap-…, --profile P
            bandwidth: backup --bwlimit 20Mbps, or a schedule '20Mbps Mon-Fri 08:00-18:00; 100Mbps Sat,Sun; unlimited' (docs/bandwidth.md)
            common options: --verbose (debug logs), --no-progress, --workers N
            """;

        public static async Task<int> RunAsync(string[] argv)
        {
            using var cts = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; cts.Cancel(); });
            bool verbose = argv.Contains("--verbose");
            Log.Logger = new LoggerConfiguration()
                .MinimumLevel.Is(verbose ? LogEventLevel.Debug : LogEventLevel.Information)
                .WriteTo.Console(outputTemplate: "{Level:u3} {Message:lj}{NewLine}", standardErrorFromLevel: LogEventLevel.Verbose)
                .CreateLogger();
            try
            {
                if (argv.Length == 0) { Console.Error.WriteLine(Usage); return ExitCodes.Usage; }
                string command = argv[0];
                var rest = argv.Skip(1).ToArray();
                return command switch
                {
                    "backup" => await Commands.BackupAsync(rest, cts.Token).ConfigureAwait(false),
                    "snapshots" => await Commands.SnapshotsAsync(rest, cts.Token).ConfigureAwait(false),
                    "restore" => await Commands.RestoreAsync(rest, cts.Token).ConfigureAwait(false),
                    "verify" => await Commands.VerifyAsync(rest, cts.Token).ConfigureAwait(false),
                    "copy" => await Commands.CopyAsync(rest, cts.Token).ConfigureAwait(false),
                    "ebs-copy" => await Commands.EbsCopyAsync(rest, cts.Token).ConfigureAwait(false),
                    "forget" => await Commands.ForgetAsync(rest, cts.Token).ConfigureAwait(false),
                    "prune" => await Commands.PruneAsync(rest, cts.Token).ConfigureAwait(false),
                    "init" => await Commands.InitAsync(rest, cts.Token).ConfigureAwait(false),
                    "seed" => await SeedCommands.RunAsync(rest, cts.Token).ConfigureAwait(false),
                    "estimate" => await EstimateCommand.RunAsync(rest, cts.Token).ConfigureAwait(false),
                    "demo" => await Demo.RunAsync(rest, cts.Token).ConfigureAwait(false),
                    "ebs-endpoint" => await EbsEndpointCommand.RunAsync(rest, cts.Token).ConfigureAwait(false),
                    "daemon" => await DaemonCommands.DaemonAsync(rest, cts.Token).ConfigureAwait(false),
                    "status" => await DaemonCommands.StatusAsync(rest, cts.Token).ConfigureAwait(false),
                    "inventory" => await ServerCommands.InventoryAsync(rest, cts.Token).ConfigureAwait(false),
                    "fleet" => await ServerCommands.FleetAsync(rest, cts.Token).ConfigureAwait(false),
                    "help" or "--help" or "-h" => PrintUsage(),
                    "version" or "--version" => PrintVersion(),
                    _ => throw new UsageException($"unknown command '{command}' (see 'blockrepl help')"),
                };
            }
            catch (Exception e)
            {
                var (code, message) = ExitCodes.Classify(e);
                Console.Error.WriteLine($"blockrepl: {message}");
                if (code == ExitCodes.Internal || verbose) Log.Debug(e, "details");
                return code;
            }
            finally
            {
                await Log.CloseAndFlushAsync().ConfigureAwait(false);
            }
        }

        private static int PrintUsage() { Console.WriteLine(Usage); return ExitCodes.Ok; }

        private static int PrintVersion()
        {
            Console.WriteLine($"blockrepl {typeof(CliApp).Assembly.GetName().Version} (repository format 1)");
            return ExitCodes.Ok;
        }
    }
}
