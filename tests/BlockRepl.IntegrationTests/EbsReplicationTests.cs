using System.Text.Json;
using BlockRepl.Ebs.Endpoint;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// `blockrepl backup SOURCE --repo ebs://REGION` end to end against the real EBS-compatible endpoint (SigV4 verified,
/// LINEAR checksum and ChangedBlocksCount checked by the server on CompleteSnapshot): chains, incrementals that put
/// exactly the changed 512 KiB blocks, zeroed blocks, one read feeding a repository and a chain, restore, resume after
/// kill -9, throttling, RESCAN after a lost block map, and clear errors.
/// </summary>
public sealed class EbsReplicationTests : IAsyncLifetime
{
    private const int Block = 512 * 1024;
    private readonly TempDir _dir = new("blockrepl-ebs");
    private EbsEndpoint _ebs = null!;
    private string StateDir => _dir.File("state");

    public async Task InitializeAsync() => _ebs = await EbsEndpoint.StartAsync();

    public async Task DisposeAsync()
    {
        await _ebs.DisposeAsync();
        _dir.Dispose();
    }

    private CliRunner.Result Run(EbsEndpoint ebs, params string[] args) =>
        CliRunner.Run([.. args, "--no-progress"], ebs.ClientEnv(StateDir), TimeSpan.FromMinutes(5));

    private JsonElement Json(EbsEndpoint ebs, params string[] args)
    {
        var r = Run(ebs, [.. args, "--json"]);
        Assert.True(r.ExitCode == 0, $"blockrepl {string.Join(' ', args)}: {r}");
        return JsonDocument.Parse(r.Stdout).RootElement.Clone();
    }

