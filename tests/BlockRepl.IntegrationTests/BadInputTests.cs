using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using BlockRepl.Core.Formats;
using BlockRepl.Native.Linux;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>A small repository with one recovery point, shared by the bad-input tests (which must not change it).</summary>
public sealed class BadInputFixture : IDisposable
{
    public const long VolumeSize = 4L << 20;

    private readonly TempDir _dir = new("blockrepl-badinput");

    public BadInputFixture()
    {
        SourcePath = _dir.File("source.img");
        RepoPath = _dir.File("repo");
        StatePath = _dir.File("state");
        DiskImages.Random(SourcePath, VolumeSize, seed: 31);
        string json = CliRunner.Ok("backup", SourcePath, "--repo", RepoPath, "--state-dir", StatePath, "--json", "--no-progress");
        SnapshotId = System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("id").GetString()!;
    }

    public string SourcePath { get; }
    public string RepoPath { get; }
    public string StatePath { get; }
    public string SnapshotId { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// Every bad input of issue #2 gets one line on stderr starting "blockrepl:", no stack trace, its documented
/// exit code (src/BlockRepl.Cli/ExitCodes.cs), and leaves the repository, the source and the target as they were.
/// </summary>
public sealed partial class BadInputTests(BadInputFixture fx) : IClassFixture<BadInputFixture>, IDisposable
{
    private const int Usage = 2, Source = 3, Repository = 4, NotFound = 5, Target = 6;

    private readonly TempDir _dir = new("blockrepl-badinput-case");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void MissingSource_Exits3_AndCreatesNeitherRepositoryNorState()
    {
        string missing = _dir.File("no-such.img");
        string repo = _dir.File("new-repo");
        string state = _dir.File("state");
        var r = CliRunner.Run("backup", missing, "--repo", repo, "--state-dir", state, "--no-progress");
        AssertCleanFailure(r, Source, missing, "does not exist");
        Assert.False(Path.Exists(repo), "a failed backup created the repository directory");
        Assert.False(Path.Exists(state), "a failed backup created the state directory");

        Unchanged(fx.RepoPath, () => AssertCleanFailure(Backup(missing, fx.RepoPath), Source, missing));
    }

    [Fact]
    public void SourceIsADirectory_Exits3()
    {
        string dir = _dir.File("a-directory");
        Directory.CreateDirectory(dir);
        Unchanged(fx.RepoPath, () => AssertCleanFailure(Backup(dir, fx.RepoPath), Source, dir, "directory"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
    }

    [Fact]
    public void UnreadableSource_Exits3()
    {
        // Tests run as root, where mode 000 does not stop reads: the run drops to nobody with setpriv(1) instead.
        File.SetUnixFileMode(_dir.Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        string source = _dir.File("locked.img");
        DiskImages.Random(source, 1 << 20, seed: 5);
        File.SetUnixFileMode(source, UnixFileMode.None);
        string repo = _dir.File("repo");
        string state = _dir.File("state");
        string before = Fingerprint(source);

        CliRunner.Result r;
        if (LinuxFile.IsRoot)
        {
            Assert.True(Processes.HasCommand("setpriv"), "setpriv (util-linux) is needed to run blockrepl as an unprivileged user");
            string args = string.Join(' ', new[]
            {
                "--reuid=65534", "--regid=65534", "--clear-groups", "dotnet", CliRunner.DllPath,
                "backup", source, "--repo", repo, "--state-dir", state, "--no-progress",
            }.Select(Processes.Quote));
            var (code, stdout, stderr) = Processes.Run("setpriv", args, check: false, timeout: TimeSpan.FromMinutes(2));
            r = new CliRunner.Result(code, stdout, stderr);
        }
        else
        {
            r = CliRunner.Run("backup", source, "--repo", repo, "--state-dir", state, "--no-progress");
        }

        AssertCleanFailure(r, Source, source, "permission denied");
        Assert.False(Path.Exists(repo));
        Assert.False(Path.Exists(state));
        Assert.Equal(before, Fingerprint(source));
    }

    [Theory]
    [InlineData("backup", "SOURCE")]
    [InlineData("snapshots")]
    [InlineData("verify", "--read-data")]
    [InlineData("restore", "latest", "--to", "TARGET")]
    [InlineData("init")]
    public void MissingRepoOption_Exits2(params string[] args)
    {
        string target = _dir.File("target.img");
        string state = _dir.File("state");
        string[] argv = [.. args.Select(a => a == "SOURCE" ? fx.SourcePath : a == "TARGET" ? target : a), "--no-progress"];
        if (args[0] == "backup") argv = [.. argv, "--state-dir", state];
        string cwdBefore = Fingerprint(_dir.Path);
        AssertCleanFailure(CliRunner.Run(argv), Usage, "--repo");
        Assert.Equal(cwdBefore, Fingerprint(_dir.Path));
    }

    [Fact]
    public void UnknownCommand_Exits2() =>
        Unchanged(fx.RepoPath, () => AssertCleanFailure(CliRunner.Run("frobnicate", "--repo", fx.RepoPath), Usage, "unknown command", "frobnicate"));

    [Fact]
    public void UnknownOption_Exits2()
    {
        Unchanged(fx.RepoPath, () =>
        {
            AssertCleanFailure(CliRunner.Run("snapshots", "--repo", fx.RepoPath, "--colour"), Usage, "unknown option", "--colour");
            AssertCleanFailure(Backup(fx.SourcePath, fx.RepoPath, "--compress-harder"), Usage, "unknown option", "--compress-harder");
        });
    }

    [Fact]
    public void WorkersNotANumber_Exits2() =>
        Unchanged(fx.RepoPath, () => AssertCleanFailure(Backup(fx.SourcePath, fx.RepoPath, "--workers", "abc"), Usage, "--workers", "abc"));

    [Fact]
    public void RepositoryPathIsARegularFile_Exits4()
    {
        string file = _dir.File("not-a-repo");
        File.WriteAllText(file, "just a file\n");
        Unchanged(file, () =>
        {
            AssertCleanFailure(Backup(fx.SourcePath, file), Repository, file);
            AssertCleanFailure(CliRunner.Run("snapshots", "--repo", file), Repository, file);
            AssertCleanFailure(CliRunner.Run("init", "--repo", file), Repository, file);
        });
    }

    [Fact]
    public void RepositoryPathIsANonEmptyDirectoryThatIsNoRepository_Exits4()
    {
        string dir = _dir.File("documents");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "precious\n");
        Unchanged(dir, () =>
        {
            AssertCleanFailure(Backup(fx.SourcePath, dir), Repository, dir);
            AssertCleanFailure(CliRunner.Run("snapshots", "--repo", dir), Repository, dir);
            AssertCleanFailure(CliRunner.Run("verify", "--repo", dir), Repository, dir);
            AssertCleanFailure(CliRunner.Run("init", "--repo", dir), Repository, dir);
        });
    }

    [Fact]
    public void RepositoryWithANewerFormatVersion_Exits4_NamingTheVersion()
    {
        string repo = CopyOfFixtureRepo();
        string config = Path.Combine(repo, "config");
        File.WriteAllBytes(config, WithVersion(File.ReadAllBytes(config), 2));
        string target = _dir.File("target.img");
        Unchanged(repo, () =>
        {
            AssertCleanFailure(CliRunner.Run("snapshots", "--repo", repo), Repository, "version 2");
            AssertCleanFailure(Backup(fx.SourcePath, repo), Repository, "version 2");
            AssertCleanFailure(CliRunner.Run("verify", "--repo", repo, "--read-data"), Repository, "version 2");
            AssertCleanFailure(CliRunner.Run("restore", "latest", "--repo", repo, "--to", target), Repository, "version 2");
        });
        Assert.False(Path.Exists(target));
    }

    [Theory]
    [InlineData("flipped byte")]
    [InlineData("truncated")]
    [InlineData("empty")]
    [InlineData("garbage")]
    public void CorruptConfig_Exits4(string damage)
    {
        string repo = CopyOfFixtureRepo();
        string config = Path.Combine(repo, "config");
        byte[] bytes = File.ReadAllBytes(config);
        switch (damage)
        {
            case "flipped byte": bytes[Envelope.HeaderSize + 3] ^= 0x20; break;
            case "truncated": bytes = bytes[..(bytes.Length / 2)]; break;
            case "empty": bytes = []; break;
            default: bytes = Encoding.ASCII.GetBytes("[core]\n\trepositoryformatversion = 0\n"); break;
        }
        File.WriteAllBytes(config, bytes);
        string target = _dir.File("target.img");
        Unchanged(repo, () =>
        {
            AssertCleanFailure(CliRunner.Run("snapshots", "--repo", repo), Repository, "config");
            AssertCleanFailure(Backup(fx.SourcePath, repo), Repository, "config");
            AssertCleanFailure(CliRunner.Run("restore", "latest", "--repo", repo, "--to", target), Repository, "config");
        });
        Assert.False(Path.Exists(target));
    }

    [Theory]
    [InlineData("deadbeef")]
    [InlineData("0123456789abcdef0123456789abcdef")]
    public void UnknownRecoveryPoint_Exits5(string id)
    {
        string target = _dir.File("target.img");
        string existing = _dir.File("older-copy.img");
        DiskImages.Random(existing, BadInputFixture.VolumeSize / 2, seed: 12);
        string existingBefore = Fingerprint(existing);
        Unchanged(fx.RepoPath, () =>
        {
            AssertCleanFailure(CliRunner.Run("restore", id, "--repo", fx.RepoPath, "--to", target, "--no-progress"), NotFound, id);
            AssertCleanFailure(CliRunner.Run("restore", id, "--repo", fx.RepoPath, "--to", existing, "--no-progress"), NotFound, id);
        });
        Assert.False(Path.Exists(target));
        Assert.Equal(existingBefore, Fingerprint(existing));
        Assert.Single(Directory.EnumerateFileSystemEntries(_dir.Path));
    }

    [Fact]
    public void TooShortRecoveryPointPrefix_Exits5()
    {
        string target = _dir.File("target.img");
        string prefix = fx.SnapshotId[..3];
        Unchanged(fx.RepoPath, () =>
            AssertCleanFailure(CliRunner.Run("restore", prefix, "--repo", fx.RepoPath, "--to", target, "--no-progress"), NotFound, prefix));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir.Path));
    }

    [Fact]
    public void AmbiguousRecoveryPointPrefix_Exits5()
    {
        // Random 128-bit ids rarely share a prefix, so add a second, valid recovery point (same tree) whose id
        // shares the first six characters of the fixture's.
        string repo = CopyOfFixtureRepo();
        string original = Path.Combine(repo, "snapshots", fx.SnapshotId + ".snap");
        var m = Manifest.Deserialize(File.ReadAllBytes(original), original);
        string prefix = fx.SnapshotId[..6];
        m.Id = prefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16))[6..];
        m.Time = m.Time.AddSeconds(1);
        File.WriteAllBytes(Path.Combine(repo, "snapshots", m.Id + ".snap"), m.Serialize());
        Assert.Equal(2, System.Text.Json.JsonDocument.Parse(CliRunner.Ok("snapshots", "--repo", repo, "--json")).RootElement.GetArrayLength());

        string target = _dir.File("target.img");
        Unchanged(repo, () =>
            AssertCleanFailure(CliRunner.Run("restore", prefix, "--repo", repo, "--to", target, "--no-progress"), NotFound, prefix, "ambiguous"));
        Assert.False(Path.Exists(target));
    }

