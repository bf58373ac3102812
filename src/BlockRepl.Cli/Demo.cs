using System.Diagnostics;
using BlockRepl.Core.Formats;
using BlockRepl.Ebs.Endpoint;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using Serilog;

namespace BlockRepl.Cli;

/// <summary>
/// The embedded default job: sample disk → full backup → ~1 % scattered change → incremental →
/// restore both recovery points → byte-for-byte compare → verify --read-data → figures. Each backup's
/// read also feeds an EBS snapshot chain on a local EBS-compatible endpoint (SigV4-verified, started
/// in-process on 127.0.0.1), whose incremental snapshot is restored and compared too.
/// </summary>
internal static class Demo
{
    public static async Task<int> RunAsync(string[] argv, CancellationToken ct)
    {
        var a = Args.Parse(argv, new HashSet<string> { "--size", "--dir", "--workers" }, new HashSet<string> { "--keep", "--verbose", "--no-progress" });
        if (a.Positionals.Count > 0) throw new UsageException($"demo takes no arguments (got '{a.Positionals[0]}')");
        long size = Args.ParseSize(a.Value("--size") ?? "1G", "--size");
        if (size < 64L << 20) throw new UsageException("--size: at least 64M");
        string dir = a.Value("--dir") ?? Path.Combine(Path.GetTempPath(), $"blockrepl-demo-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        bool keep = a.Flag("--keep") || a.Value("--dir") is not null;
        bool progress = !a.Flag("--no-progress");
        var rows = new List<(string Step, string Figures)>();
        try
        {
            string image = Path.Combine(dir, "sample-disk.img");
            string repoDir = Path.Combine(dir, "repo");
            string stateDir = Path.Combine(dir, "state");
            foreach (var p in new[] { image, image + ".v1", Path.Combine(dir, "restore-1.img"), Path.Combine(dir, "restore-2.img") })
                File.Delete(p);
            if (Directory.Exists(repoDir)) Directory.Delete(repoDir, true);
            if (Directory.Exists(stateDir)) Directory.Delete(stateDir, true);
            string ebsDir = Path.Combine(dir, "ebs-endpoint");
            if (Directory.Exists(ebsDir)) Directory.Delete(ebsDir, true);

            Console.WriteLine($"== blockrepl demo in {dir}");
            var sw = Stopwatch.StartNew();
            string what = SampleDisk.Create(image, size, seed: 7);
            Console.WriteLine($"sample disk: {image}, {Format.Bytes(size)}, {what} ({sw.Elapsed.TotalSeconds:0.0} s)");

            await using var repo = await RepositoryLocator.InitAsync(repoDir, ChunkGeometry.DefaultChunkSize, ct).ConfigureAwait(false);

            // A local EBS-compatible endpoint with throwaway credentials: the second target of every backup.
            string accessKey = "AKID" + Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8));
            string secretKey = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(30));
            await using var endpoint = new EbsEndpointServer(new EbsEndpointOptions
            {
                DataDirectory = ebsDir, AccessKeyId = accessKey, SecretAccessKey = secretKey,
                CompletionDelay = TimeSpan.FromMilliseconds(200), Durable = false,
            });
            Uri ebsUrl = await endpoint.StartAsync(ct).ConfigureAwait(false);
            using var ebsClient = BlockRepl.Storage.Ebs.EbsClient.Create(new BlockRepl.Storage.Ebs.EbsClientOptions
            {
                Region = "us-east-1", EndpointUrl = ebsUrl, Credentials = new Amazon.Runtime.BasicAWSCredentials(accessKey, secretKey),
            });
            Console.WriteLine($"EBS-compatible endpoint: {ebsUrl} (ebs://us-east-1, SigV4 verified)");

            Console.WriteLine("\n== 1. full backup (repository + EBS snapshot chain, one read)");
            var (full, ebsFull) = await BackupAsync(repo, ebsClient, stateDir, image, progress, ct).ConfigureAwait(false);
            File.Copy(image, image + ".v1");

            Console.WriteLine("\n== 2. change ~1 % of the disk (scattered 64 KiB writes)");
            long changed = SampleDisk.ScatteredWrites(image, 0.01, seed: 42);
            Console.WriteLine($"wrote {Format.Bytes(changed)} at {changed / 65536} random 64 KiB-aligned offsets");

            Console.WriteLine("\n== 3. incremental backup (repository + EBS child snapshot)");
            var (incr, ebsIncr) = await BackupAsync(repo, ebsClient, stateDir, image, progress, ct).ConfigureAwait(false);

            Console.WriteLine("\n== 4. restore both recovery points and compare byte for byte");
            bool allEqual = true;
            foreach (var (result, original, name) in new[] { (full, image + ".v1", "restore-1.img"), (incr, image, "restore-2.img") })
            {
                string target = Path.Combine(dir, name);
                var job = new RestoreJob(repo, Log.Logger);
                RestoreResult r = await Commands.WithProgress(job.Progress, progress, () => job.RunAsync(result.Manifest, target, ct)).ConfigureAwait(false);
                bool equal = SameContent(original, target);
                allEqual &= equal;
                Console.WriteLine($"restored {result.Manifest.Id[..8]} in {Format.Duration(r.Seconds)} ({Format.Rate(r.Size, r.Seconds)}): {(equal ? "identical to the source" : "DIFFERENT FROM THE SOURCE")}");
                rows.Add(($"restore {result.Manifest.Id[..8]}", $"{Format.Duration(r.Seconds)}, {Format.Rate(r.Size, r.Seconds)}, {(equal ? "byte-identical" : "MISMATCH")}"));
            }