    private JsonElement Backup(string source, params string[] extra) =>
        Json(_ebs, ["backup", source, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), .. extra]);

    private void Restore(string snapshotId, string target, long size) =>
        Json(_ebs, "restore", snapshotId, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--to", target, "--size", size.ToString());

    private long Puts() => _ebs.Server.GetStats().Operations.TryGetValue("PutSnapshotBlock", out var s) ? s.Succeeded : 0;

    /// <summary>Blocks of 512 KiB that differ between two files of equal size.</summary>
    private static HashSet<long> DifferingBlocks(string a, string b)
    {
        var set = new HashSet<long>();
        using var fa = File.OpenRead(a);
        using var fb = File.OpenRead(b);
        var ba = new byte[Block];
        var bb = new byte[Block];
        for (long i = 0; ; i++)
        {
            int na = fa.ReadAtLeast(ba, Block, throwOnEndOfStream: false);
            int nb = fb.ReadAtLeast(bb, Block, throwOnEndOfStream: false);
            if (na == 0 && nb == 0) break;
            if (na != nb || !ba.AsSpan(0, na).SequenceEqual(bb.AsSpan(0, nb))) set.Add(i);
        }
        return set;
    }

    [Fact]
    public async Task Full_then_incremental_chain_puts_only_changed_blocks_and_restores_both_byte_identical()
    {
        string img = _dir.File("disk.img");
        long size = 48L * Block + 12345;   // not a multiple of 512 KiB: a zero-padded last block
        DiskImages.Mixed(img, size, seed: 41);
        var full = Backup(img);
        Assert.Equal("FULL", full.Str("mode"));
        Assert.Equal("completed", full.Str("status"));
        Assert.Equal(JsonValueKind.Null, full.GetProperty("parentSnapshotId").ValueKind);
        string snapA = full.Str("snapshotId");
        File.Copy(img, _dir.File("a.img"));
        long putsAfterFull = Puts();
        Assert.Equal(full.Long("blocksPut"), putsAfterFull);

        // Scattered 4 KiB writes plus a block that becomes all zeros (it must be put, or the parent's data shows through).
        WriteLoad.ScatteredWrites(img, 5, 4096, seed: 7);
        using (var f = new FileStream(img, FileMode.Open, FileAccess.Write))
        {
            f.Position = 10L * Block;
            f.Write(new byte[Block]);
        }
        var changed = DifferingBlocks(_dir.File("a.img"), img);
        var incr = Backup(img);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(snapA, incr.Str("parentSnapshotId"));
        Assert.Equal(changed.Count, incr.Long("changedBlocks"));
        Assert.Equal(changed.Count, incr.Long("blocksPut"));
        Assert.Equal(changed.Count, Puts() - putsAfterFull);
        string snapB = incr.Str("snapshotId");

        Restore(snapA, _dir.File("ra.img"), size);
        Restore(snapB, _dir.File("rb.img"), size);
        Assert.True(Files.ContentEquals(_dir.File("a.img"), _dir.File("ra.img")), "restore of the full snapshot differs");
        Assert.True(Files.ContentEquals(img, _dir.File("rb.img")), "restore of the incremental snapshot differs");

        // Nothing changed: a child with no blocks, still a recovery point.
        var same = Backup(img);
        Assert.Equal(0, same.Long("blocksPut"));
        Assert.Equal(snapB, same.Str("parentSnapshotId"));
        var list = Json(_ebs, "snapshots", "--repo", "ebs://us-east-1");
        Assert.Equal(3, list.GetArrayLength());
        await Task.CompletedTask;
    }

    [Fact]
    public void Sparse_source_full_sync_skips_holes_and_a_later_hole_punch_is_replicated_as_zeros()
    {
        string img = _dir.File("sparse.img");
        long size = 64L * Block;
        DiskImages.Sparse(img, size, seed: 5, dataOffsets: [0, 20L * Block, 40L * Block + 4096], dataLength: 100_000);
        var full = Backup(img);
        Assert.Equal(0, full.Long("zeroBlocksPut"));
        Assert.True(full.Long("blocksPut") <= 4, full.ToString());
        File.Copy(img, _dir.File("before.img"));

        // Punch the data at block 20 out of the file: the block now reads as zeros and must be put as zeros.
        using (var f = new FileStream(img, FileMode.Open, FileAccess.Write))
        {
            f.Position = 20L * Block;
            f.Write(new byte[100_000]);
        }
        var incr = Backup(img);
        Assert.Equal(1, incr.Long("blocksPut"));
        Assert.Equal(1, incr.Long("zeroBlocksPut"));
        Restore(incr.Str("snapshotId"), _dir.File("r.img"), size);
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public void One_read_feeds_a_repository_and_an_ebs_chain_and_both_restore_identically()
    {
        string img = _dir.File("disk.img");
        long size = 32L * Block;
        DiskImages.Mixed(img, size, seed: 9);
        string repo = _dir.File("repo");
        var r = Json(_ebs, "backup", img, "--repo", repo, "--to", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--state-dir", StateDir);
        Assert.Equal("FULL", r.Str("mode"));
        var ebs = r.GetProperty("ebs");
        Assert.Equal("FULL", ebs.Str("mode"));
        WriteLoad.ScatteredWrites(img, 3, 65536, seed: 3);
        var r2 = Json(_ebs, "backup", img, "--repo", repo, "--to", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--state-dir", StateDir);
        Assert.Equal("INCREMENTAL", r2.Str("mode"));
        Assert.Equal("INCREMENTAL", r2.GetProperty("ebs").Str("mode"));
        Assert.InRange(r2.GetProperty("ebs").Long("blocksPut"), 1, 3);
        Assert.Equal(r2.Long("changedBlocks"), r2.GetProperty("ebs").Long("blocksPut"));

        Json(_ebs, "restore", r2.Str("id"), "--repo", repo, "--to", _dir.File("from-repo.img"));
        Restore(r2.GetProperty("ebs").Str("snapshotId"), _dir.File("from-ebs.img"), size);
        Assert.True(Files.ContentEquals(img, _dir.File("from-repo.img")));
        Assert.True(Files.ContentEquals(img, _dir.File("from-ebs.img")));
    }

    [Fact]
    public void Lost_block_map_means_rescan_against_the_parent_and_a_correct_child()
    {
        string img = _dir.File("disk.img");
        long size = 24L * Block;
        DiskImages.Mixed(img, size, seed: 12);
        var full = Backup(img);
        foreach (var f in Directory.GetFiles(StateDir, "ebs-*.map")) File.WriteAllText(f, "torn");
        WriteLoad.ScatteredWrites(img, 2, 4096, seed: 99);
        var rescan = Backup(img);
        Assert.Equal("RESCAN", rescan.Str("mode"));
        Assert.Equal(full.Str("snapshotId"), rescan.Str("parentSnapshotId"));
        Assert.NotEqual(JsonValueKind.Null, rescan.GetProperty("rescanReason").ValueKind);
        Restore(rescan.Str("snapshotId"), _dir.File("r.img"), size);
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
        // And the chain continues incrementally after it.
        WriteLoad.ScatteredWrites(img, 1, 4096, seed: 100);
        Assert.Equal("INCREMENTAL", Backup(img).Str("mode"));
    }

    [Fact]
    public async Task Throttled_endpoint_is_survived_by_backing_off()
    {
        await using var slow = await EbsEndpoint.StartAsync(d => EbsEndpoint.Default(d, putRate: 20));
        string img = _dir.File("disk.img");
        long size = 40L * Block;
        DiskImages.Random(img, size, seed: 77);
        var r = Json(slow, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", slow.Url.ToString());
        Assert.Equal(40, r.Long("blocksPut"));
        var stats = slow.Server.GetStats().Operations["PutSnapshotBlock"];
        Assert.True(stats.Throttled > 0, "the endpoint never throttled: the test proves nothing");
        Assert.True(r.Long("throttled") > 0);
        Json(slow, "restore", r.Str("snapshotId"), "--repo", "ebs://us-east-1", "--ebs-endpoint-url", slow.Url.ToString(), "--to", _dir.File("r.img"), "--size", size.ToString());
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public void Bad_targets_and_credentials_give_one_line_errors()
    {
        string img = _dir.File("disk.img");
        DiskImages.Random(img, 2L * Block, seed: 1);
        var r = Run(_ebs, "backup", img, "--repo", "ebs://", "--ebs-endpoint-url", _ebs.Url.ToString());
        Cli.AssertOneLineError(r, 2, "ebs://REGION");
        r = Run(_ebs, "backup", img, "--repo", "ebs://us-east-1/extra", "--ebs-endpoint-url", _ebs.Url.ToString());
        Cli.AssertOneLineError(r, 2);
        r = Run(_ebs, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", "http://127.0.0.1:1");
        Cli.AssertOneLineError(r, 8);
        var env = _ebs.ClientEnv(StateDir);
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret";
        r = CliRunner.Run(["backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--no-progress"], env, TimeSpan.FromMinutes(2));
        Cli.AssertOneLineError(r, 8);
        Assert.DoesNotContain("wrong-secret", r.Stderr);
        r = Run(_ebs, "restore", "snap-0123456789abcdef0", "--repo", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--to", _dir.File("x.img"));
        Cli.AssertOneLineError(r, 5);
        Assert.False(File.Exists(_dir.File("x.img")));
        r = Run(_ebs, "restore", "not-a-snapshot", "--repo", "ebs://us-east-1", "--to", _dir.File("x.img"));
        Cli.AssertOneLineError(r, 2);
    }

    /// <summary>Waits (polling, with a deadline) until the chain's journal holds at least <paramref name="acks"/> ACK records (docs/ebs.md §4).</summary>
    private void WaitForJournal(System.Diagnostics.Process p, int acks)
    {
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (DateTime.UtcNow < deadline && !p.HasExited)
        {
            var j = Directory.Exists(StateDir) ? Directory.GetFiles(StateDir, "ebs-*.journal") : [];
            if (j.Length == 1 && CountAcks(j[0]) >= acks) return;
            Thread.Sleep(20);
        }
        throw new Xunit.Sdk.XunitException(p.HasExited ? $"backup finished before the kill point: {p.StandardError.ReadToEnd()}" : "journal never grew");
    }

    private static int CountAcks(string journal)
    {
        byte[] bytes;
        using (var fs = new FileStream(journal, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)) { bytes = new byte[fs.Length]; fs.ReadExactly(bytes); }
        int n = 0;
        for (int o = 64; o + 64 <= bytes.Length; o += 64) if (bytes[o + 4] == 2) n++;
        return n;
    }

    private string PendingSnapshotId()
    {
        var state = JsonDocument.Parse(File.ReadAllText(Directory.GetFiles(StateDir, "ebs-*.json").Single())).RootElement;
        return state.GetProperty("pending").GetProperty("snapshotId").GetString()!;
    }

    [Fact]
    public async Task Kill_9_mid_snapshot_resumes_the_same_pending_snapshot_without_re_sending_acknowledged_blocks()
    {
        await using var slow = await EbsEndpoint.StartAsync(d => EbsEndpoint.Default(d, putRate: 100));
        string img = _dir.File("disk.img");
        long size = 300L * Block;
        DiskImages.Random(img, size, seed: 2024);
        var p = CliRunner.Start(["backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", slow.Url.ToString(), "--no-progress"], slow.ClientEnv(StateDir));
        WaitForJournal(p, 60);
        p.Kill();
        p.WaitForExit();
        string pending = PendingSnapshotId();
        long putsBefore = slow.Server.GetStats().Operations["PutSnapshotBlock"].Succeeded;
        Assert.InRange(putsBefore, 60, 299);

        var r = Json(slow, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", slow.Url.ToString());
        Assert.True(r.GetProperty("resumed").GetBoolean());
        Assert.Equal(pending, r.Str("snapshotId"));
        Assert.Equal("FULL", r.Str("mode"));
        Assert.Equal(300, r.Long("changedBlocks"));
        Assert.True(r.Long("resumedBlocks") >= 60, r.ToString());
        // Acknowledged blocks are not sent again (at most the few in flight at the kill are).
        long putsTotal = slow.Server.GetStats().Operations["PutSnapshotBlock"].Succeeded;
        Assert.True(putsTotal <= 300 + 64, $"{putsTotal} puts for 300 blocks");
        Assert.Equal(300 - r.Long("resumedBlocks"), r.Long("blocksPut"));
        Json(slow, "restore", r.Str("snapshotId"), "--repo", "ebs://us-east-1", "--ebs-endpoint-url", slow.Url.ToString(), "--to", _dir.File("r.img"), "--size", size.ToString());
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public async Task A_pending_snapshot_past_its_timeout_is_replaced_by_a_new_one_with_the_right_parent()
    {
        // One "minute" of StartSnapshot's Timeout lasts 100 ms here: --ebs-timeout 40 expires after 4 s idle (long
        // enough that a run on a loaded machine never idles that long between puts, short enough to wait out).
        await using var ebs = await EbsEndpoint.StartAsync(d => EbsEndpoint.Default(d, putRate: 100, minute: TimeSpan.FromMilliseconds(100)));
        string img = _dir.File("disk.img");
        long size = 200L * Block;
        DiskImages.Random(img, size, seed: 31);
        string[] args = ["backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", ebs.Url.ToString(), "--ebs-timeout", "40"];
        var full = Json(ebs, args[..^2]);
        string parent = full.Str("snapshotId");
        WriteLoad.ScatteredWrites(img, 150, 4096, seed: 8);

        var p = CliRunner.Start([.. args, "--no-progress"], ebs.ClientEnv(StateDir));
        WaitForJournal(p, 20);
        p.Kill();
        p.WaitForExit();
        string expired = PendingSnapshotId();
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (!(ebs.Server.GetStats().Snapshots.TryGetValue("error", out int n) && n >= 1))
        {
            Assert.True(DateTime.UtcNow < deadline, "the endpoint never expired the pending snapshot");
            await Task.Delay(50);
        }

        var r = Json(ebs, args);
        Assert.False(r.GetProperty("resumed").GetBoolean());
        Assert.NotEqual(expired, r.Str("snapshotId"));
        Assert.Equal(parent, r.Str("parentSnapshotId"));
        Assert.Equal("INCREMENTAL", r.Str("mode"));
        Json(ebs, "restore", r.Str("snapshotId"), "--repo", "ebs://us-east-1", "--ebs-endpoint-url", ebs.Url.ToString(), "--to", _dir.File("r.img"), "--size", size.ToString());
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public async Task Ebs_copy_to_another_region_moves_everything_once_then_only_changed_blocks()
    {
        await using var dr = await EbsEndpoint.StartAsync();
        string img = _dir.File("disk.img");
        long size = 40L * Block;
        DiskImages.Mixed(img, size, seed: 55);
        string a = Backup(img).Str("snapshotId");
        File.Copy(img, _dir.File("a.img"));
        string[] copy = ["ebs-copy", "--from", "ebs://us-east-1", "--from-endpoint-url", _ebs.Url.ToString(),
            "--to", "ebs://eu-west-1", "--to-endpoint-url", dr.Url.ToString(), "--state-dir", StateDir];
        var c1 = Json(_ebs, [.. copy, a]);
        Assert.Equal("FULL", c1.Str("mode"));
        WriteLoad.ScatteredWrites(img, 4, 4096, seed: 4);
        var changed = DifferingBlocks(_dir.File("a.img"), img);
        string b = Backup(img).Str("snapshotId");
        var c2 = Json(_ebs, [.. copy, b]);
        Assert.Equal("INCREMENTAL", c2.Str("mode"));
        Assert.Equal(c1.Str("snapshotId"), c2.Str("parentSnapshotId"));
        Assert.Equal(changed.Count, c2.Long("blocksCopied"));
        Assert.Equal("ALREADY_COPIED", Json(_ebs, [.. copy, b]).Str("mode"));

        string[] restore = ["restore", "--repo", "ebs://eu-west-1", "--ebs-endpoint-url", dr.Url.ToString(), "--size", size.ToString()];
        Json(dr, [.. restore, c1.Str("snapshotId"), "--to", _dir.File("ra.img")]);
        Json(dr, [.. restore, c2.Str("snapshotId"), "--to", _dir.File("rb.img")]);
        Assert.True(Files.ContentEquals(_dir.File("a.img"), _dir.File("ra.img")));
        Assert.True(Files.ContentEquals(img, _dir.File("rb.img")));
    }

    [Fact]
    public void Encrypted_chain_writes_zero_blocks_too_because_unwritten_blocks_read_as_random_data()
    {
        string img = _dir.File("sparse.img");
        long size = 16L * Block;
        DiskImages.Sparse(img, size, seed: 3, dataOffsets: [3L * Block], dataLength: 70_000);
        var full = Backup(img, "--ebs-encrypted");
        Assert.Equal(16, full.Long("blocksPut"));
        Assert.Equal(15, full.Long("zeroBlocksPut"));
        Restore(full.Str("snapshotId"), _dir.File("r.img"), size);
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")), "restore of the encrypted snapshot differs");
        // Children inherit encryption (EBS refuses Encrypted with a parent) and put only what changed.
        WriteLoad.ScatteredWrites(img, 1, 4096, seed: 1);
        var incr = Backup(img, "--ebs-encrypted");
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(1, incr.Long("blocksPut"));
    }

    private static BlockRepl.Storage.Ebs.IEbsClient ClientFor(EbsEndpoint ebs) =>
        BlockRepl.Storage.Ebs.EbsClient.Create(new BlockRepl.Storage.Ebs.EbsClientOptions
        {
            Region = "us-east-1",
            EndpointUrl = ebs.Url,
            Credentials = new Amazon.Runtime.BasicAWSCredentials(EbsEndpoint.AccessKey, EbsEndpoint.SecretKey),
        });

    [Fact]
    public async Task Loop_device_chain_restores_each_snapshot_and_ListChangedBlocks_equals_what_was_sent()
    {
        string img = _dir.File("loop.img");
        long size = 40L * Block;
        DiskImages.Mixed(img, size, seed: 101);
        using var loop = LoopDevice.Attach(img);
        var full = Backup(loop.DevicePath);
        File.Copy(img, _dir.File("a.img"));
        using (var dev = new FileStream(loop.DevicePath, FileMode.Open, FileAccess.Write))
        {
            foreach (long b in new long[] { 2, 17, 18, 39 })
            {
                dev.Position = b * Block + 8192;
                dev.Write(Enumerable.Repeat((byte)(b + 1), 4096).ToArray());
            }
            dev.Flush(flushToDisk: true);
        }
        var incr = Backup(loop.DevicePath);
        Assert.Equal("INCREMENTAL", incr.Str("mode"));
        Assert.Equal(4, incr.Long("blocksPut"));

        using var client = ClientFor(_ebs);
        var changed = new List<int>();
        string? token = null;
        do
        {
            var page = await client.ListChangedBlocksAsync(full.Str("snapshotId"), incr.Str("snapshotId"), pageToken: token);
            changed.AddRange(page.ChangedBlocks.Select(b => b.BlockIndex));
            token = page.NextToken;
        } while (token is not null);
        Assert.Equal([2, 17, 18, 39], changed.Order());

        Restore(full.Str("snapshotId"), _dir.File("ra.img"), size);
        Restore(incr.Str("snapshotId"), _dir.File("rb.img"), size);
        Assert.True(Files.ContentEquals(_dir.File("a.img"), _dir.File("ra.img")));
        Assert.True(Files.ContentEquals(img, _dir.File("rb.img")));
    }

    [Fact]
    public async Task Injected_500s_are_retried_and_the_snapshot_is_complete()
    {
        await using var flaky = await EbsEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = EbsEndpoint.AccessKey, SecretAccessKey = EbsEndpoint.SecretKey,
            CompletionDelay = TimeSpan.FromMilliseconds(100), Durable = false, InternalErrorRate = 0.2, FaultSeed = 7,
        });
        string img = _dir.File("disk.img");
        long size = 30L * Block;
        DiskImages.Random(img, size, seed: 66);
        var r = Json(flaky, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", flaky.Url.ToString());
        Assert.Equal(30, r.Long("changedBlocks"));
        Assert.True(r.Long("retries") > 0, "no 500 was injected: the test proves nothing");
        Json(flaky, "restore", r.Str("snapshotId"), "--repo", "ebs://us-east-1", "--ebs-endpoint-url", flaky.Url.ToString(), "--to", _dir.File("r.img"), "--size", size.ToString());
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public void Unknown_parent_and_unknown_region_give_clear_errors_and_change_nothing()
    {
        string img = _dir.File("disk.img");
        DiskImages.Random(img, 4L * Block, seed: 2);
        var r = Run(_ebs, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", _ebs.Url.ToString(), "--ebs-parent", "snap-0123456789abcdef0");
        Cli.AssertOneLineError(r, 5, "snap-0123456789abcdef0");
        Assert.Equal(0, Puts());
        r = Run(_ebs, "backup", img, "--repo", "ebs://mars-north-9");
        Cli.AssertOneLineError(r, 2, "unknown AWS region");
        // After the failures a normal first run still works.
        Assert.Equal("FULL", Backup(img).Str("mode"));
    }

    [Fact]
    public async Task Over_https_blocks_are_sent_with_UNSIGNED_PAYLOAD_and_the_CA_bundle_is_honoured()
    {
        using var cert = EbsEndpointTls.CreateSelfSigned();
        string pem = _dir.File("ca.pem");
        File.WriteAllText(pem, EbsEndpointTls.ExportPem(cert));
        await using var tls = await EbsEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = EbsEndpoint.AccessKey, SecretAccessKey = EbsEndpoint.SecretKey,
            CompletionDelay = TimeSpan.FromMilliseconds(100), Durable = false, Certificate = cert,
        });
        Assert.Equal("https", tls.Url.Scheme);
        string img = _dir.File("disk.img");
        long size = 12L * Block;
        DiskImages.Mixed(img, size, seed: 8);
        var env = tls.ClientEnv(StateDir);
        // Without the bundle the self-signed certificate is refused: one clear line, exit 8.
        var refused = CliRunner.Run(["backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", tls.Url.ToString(), "--no-progress"], env, TimeSpan.FromMinutes(3));
        Cli.AssertOneLineError(refused, 8);
        env["AWS_CA_BUNDLE"] = pem;
        var r = CliRunner.Run(["backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", tls.Url.ToString(), "--no-progress", "--json"], env, TimeSpan.FromMinutes(3));
        Assert.True(r.ExitCode == 0, r.ToString());
        string snap = JsonDocument.Parse(r.Stdout).RootElement.Str("snapshotId");
        r = CliRunner.Run(["restore", snap, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", tls.Url.ToString(), "--to", _dir.File("r.img"),
            "--size", size.ToString(), "--no-progress"], env, TimeSpan.FromMinutes(3));
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.True(Files.ContentEquals(img, _dir.File("r.img")));
    }

    [Fact]
    public async Task Snapshot_does_not_exist_right_after_StartSnapshot_is_waited_out()
    {
        // EBS is eventually consistent: puts can get "does not exist" for a while after StartSnapshot (ref/ebs.md §1.1).
        await using var lagging = await EbsEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = EbsEndpoint.AccessKey, SecretAccessKey = EbsEndpoint.SecretKey,
            CompletionDelay = TimeSpan.FromMilliseconds(100), Durable = false, NotFoundAfterStart = TimeSpan.FromSeconds(2),
        });
        string img = _dir.File("disk.img");
        long size = 6L * Block;
        DiskImages.Random(img, size, seed: 12);
        var r = Json(lagging, "backup", img, "--repo", "ebs://us-east-1", "--ebs-endpoint-url", lagging.Url.ToString());
        Assert.Equal(6, r.Long("blocksPut"));
        Assert.True(r.Long("retries") > 0, "no put was refused: the test proves nothing");
        Assert.True(lagging.Server.GetStats().Operations["PutSnapshotBlock"].ClientErrors > 0);
    }
}
