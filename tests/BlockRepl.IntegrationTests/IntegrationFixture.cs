using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// Typed wrappers over <see cref="CliRunner"/> for the round-trip, loop-device and corruption tests:
/// every call runs the real binary and parses its <c>--json</c> output.
/// </summary>
internal static class Cli
{
    /// <summary><c>backup SOURCE --repo REPO --state-dir STATE --json --no-progress</c>, asserting exit 0.</summary>
    public static JsonElement Backup(string source, string repo, string stateDir, params string[] extra) =>
        Json(CliRunner.Ok(["backup", source, "--repo", repo, "--state-dir", stateDir, "--json", "--no-progress", .. extra]));

    /// <summary><c>restore ID --repo REPO --to TARGET --json --no-progress</c>, asserting exit 0.</summary>
    public static JsonElement Restore(string id, string repo, string target) =>
        Json(CliRunner.Ok("restore", id, "--repo", repo, "--to", target, "--json", "--no-progress"));

    public static CliRunner.Result TryRestore(string id, string repo, string target) =>
        CliRunner.Run("restore", id, "--repo", repo, "--to", target, "--json", "--no-progress");

    public static JsonElement[] Snapshots(string repo) =>
        [.. Json(CliRunner.Ok("snapshots", "--repo", repo, "--json")).EnumerateArray()];

    /// <summary>Runs <c>verify --json</c>; the report is parsed whatever the exit code.</summary>
    public static (CliRunner.Result Result, JsonElement Report) Verify(string repo, bool readData)
    {
        string[] args = readData
            ? ["verify", "--repo", repo, "--read-data", "--json", "--no-progress"]
            : ["verify", "--repo", repo, "--json", "--no-progress"];
        var r = CliRunner.Run(args);
        JsonElement report;
        try
        {
            report = Json(r.Stdout);
        }
        catch (JsonException e)
        {
            throw new Xunit.Sdk.XunitException($"verify printed no JSON report ({e.Message}): {r}");
        }

        return (r, report);
    }

    public static JsonElement Json(string stdout)
    {
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.Clone();
    }

    public static long Long(this JsonElement e, string name) => e.GetProperty(name).GetInt64();

    public static string Str(this JsonElement e, string name) =>
        e.GetProperty(name).GetString() ?? throw new Xunit.Sdk.XunitException($"'{name}' is null in {e}");

    /// <summary>The recovery point ids named in a verify report's <c>affected</c> object, sorted.</summary>
    public static string[] AffectedIds(JsonElement report) =>
        [.. report.GetProperty("affected").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal)];

    /// <summary>
    /// A failed command must explain itself in exactly one stderr line that starts with
    /// "blockrepl:", with no stack trace on either stream, and exit with the documented code.
    /// </summary>
    public static void AssertOneLineError(CliRunner.Result r, int exitCode, string? mentions = null)
    {
        Assert.True(r.ExitCode == exitCode, $"expected exit {exitCode}: {r}");
        string[] lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, $"expected one stderr line: {r}");
        Assert.StartsWith("blockrepl: ", lines[0], StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", r.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", lines[0], StringComparison.Ordinal);
        if (mentions is not null) Assert.Contains(mentions, lines[0], StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>A new-file restore that failed must leave neither the target nor its temporary file behind.</summary>
    public static void AssertNoRestoreLeftovers(string target)
    {
        Assert.False(File.Exists(target), $"a failed restore created {target}");
        string dir = Path.GetDirectoryName(target)!;
        string name = Path.GetFileName(target);
        var leftovers = Directory.GetFiles(dir).Where(f => Path.GetFileName(f).StartsWith(name, StringComparison.Ordinal)).ToArray();
        Assert.True(leftovers.Length == 0, $"a failed restore left {string.Join(", ", leftovers)}");
    }
}

/// <summary>
/// The chunks of a volume image as the repository should see them: SHA-256 of every 64 KiB chunk (the
/// default chunk size), computed here independently of the product so the expected figures of a backup
/// (changed, new, zero bytes) come from the data itself.
/// </summary>
public sealed class ChunkScan
{
    public const int ChunkSize = 64 * 1024;

    private ChunkScan(string?[] ids, int[] lengths)
    {
        Ids = ids;
        Lengths = lengths;
        foreach (var (id, len) in ids.Zip(lengths))
        {
            if (id is null) continue;
            NonZeroBytes += len;
            Distinct.TryAdd(id, len);
        }
    }

    /// <summary>Lower-case hex SHA-256 per chunk, null for an all-zero chunk.</summary>
    public string?[] Ids { get; }
    public int[] Lengths { get; }
    public long NonZeroBytes { get; }
    /// <summary>Distinct non-zero chunk id → its length.</summary>
    public Dictionary<string, int> Distinct { get; } = new(StringComparer.Ordinal);
    public long DistinctBytes => Distinct.Values.Sum(v => (long)v);

    public static ChunkScan Of(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20, FileOptions.SequentialScan);
        var ids = new List<string?>();
        var lengths = new List<int>();
        var buffer = new byte[ChunkSize];
        while (true)
        {
            int n = fs.ReadAtLeast(buffer, ChunkSize, throwOnEndOfStream: false);
            if (n == 0) break;
            var chunk = buffer.AsSpan(0, n);
            ids.Add(chunk.ContainsAnyExcept((byte)0) ? Convert.ToHexStringLower(SHA256.HashData(chunk)) : null);
            lengths.Add(n);
            if (n < ChunkSize) break;
        }

