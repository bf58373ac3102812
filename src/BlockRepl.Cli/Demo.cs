using System.Diagnostics;
using BlockRepl.Core.Formats;
using BlockRepl.Engine;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using Serilog;

namespace BlockRepl.Cli;

/// <summary>
/// The embedded default job: sample disk → full backup → ~1 % scattered change → incremental →
/// restore both recovery points → byte-for-byte compare → verify --read-data → figures.
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

            Console.WriteLine($"== blockrepl demo in {dir}");
            var sw = Stopwatch.StartNew();
            string what = SampleDisk.Create(image, size, seed: 7);
            Console.WriteLine($"sample disk: {image}, {Format.Bytes(size)}, {what} ({sw.Elapsed.TotalSeconds:0.0} s)");

            await using var repo = await RepositoryLocator.InitAsync(repoDir, ChunkGeometry.DefaultChunkSize, ct).ConfigureAwait(false);
            var options = new BackupOptions { StateDir = stateDir, Tags = ["demo"] };

            Console.WriteLine("\n== 1. full backup");
            var full = await BackupAsync(repo, options, image, progress, ct).ConfigureAwait(false);
            File.Copy(image, image + ".v1");

            Console.WriteLine("\n== 2. change ~1 % of the disk (scattered 64 KiB writes)");
            long changed = SampleDisk.ScatteredWrites(image, 0.01, seed: 42);
            Console.WriteLine($"wrote {Format.Bytes(changed)} at {changed / 65536} random 64 KiB-aligned offsets");

            Console.WriteLine("\n== 3. incremental backup");
            var incr = await BackupAsync(repo, options, image, progress, ct).ConfigureAwait(false);

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

            Console.WriteLine("\n== 5. verify --read-data");
            var report = await new VerifyJob(repo.Backend).RunAsync(readData: true, ct).ConfigureAwait(false);
            Console.WriteLine(report.Ok ? $"repository ok: {report.Blobs} blobs in {report.Packs} packs re-hashed" : $"verify found {report.Problems.Count} problems");

            long repoBytes = new DirectoryInfo(repoDir).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            Console.WriteLine("\n== figures");
            Console.WriteLine($"  full backup         {Figures(full)}");
            Console.WriteLine($"  incremental backup  {Figures(incr)}");
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

    private static async Task<BackupResult> BackupAsync(Repo repo, BackupOptions options, string image, bool progress, CancellationToken ct)
    {
        using var source = BlockSource.Open(image);
        var job = new BackupJob(repo, options, Log.Logger);
        BackupResult r = await Commands.WithProgress(job.Progress, progress, () => job.RunAsync(source, ct)).ConfigureAwait(false);
        Commands.PrintBackup(r);
        return r;
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