            {
                string target = Path.Combine(dir, "restore-ebs.img");
                File.Delete(target);
                var job = new EbsRestoreJob(ebsClient, Log.Logger);
                var r = await Commands.WithProgress(job.Progress, progress, () => job.RunAsync(ebsIncr.SnapshotId, target, size, ct)).ConfigureAwait(false);
                bool equal = SameContent(image, target);
                allEqual &= equal;
                Console.WriteLine($"restored EBS {r.SnapshotId} in {Format.Duration(r.Seconds)} ({Format.Rate(r.Size, r.Seconds)}): {(equal ? "identical to the source" : "DIFFERENT FROM THE SOURCE")}");
                rows.Add(($"restore EBS", $"{Format.Duration(r.Seconds)}, {Format.Rate(r.Size, r.Seconds)}, {(equal ? "byte-identical" : "MISMATCH")}"));
                File.Delete(target);
            }

            Console.WriteLine("\n== 5. verify --read-data");
            var report = await new VerifyJob(repo.Backend).RunAsync(readData: true, ct).ConfigureAwait(false);
            Console.WriteLine(report.Ok ? $"repository ok: {report.Blobs} blobs in {report.Packs} packs re-hashed" : $"verify found {report.Problems.Count} problems");

            long repoBytes = new DirectoryInfo(repoDir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            Console.WriteLine("\n== figures");
            Console.WriteLine($"  full backup         {Figures(full)}");
            Console.WriteLine($"  incremental backup  {Figures(incr)}");
            Console.WriteLine($"  EBS full snapshot   {ebsFull.SnapshotId}: {ebsFull.BlocksPut} blocks of 512 KiB put");
            Console.WriteLine($"  EBS child snapshot  {ebsIncr.SnapshotId}: {ebsIncr.BlocksPut} changed blocks put (parent {ebsIncr.ParentSnapshotId})");
            Console.WriteLine($"  changed by the test {Format.Bytes(changed)}; incremental stored {Format.Bytes(incr.Manifest.Stats.NewBytes)} of new chunks before compression ({(double)incr.Manifest.Stats.NewBytes / changed:0.00}x)");
            foreach (var (step, figures) in rows) Console.WriteLine($"  {step,-19} {figures}");
            Console.WriteLine($"  repository          {Format.Bytes(repoBytes)} for {Format.Bytes(size)} disk ({(double)repoBytes / size:0.00}x), 2 recovery points");
            Console.WriteLine(keep ? $"\nkept everything in {dir}" : "\n(use --keep or --dir DIR to keep the files)");
            if (!allEqual || !report.Ok) throw new VerifyFailedException("demo: a restore did not match its source or verify failed");
            return ExitCodes.Ok;
        }
        finally
        {
            if (!keep) { try { Directory.Delete(dir, true); } catch (IOException) { } }
        }
    }

    private static string Figures(BackupResult r)
    {
        var s = r.Manifest.Stats;
        return $"{r.Manifest.Mode,-11} {Format.Duration(s.Seconds)}, {Format.Rate(s.ScannedBytes, s.Seconds)}, changed {Format.Bytes(s.ChangedBytes)}, stored {Format.Bytes(s.StoredBytes)}";
    }

    private static async Task<(BackupResult, EbsResult)> BackupAsync(Repo repo, BlockRepl.Storage.Ebs.IEbsClient ebsClient, string stateDir, string image, bool progress, CancellationToken ct)
    {
        using var source = BlockSource.Open(image);
        using var ebs = new EbsReplicator(ebsClient, new EbsTargetOptions { Description = "blockrepl demo" }, stateDir, Log.Logger);
        var (backup, ebsResult) = await ReplicationRun.RunAsync(source, repo, new BackupOptions { StateDir = stateDir, Tags = ["demo"], Observer = ebs },
            ebs, p => new ProgressPrinter(p, progress), Log.Logger, ct).ConfigureAwait(false);
        BackupResult r = backup!;
        EbsResult e = ebsResult!;
        Commands.PrintBackup(r);
        EbsCommands.Print(e);
        return (r, e);
    }

    private static bool SameContent(string a, string b)
    {
        using var fa = File.OpenHandle(a);
        using var fb = File.OpenHandle(b);
        long len = RandomAccess.GetLength(fa);
        if (len != RandomAccess.GetLength(fb)) return false;
        var ba = new byte[1 << 20];
        var bb = new byte[1 << 20];
        for (long o = 0; o < len; o += ba.Length)
        {
            int n = (int)Math.Min(ba.Length, len - o);
            if (RandomAccess.Read(fa, ba.AsSpan(0, n), o) != n || RandomAccess.Read(fb, bb.AsSpan(0, n), o) != n) return false;
            if (!ba.AsSpan(0, n).SequenceEqual(bb.AsSpan(0, n))) return false;
        }
        return true;
    }
}
