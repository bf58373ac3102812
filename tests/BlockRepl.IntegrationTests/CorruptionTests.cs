using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// A repository with two recovery points of one volume (A: full, B: incremental after 24 scattered
/// 64 KiB writes), built once. Each test damages its own copy.
/// </summary>
public sealed class CorruptionFixture : IDisposable
{
    private const int Chunk = ChunkScan.ChunkSize;
    private readonly TempDir _dir = new("br-corrupt-base");

    public CorruptionFixture()
    {
        string src = _dir.File("volume.img");
        DiskImages.Mixed(src, 32L << 20, seed: 31);
        File.Copy(src, V0);
        Scan0 = ChunkScan.Of(src);
        IdA = Cli.Backup(src, Repo, _dir.File("state")).Str("id");
        PacksA = [.. RepoFiles.Packs(Repo).Select(p => Path.GetRelativePath(Repo, p))];

        WriteLoad.ScatteredWrites(src, 24, Chunk, seed: 32);
        File.Copy(src, V1);
        Scan1 = ChunkScan.Of(src);
        IdB = Cli.Backup(src, Repo, _dir.File("state")).Str("id");
        PacksB = [.. RepoFiles.Packs(Repo).Select(p => Path.GetRelativePath(Repo, p)).Except(PacksA)];
        Assert.NotEmpty(PacksB);
    }

    public string Repo => _dir.File("repo");
    public string V0 => _dir.File("v0");
    public string V1 => _dir.File("v1");
    public ChunkScan Scan0 { get; }
    public ChunkScan Scan1 { get; }
    public string IdA { get; }
    public string IdB { get; }
    /// <summary>Packs (relative paths) written by the backup of A, and those written by B.</summary>
    public string[] PacksA { get; }
    public string[] PacksB { get; }

    /// <summary>A private copy of the repository under <paramref name="t"/>.</summary>
    public string CopyRepo(TempDir t)
    {
        string to = t.File("repo");
        RepoFiles.CopyTree(Repo, to);
        return to;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// Damage found by <c>verify</c> and refused by <c>restore</c>: flipped bytes in data blobs, tree nodes,
/// index files and manifests; missing and truncated packs. Every failure is one line on stderr.
/// </summary>
public sealed class CorruptionTests(CorruptionFixture f) : IClassFixture<CorruptionFixture>
{
    private static string Sorted(params string[] ids) => string.Join(",", ids.Order(StringComparer.Ordinal));

    private static PackEntry FlipInBlob(string repo, Func<PackEntry, bool> pick, string what)
    {
        var entry = RepoFiles.AllEntries(repo).FirstOrDefault(pick)
            ?? throw new Xunit.Sdk.XunitException($"precondition: the repository has {what}");
        RepoFiles.FlipByte(entry.Pack, entry.Offset + (entry.StoredLength / 2));
        return entry;
    }

    [Fact]
    public void UndamagedRepository_VerifiesClean_WithAndWithoutReadData()
    {
        // The control for every test below: the same repository before any damage.
        foreach (bool readData in new[] { false, true })
        {
            var (r, report) = Cli.Verify(f.Repo, readData);
            Assert.True(r.ExitCode == 0, $"verify of an undamaged repository failed: {r}");
            Assert.True(report.GetProperty("ok").GetBoolean());
            Assert.Equal(2, report.Long("snapshots"));
            Assert.Empty(report.GetProperty("problems").EnumerateArray());
            Assert.Empty(Cli.AffectedIds(report));
            Assert.Equal(readData, report.Long("bytesRead") > 0);
        }
    }

    [Fact]
    public void FlippedByteInDataBlobOfOnlyTheFirstPoint_IsFoundByReadData_AndOnlyThatPointIsRefused()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        var onlyInA = f.Scan0.Distinct.Keys.Where(id => !f.Scan1.Distinct.ContainsKey(id)).ToHashSet();
        var bad = FlipInBlob(repo, e => e.Type == PackEntry.Data && onlyInA.Contains(e.Id), "a data blob only A uses");

        // The structure check reads config, indexes, pack sizes, manifests and tree nodes, not data
        // blobs: by design it does not notice a bad data blob.
        var (structure, structureReport) = Cli.Verify(repo, readData: false);
        Assert.True(structure.ExitCode == 0, $"structure-only verify should not read data blobs: {structure}");
        Assert.True(structureReport.GetProperty("ok").GetBoolean());

        var (r, report) = Cli.Verify(repo, readData: true);
        Cli.AssertOneLineError(r, 7, "verify");
        Assert.False(report.GetProperty("ok").GetBoolean());
        Assert.Equal(f.IdA, Sorted(Cli.AffectedIds(report)));
        Assert.Contains(report.GetProperty("problems").EnumerateArray(), p => p.GetString()!.Contains(bad.Id, StringComparison.Ordinal));

        // (Restoring A itself is RestoreOfPointWithBadDataChunk_Exits7_AndLeavesNoFile.)
        Cli.Restore(f.IdB, repo, t.File("b.img"));
        Assert.True(Files.ContentEquals(f.V1, t.File("b.img")), "the undamaged point B no longer restores exactly");
    }

    [Fact]
    public void FlippedByteInCompressedBlobSharedByBothPoints_NamesBothPoints()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        FlipInBlob(repo, e => e.Type == PackEntry.Data && e.Compression == PackEntry.Lz4
            && f.Scan0.Distinct.ContainsKey(e.Id) && f.Scan1.Distinct.ContainsKey(e.Id), "an LZ4 data blob both points use");

        var (r, report) = Cli.Verify(repo, readData: true);
        Cli.AssertOneLineError(r, 7);
        Assert.Equal(Sorted(f.IdA, f.IdB), Sorted(Cli.AffectedIds(report)));
    }