        return new ChunkScan([.. ids], [.. lengths]);
    }

    /// <summary>Bytes of the distinct non-zero chunks of this scan that <paramref name="older"/> lacks (what an incremental must store).</summary>
    public long BytesNotIn(ChunkScan older) => Distinct.Where(kv => !older.Distinct.ContainsKey(kv.Key)).Sum(kv => (long)kv.Value);

    /// <summary>Bytes of chunks whose content differs from <paramref name="older"/> at the same position (what an incremental must call changed).</summary>
    public long ChangedBytesSince(ChunkScan older)
    {
        long changed = 0;
        for (int i = 0; i < Ids.Length; i++)
        {
            string? before = i < older.Ids.Length ? older.Ids[i] : null;
            if (Ids[i] != before) changed += Lengths[i];
        }

        return changed;
    }
}

/// <summary>One 64-byte entry of a pack's blob table (docs/format.md §4), parsed independently of the product.</summary>
internal sealed record PackEntry(string Pack, string Id, long Offset, int StoredLength, int RawLength, byte Type, byte Compression)
{
    public const byte Data = 1;
    public const byte Tree = 2;
    public const byte Lz4 = 1;
}

/// <summary>Looks inside a local repository directory the way an operator (or a disk fault) would.</summary>
internal static class RepoFiles
{
    public static string[] Packs(string repo) => Find(repo, "data", "*.pack");
    public static string[] Indexes(string repo) => Find(repo, "index", "*.idx");
    public static string Manifest(string repo, string id) => Path.Combine(repo, "snapshots", id + ".snap");

    /// <summary>The index file of <paramref name="packPath"/> (index/xx/&lt;packid&gt;.idx).</summary>
    public static string IndexOf(string repo, string packPath)
    {
        string packId = Path.GetFileNameWithoutExtension(packPath);
        return Path.Combine(repo, "index", packId[..2], packId + ".idx");
    }

    private static string[] Find(string repo, string dir, string pattern)
    {
        string root = Path.Combine(repo, dir);
        return Directory.Exists(root) ? [.. Directory.GetFiles(root, pattern, SearchOption.AllDirectories).Order(StringComparer.Ordinal)] : [];
    }

    /// <summary>Reads the blob table through the 32-byte trailer: u64 tableOffset | u32 count | … | "BRPKEND\0".</summary>
    public static PackEntry[] ReadTable(string packPath)
    {
        byte[] pack = File.ReadAllBytes(packPath);
        Assert.True(pack.AsSpan(0, 6).SequenceEqual("BRPACK"u8), $"{packPath} has no BRPACK header");
        var trailer = pack.AsSpan(pack.Length - 32);
        Assert.True(trailer[24..].SequenceEqual("BRPKEND\0"u8), $"{packPath} has no BRPKEND trailer");
        long tableOffset = BinaryPrimitives.ReadInt64LittleEndian(trailer);
        int count = BinaryPrimitives.ReadInt32LittleEndian(trailer[8..]);
        var entries = new PackEntry[count];
        for (int i = 0; i < count; i++)
        {
            var e = pack.AsSpan((int)tableOffset + (i * 64), 64);
            entries[i] = new PackEntry(
                packPath,
                Convert.ToHexStringLower(e[..32]),
                BinaryPrimitives.ReadInt64LittleEndian(e[32..]),
                BinaryPrimitives.ReadInt32LittleEndian(e[40..]),
                BinaryPrimitives.ReadInt32LittleEndian(e[44..]),
                e[48],
                e[49]);
        }

        return entries;
    }

    public static PackEntry[] AllEntries(string repo) => [.. Packs(repo).SelectMany(ReadTable)];

    /// <summary>Inverts every bit of one byte in place, as a bad sector would.</summary>
    public static void FlipByte(string path, long offset)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.Position = offset;
        int b = fs.ReadByte();
        Assert.True(b >= 0, $"{path} has no byte at {offset}");
        fs.Position = offset;
        fs.WriteByte((byte)~b);
    }

    /// <summary>Copies a repository tree so that each test can damage its own copy.</summary>
    public static void CopyTree(string from, string to)
    {
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }
}

/// <summary>Small helpers for volumes: copies of files and block devices, seeded overwrites.</summary>
internal static class Volumes
{
    /// <summary>Copies the content of a file or block device into a new regular file.</summary>
    public static void CopyContent(string from, string to)
    {
        using var src = new FileStream(from, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20);
        using var dst = new FileStream(to, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        src.CopyTo(dst, 1 << 20);
    }

    /// <summary>A sparse-preserving copy (<c>cp --sparse=always</c>), for large mostly empty images.</summary>
    public static void CopySparse(string from, string to) =>
        TestKit.Processes.Run("cp", $"--sparse=always {TestKit.Processes.Quote(from)} {TestKit.Processes.Quote(to)}");

    /// <summary>Bytes actually allocated on disk for <paramref name="path"/> (st_blocks × 512).</summary>
    public static long AllocatedBytes(string path)
    {
        var (_, stdout, _) = TestKit.Processes.Run("stat", $"-c %b {TestKit.Processes.Quote(path)}");
        return long.Parse(stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture) * 512;
    }

    /// <summary>Writes seeded random bytes at <paramref name="offset"/> through a FileStream and flushes them to the device.</summary>
    public static void WriteRandom(string path, long offset, int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
        fs.Position = offset;
        fs.Write(data);
        fs.Flush(flushToDisk: true);
    }
}