    [Fact]
    public void RestoreFromARepositoryWithoutRecoveryPoints_Exits5()
    {
        string repo = _dir.File("empty-repo");
        CliRunner.Ok("init", "--repo", repo);
        string target = _dir.File("target.img");
        Unchanged(repo, () =>
            AssertCleanFailure(CliRunner.Run("restore", "latest", "--repo", repo, "--to", target, "--no-progress"), NotFound, "no recovery points"));
        Assert.False(Path.Exists(target));
    }

    [Fact]
    public void TargetDeviceTooSmall_Exits6_AndLeavesTheDeviceAlone()
    {
        string backing = _dir.File("small-disk.img");
        DiskImages.Random(backing, 1 << 20, seed: 11);
        using var loop = LoopDevice.Attach(backing);
        string before = Files.Sha256Hex(loop.DevicePath);
        Unchanged(fx.RepoPath, () =>
            AssertCleanFailure(CliRunner.Run("restore", fx.SnapshotId, "--repo", fx.RepoPath, "--to", loop.DevicePath, "--no-progress"),
                Target, loop.DevicePath, "too small"));
        Assert.Equal(before, Files.Sha256Hex(loop.DevicePath));
    }

    [Fact]
    public void TargetIsADirectory_Exits6()
    {
        string dir = _dir.File("restore-here");
        Directory.CreateDirectory(dir);
        Unchanged(fx.RepoPath, () =>
            AssertCleanFailure(CliRunner.Run("restore", "latest", "--repo", fx.RepoPath, "--to", dir, "--no-progress"), Target, dir, "directory"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
    }

    [Fact]
    public void TargetDirectoryMissing_Exits6()
    {
        string target = Path.Combine(_dir.Path, "no", "such", "dir", "volume.img");
        Unchanged(fx.RepoPath, () =>
            AssertCleanFailure(CliRunner.Run("restore", "latest", "--repo", fx.RepoPath, "--to", target, "--no-progress"), Target, "does not exist"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dir.Path));
    }

    [Fact]
    public void InitOnAnExistingRepository_Exits4() =>
        Unchanged(fx.RepoPath, () =>
            AssertCleanFailure(CliRunner.Run("init", "--repo", fx.RepoPath), Repository, "already a repository"));

    private CliRunner.Result Backup(string source, string repo, params string[] extra) =>
        CliRunner.Run(["backup", source, "--repo", repo, "--state-dir", _dir.File("state"), "--no-progress", .. extra], null, TimeSpan.FromMinutes(2));

    /// <summary>A private copy of the fixture repository, for cases that damage it first.</summary>
    private string CopyOfFixtureRepo()
    {
        string copy = _dir.File("repo-copy");
        foreach (string file in Directory.EnumerateFiles(fx.RepoPath, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(copy, Path.GetRelativePath(fx.RepoPath, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        return copy;
    }

    /// <summary>The config envelope with another version and a recomputed checksum, so only the version is "bad".</summary>
    private static byte[] WithVersion(byte[] envelope, ushort version)
    {
        // magic[8] | u16 version | u16 flags | u32 reserved | u64 payloadLength | payload | u64 XXH3-64 of all before
        var copy = (byte[])envelope.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(copy.AsSpan(8), version);
        int end = copy.Length - 8;
        BinaryPrimitives.WriteUInt64LittleEndian(copy.AsSpan(end), XxHash3.HashToUInt64(copy.AsSpan(0, end)));
        return copy;
    }

    /// <summary>Runs <paramref name="act"/> and asserts that <paramref name="path"/> (file or tree) is byte for byte as before.</summary>
    private static void Unchanged(string path, Action act)
    {
        string before = Fingerprint(path);
        act();
        Assert.Equal(before, Fingerprint(path));
    }

    /// <summary>Every entry under <paramref name="path"/>: relative name, kind, length and SHA-256.</summary>
    private static string Fingerprint(string path)
    {
        if (File.Exists(path)) return "file " + Describe(path);
        if (!Directory.Exists(path)) return "<missing>";
        var sb = new StringBuilder();
        foreach (string entry in Directory.EnumerateFileSystemEntries(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string rel = Path.GetRelativePath(path, entry);
            sb.Append(rel).Append(' ').Append(Directory.Exists(entry) ? "dir" : Describe(entry)).Append('\n');
        }
        return sb.ToString();
    }

    private static string Describe(string file)
    {
        var info = new FileInfo(file);
        if (info.UnixFileMode == UnixFileMode.None) return $"{info.Length} (mode 000)";
        return $"{info.Length} {Files.Sha256Hex(file)}";
    }

    [GeneratedRegex(@"^\s+at\s", RegexOptions.Multiline)]
    private static partial Regex StackFrame();

    /// <summary>The documented exit code, exactly one stderr line "blockrepl: …" naming <paramref name="mentions"/>, no stack trace.</summary>
    private static void AssertCleanFailure(CliRunner.Result r, int exitCode, params string[] mentions)
    {
        Assert.True(r.ExitCode == exitCode, $"expected exit code {exitCode}: {r}");
        Assert.False(StackFrame().IsMatch(r.Stderr) || StackFrame().IsMatch(r.Stdout), $"stack trace printed: {r}");
        string[] lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.True(lines.Length == 1, $"expected exactly one line on stderr: {r}");
        Assert.StartsWith("blockrepl: ", lines[0], StringComparison.Ordinal);
        foreach (string m in mentions)
            Assert.True(lines[0].Contains(m, StringComparison.OrdinalIgnoreCase), $"the message should mention '{m}': {r}");
    }
}