    [Theory]
    [InlineData("first")]
    [InlineData("last")]
    public void RestoreOfPointWithBadDataChunk_Exits7_AndLeavesNoFile(string which)
    {
        // "first": the bad chunk is restored first with hundreds of chunks queued behind it, so the
        // failure has to win over the cancellation of the rest; "last": it comes after all the others.
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        string chunk = which == "first" ? f.Scan1.Ids.First(id => id is not null)! : f.Scan1.Ids.Last(id => id is not null)!;
        FlipInBlob(repo, e => e.Id == chunk, $"the {which} data chunk of B");

        var refused = Cli.TryRestore(f.IdB, repo, t.File("b.img"));
        Cli.AssertOneLineError(refused, 7, "corrupt");
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));

        // In place onto an existing file the restore is refused the same way.
        File.Copy(f.V0, t.File("existing.img"));
        var inPlace = Cli.TryRestore(f.IdB, repo, t.File("existing.img"));
        Cli.AssertOneLineError(inPlace, 7, "corrupt");
    }

    [Fact]
    public void FlippedByteInTreeNodeOfSecondPoint_IsFoundByStructureVerify()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        var packsB = f.PacksB.Select(p => Path.Combine(repo, p)).ToHashSet();
        FlipInBlob(repo, e => e.Type == PackEntry.Tree && packsB.Contains(e.Pack), "a tree node written by B");

        var (r, report) = Cli.Verify(repo, readData: false);
        Cli.AssertOneLineError(r, 7);
        Assert.Equal(f.IdB, Sorted(Cli.AffectedIds(report)));

        Cli.AssertOneLineError(Cli.TryRestore(f.IdB, repo, t.File("b.img")), 7);
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));
    }

    [Fact]
    public void CorruptIndexFile_FailsVerify_AndRestore()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        string index = RepoFiles.IndexOf(repo, Path.Combine(repo, f.PacksA[0]));
        Assert.True(File.Exists(index), $"precondition: {index} exists");
        RepoFiles.FlipByte(index, new FileInfo(index).Length / 2);

        var (r, report) = Cli.Verify(repo, readData: false);
        Cli.AssertOneLineError(r, 7);
        Assert.Contains(report.GetProperty("problems").EnumerateArray(), p => p.GetString()!.Contains("index", StringComparison.Ordinal));
        Assert.Contains(f.IdA, Cli.AffectedIds(report));

        var refused = Cli.TryRestore("latest", repo, t.File("b.img"));
        Cli.AssertOneLineError(refused, 7, "index");
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));

        // Listing needs no index: both points are still listed.
        Assert.Equal(2, Cli.Snapshots(repo).Length);
    }

    [Fact]
    public void CorruptManifest_IsReportedBySnapshotsAndVerify_WithExit7()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        string manifest = RepoFiles.Manifest(repo, f.IdB);
        RepoFiles.FlipByte(manifest, new FileInfo(manifest).Length / 2);

        // snapshots lists what it can read, then fails naming the bad manifest.
        var list = CliRunner.Run("snapshots", "--repo", repo, "--json");
        Cli.AssertOneLineError(list, 7, f.IdB);
        var listed = Cli.Json(list.Stdout).EnumerateArray().Select(e => e.Str("id")).ToArray();
        Assert.Equal([f.IdA], listed);

        var (r, report) = Cli.Verify(repo, readData: false);
        Cli.AssertOneLineError(r, 7);
        Assert.Contains(report.GetProperty("problems").EnumerateArray(), p => p.GetString()!.Contains(f.IdB, StringComparison.Ordinal));
        Assert.Equal(1, report.Long("snapshots"));
    }

    [Fact]
    public void CorruptManifest_DoesNotBlockRestoreOfAnotherPoint()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        string manifest = RepoFiles.Manifest(repo, f.IdB);
        RepoFiles.FlipByte(manifest, new FileInfo(manifest).Length / 2);

        Cli.Restore(f.IdA[..8], repo, t.File("a.img"));
        Assert.True(Files.ContentEquals(f.V0, t.File("a.img")), "point A differs");

        Cli.AssertOneLineError(Cli.TryRestore(f.IdB, repo, t.File("b.img")), 7, f.IdB);
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));
    }

    [Fact]
    public void DeletedPack_IsNamedByStructureVerify_WithOnlyThePointsThatNeedIt()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        foreach (string p in f.PacksB) File.Delete(Path.Combine(repo, p));

        var (r, report) = Cli.Verify(repo, readData: false);
        Cli.AssertOneLineError(r, 7);
        Assert.Equal(f.IdB, Sorted(Cli.AffectedIds(report)));
        Assert.Contains(report.GetProperty("problems").EnumerateArray(), p => p.GetString()!.Contains("missing", StringComparison.Ordinal));

        Cli.AssertOneLineError(Cli.TryRestore(f.IdB, repo, t.File("b.img")), 7);
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));

        Cli.Restore(f.IdA, repo, t.File("a.img"));
        Assert.True(Files.ContentEquals(f.V0, t.File("a.img")), "point A differs");
    }

    [Fact]
    public void TruncatedPack_IsNamedByVerify_AndRestoreIsRefused()
    {
        using var t = new TempDir("br-corrupt");
        string repo = f.CopyRepo(t);
        foreach (string p in f.PacksB)
        {
            using var fs = new FileStream(Path.Combine(repo, p), FileMode.Open, FileAccess.Write);
            fs.SetLength(fs.Length / 2);
        }

        var (r, report) = Cli.Verify(repo, readData: false);
        Cli.AssertOneLineError(r, 7);
        Assert.Equal(f.IdB, Sorted(Cli.AffectedIds(report)));

        var (rd, readReport) = Cli.Verify(repo, readData: true);
        Cli.AssertOneLineError(rd, 7);
        Assert.Equal(f.IdB, Sorted(Cli.AffectedIds(readReport)));

        Cli.AssertOneLineError(Cli.TryRestore(f.IdB, repo, t.File("b.img")), 7);
        Cli.AssertNoRestoreLeftovers(t.File("b.img"));
    }
}
