using System.Diagnostics;
using System.Text;

namespace BlockRepl.Cli;

/// <summary>
/// Builds the demo's sample disk: a real ext4 filesystem (mkfs.ext4 -d) holding real files copied from
/// this machine (/usr/share, /usr/lib, /usr/include), generated logs and a database-like file, with free
/// space and zeros, so compression, zero skipping and scattered changes behave as on a real server.
/// </summary>
internal static class SampleDisk
{
    public static string Create(string imagePath, long size, int seed)
    {
        string staging = imagePath + ".files";
        Directory.CreateDirectory(staging);
        try
        {
            long budget = size * 45 / 100;
            long used = CopyRealFiles(staging, budget * 2 / 3);
            used += WriteGenerated(staging, Math.Max(0, budget - used), seed);
            string? mkfs = FindTool("mkfs.ext4");
            if (mkfs is null)
            {
                WriteSynthetic(imagePath, size, seed);
                return "synthetic image (mkfs.ext4 not found: install e2fsprogs for a real ext4 filesystem)";
            }
            using (var f = File.Create(imagePath)) f.SetLength(size);
            var psi = new ProcessStartInfo(mkfs) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var arg in new[] { "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", staging, imagePath })
                psi.ArgumentList.Add(arg);
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) throw new IOException($"mkfs.ext4 failed: {err.Trim()}");
            return $"ext4 filesystem with {Format.Bytes(used)} of files";
        }
        finally
        {
            try { Directory.Delete(staging, recursive: true); } catch (IOException) { }
        }
    }

    private static string? FindTool(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/sbin", "/usr/sbin"]))
        {
            if (dir.Length == 0) continue;
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        return null;
    }

    private static long CopyRealFiles(string staging, long budget)
    {
        long used = 0;
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint };
        foreach (var root in new[] { "/usr/share/doc", "/usr/lib/x86_64-linux-gnu", "/usr/include", "/usr/share/locale", "/usr/lib" })
        {
            if (!Directory.Exists(root)) continue;
            foreach (var file in new DirectoryInfo(root).EnumerateFiles("*", options))
            {
                if (used >= budget) return used;
                if (file.Length == 0 || file.Length > 32 << 20) continue;
                string dest = Path.Combine(staging, "usr", Path.GetRelativePath("/usr", file.FullName));
                if (File.Exists(dest)) continue;
                try
                {
                    Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
                    File.Copy(file.FullName, dest);
                    used += file.Length;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            }
        }
        return used;
    }

    private static long WriteGenerated(string staging, long budget, int seed)
    {
        var rng = new Random(seed);
        string dir = Path.Combine(staging, "var", "log");
        Directory.CreateDirectory(dir);
        long used = 0;
        string[] words = ["GET", "POST", "/api/orders", "/health", "200", "404", "500", "user", "session", "commit", "checkpoint", "replica", "lag=0.3s", "backup", "ok"];
        for (int fileNo = 0; used < budget / 2; fileNo++)
        {
            var sb = new StringBuilder();
            for (int line = 0; line < 20000; line++)
                sb.Append($"2026-11-{1 + rng.Next(28):00}T{rng.Next(24):00}:{rng.Next(60):00}:{rng.Next(60):00}Z host{rng.Next(8)} {words[rng.Next(words.Length)]} {words[rng.Next(words.Length)]} id={rng.Next()}\n");
            var bytes = Encoding.ASCII.GetBytes(sb.ToString());
            File.WriteAllBytes(Path.Combine(dir, $"app-{fileNo}.log"), bytes);
            used += bytes.Length;
        }
        // A database-like file: 8 KiB pages of half-random, half-structured records.
        string db = Path.Combine(staging, "var", "lib", "db");
        Directory.CreateDirectory(db);
        using var f = File.Create(Path.Combine(db, "table.dat"));
        var page = new byte[8192];
        while (used < budget)
        {
            rng.NextBytes(page.AsSpan(0, 4096));
            for (int i = 4096; i < page.Length; i++) page[i] = (byte)(i % 7 == 0 ? rng.Next(256) : 'a' + i % 26);
            f.Write(page);
            used += page.Length;
        }
        return used;
    }

    private static void WriteSynthetic(string path, long size, int seed)
    {
        var rng = new Random(seed);
        using var f = File.Create(path);
        f.SetLength(size);
        var chunk = new byte[65536];
        for (long off = 0; off < size; off += chunk.Length)
        {
            int kind = rng.Next(10);
            if (kind < 3) continue;   // zeros
            if (kind < 6) rng.NextBytes(chunk);
            else for (int i = 0; i < chunk.Length; i++) chunk[i] = (byte)("the quick brown fox jumps over the lazy dog\n"[(i + kind) % 44]);
            f.Position = off;
            f.Write(chunk, 0, (int)Math.Min(chunk.Length, size - off));
        }
    }

    /// <summary>Overwrites ~<paramref name="fraction"/> of the image's 64 KiB blocks at random aligned offsets (seeded).</summary>
    public static long ScatteredWrites(string path, double fraction, int seed)
    {
        const int block = 65536;
        var rng = new Random(seed);
        using var h = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        long blocks = RandomAccess.GetLength(h) / block;
        int count = (int)Math.Max(1, blocks * fraction);
        var chosen = new HashSet<long>();
        while (chosen.Count < count) chosen.Add(rng.NextInt64(blocks));
        var buf = new byte[block];
        foreach (long b in chosen)
        {
            rng.NextBytes(buf);
            RandomAccess.Write(h, buf, b * block);
        }
        RandomAccess.FlushToDisk(h);
        return (long)count * block;
    }
}
