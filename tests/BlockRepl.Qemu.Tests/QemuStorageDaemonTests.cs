using System.Diagnostics;
using BlockRepl.TestKit;

namespace BlockRepl.Qemu.Tests;

/// <summary>qemu-storage-daemon as the "live VM": bitmaps, crash, locking and the fleecing flow of ref/nbd.md §2.4.</summary>
public sealed class QemuStorageDaemonTests
{
    private const long Mi = Scratch.Mi;
    private static readonly TimeSpan s_wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task PersistentBitmap_CountsGuestWrites_AndIsStoredWithFlagAutoOnQuit()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        await qsd.Qmp.TransactionAsync(QmpAction.BitmapAdd(qsd.NodeName, "cp1", persistent: true));
        Assert.Equal(Scratch.ImageSize, await qsd.Qmp.QueryNodeSizeAsync(qsd.NodeName));
        var before = Assert.Single(await qsd.Qmp.QueryBitmapsAsync(qsd.NodeName));
        Assert.Equal(new DirtyBitmapInfo("cp1", Recording: true, Persistent: true, Inconsistent: false, Busy: false, Granularity: 65536, Count: 0), before);

        await qsd.Qmp.NbdExportAddAsync("live", qsd.NodeName, "live", writable: true);
        Scratch.Write(qsd.NbdSocketPath, "live", 0xab, 1 * Mi, 64 * 1024);
        Scratch.Write(qsd.NbdSocketPath, "live", 0xcd, 10 * Mi, 4096); // rounded up to the 64 KiB granularity

        var after = Assert.Single(await qsd.Qmp.QueryBitmapsAsync(qsd.NodeName));
        Assert.Equal(2 * 65536, after.Count);
        // A runtime-added persistent bitmap reaches the image only on a clean close.
        Assert.Empty(Scratch.ImageBitmaps(scratch.Image, shared: true));

        Assert.Equal(0, await qsd.QuitAsync());
        Assert.True(qsd.HasExited);
        var stored = Assert.Single(Scratch.ImageBitmaps(scratch.Image));
        Assert.Equal("cp1", stored.Name);
        Assert.Equal(["auto"], stored.Flags);
    }

    [Fact]
    public async Task SigkillWithALoadedPersistentBitmap_LeavesItInUse_AndTheRestartReportsItInconsistent()
    {
        using var scratch = new Scratch();
        Processes.Run("qemu-img", $"bitmap --add {Processes.Quote(scratch.Image)} cp1");

        await using (var first = await QemuStorageDaemon.StartAsync(scratch.Options()))
        {
            // Loading an "auto" bitmap on a writable node marks it in-use in the header at once.
            Assert.Equal(["in-use", "auto"], Assert.Single(Scratch.ImageBitmaps(scratch.Image, shared: true)).Flags);
            first.Kill();
            await first.WaitForExitAsync(s_wait);
        }
        Assert.Equal(["in-use", "auto"], Assert.Single(Scratch.ImageBitmaps(scratch.Image)).Flags);

        // Same runtime directory: the stale sockets of the killed daemon are removed, not an obstacle.
        await using var second = await QemuStorageDaemon.StartAsync(scratch.Options());
        var bitmap = Assert.Single(await second.Qmp.QueryBitmapsAsync(second.NodeName));
        Assert.Equal(new DirtyBitmapInfo("cp1", Recording: false, Persistent: true, Inconsistent: true, Busy: false, Granularity: 65536, Count: 0), bitmap);

        var refused = await Assert.ThrowsAsync<QmpException>(() => second.Qmp.NbdExportAddAsync("bk", second.NodeName, "bk", writable: true, ["cp1"]));
        Assert.Equal("Bitmap 'cp1' is inconsistent and cannot be used", refused.Description);

        // Recovery: remove it (allowed for an inconsistent bitmap) and start again with a full copy.
        await second.Qmp.BitmapRemoveAsync(second.NodeName, "cp1");
        Assert.Empty(await second.Qmp.QueryBitmapsAsync(second.NodeName));
        await second.QuitAsync();
        Assert.Empty(Scratch.ImageBitmaps(scratch.Image));
    }

    [Fact]
    public async Task SecondDaemonOnTheSameImage_FailsWithOneLineInUseError()
    {
        using var scratch = new Scratch();
        await using var first = await QemuStorageDaemon.StartAsync(scratch.Options());

        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => QemuStorageDaemon.StartAsync(scratch.Options(runtime: scratch.File("run2"))));

        Assert.StartsWith($"Image {scratch.Image} is in use by another process", e.Message, StringComparison.Ordinal);
        Assert.Contains("Failed to get \"write\" lock", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Empty(Directory.GetFiles(scratch.File("run2")));
        Assert.False(first.HasExited);
    }

    [Fact]
    public async Task RuntimeDirectoryServedByARunningDaemon_IsRefused_NotDeleted()
    {
        using var scratch = new Scratch();
        await using var first = await QemuStorageDaemon.StartAsync(scratch.Options());
        string other = scratch.File("other.qcow2");
        Processes.Run("qemu-img", $"create -q -f qcow2 {Processes.Quote(other)} 1M");

        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => QemuStorageDaemon.StartAsync(scratch.Options(image: other)));

        Assert.Contains("served by a running process", e.Message, StringComparison.Ordinal);
        Assert.True(File.Exists(first.QmpSocketPath));
        Assert.True(first.Qmp.IsConnected);
    }

    [Fact]
    public async Task PathsWithCommas_AreEscapedForQemuOptionSyntax()
    {
        using var scratch = new Scratch();
        string dir = scratch.File("a,b");
        Directory.CreateDirectory(dir);
        string image = Path.Combine(dir, "disk,1.qcow2");
        File.Copy(scratch.Image, image);

        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options(runtime: Path.Combine(dir, "r,un"), image: image));

        Assert.Equal(Path.Combine(dir, "r,un", "qmp.sock"), qsd.QmpSocketPath);
        Assert.True(File.Exists(qsd.NbdSocketPath));
        Assert.Equal(Scratch.ImageSize, await qsd.Qmp.QueryNodeSizeAsync("vm"));
    }

    [Fact]
    public void CommandLine_MatchesTheVerifiedRecipe()
    {
        var options = new QemuStorageDaemonOptions { ImagePath = "/i/x,y.qcow2", RuntimeDirectory = "/r", NodeName = "vm", Writable = false };
        Assert.Equal(
        [
            "--blockdev", "driver=file,node-name=vm-file,filename=/i/x,,y.qcow2,read-only=on",
            "--blockdev", "driver=qcow2,node-name=vm,file=vm-file,read-only=on",
            "--chardev", "socket,id=qmp0,path=/r/qmp.sock,server=on,wait=off",
            "--monitor", "chardev=qmp0",
            "--nbd-server", "addr.type=unix,addr.path=/r/nbd.sock",
        ], QemuStorageDaemon.BuildArguments(options, options.ImagePath, "/r/qmp.sock", "/r/nbd.sock"));
    }

    [Fact]
    public async Task BitmapRemove_IsAcceptedInsideATransaction()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        await qsd.Qmp.TransactionAsync(QmpAction.BitmapAdd("vm", "gen1", persistent: true), QmpAction.BitmapAdd("vm", "gen2", persistent: true));

        // Rotation with the drop of the old generation in the same transaction.
        await qsd.Qmp.TransactionAsync(QmpAction.BitmapAdd("vm", "gen3", persistent: true), QmpAction.BitmapRemove("vm", "gen1"));
        Assert.Equal(["gen2", "gen3"], (await qsd.Qmp.QueryBitmapsAsync("vm")).Select(b => b.Name).Order());

        // All or nothing: a failing action undoes the add before it.
        var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.TransactionAsync(QmpAction.BitmapAdd("vm", "gen4", persistent: true), QmpAction.BitmapRemove("vm", "nosuch")));
        Assert.Equal(QmpErrorKind.CommandFailed, e.Kind);
        Assert.Equal(["gen2", "gen3"], (await qsd.Qmp.QueryBitmapsAsync("vm")).Select(b => b.Name).Order());
    }

    [Fact]
    public async Task Fleecing_ExportShowsThePointInTime_NotLaterGuestWrites_AndTearsDownCleanly()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        var qmp = qsd.Qmp;
        await qmp.NbdExportAddAsync("live", "vm", "live", writable: true);
        Scratch.Write(qsd.NbdSocketPath, "live", 0x11, 8 * Mi, 64 * 1024);

        string overlay = scratch.File("scratch1.qcow2");
        await QemuImg.CreateQcow2Async(overlay, await qmp.QueryNodeSizeAsync("vm"));
        await qmp.BlockdevAddQcow2OverlayAsync("fleece1", overlay, "vm");
        await qmp.TransactionAsync(
            QmpAction.BitmapAdd("vm", "cp1", persistent: true),
            QmpAction.BlockdevBackup("fleece1", "vm", "fleece1", "none"));
        await qmp.NbdExportAddAsync("bk1", "fleece1", "backup", writable: false);
        Assert.Equal(["fleece1"], await qmp.QueryBlockJobsAsync());

        // The guest overwrites old data and writes new data after the checkpoint.
        Scratch.Write(qsd.NbdSocketPath, "live", 0x22, 8 * Mi, 64 * 1024);
        Scratch.Write(qsd.NbdSocketPath, "live", 0x33, 20 * Mi, 64 * 1024);

        Assert.True(Scratch.ReadsAs(qsd.NbdSocketPath, "backup", 0x11, 8 * Mi, 64 * 1024), "fleecing export lost the point-in-time data");
        Assert.True(Scratch.ReadsAs(qsd.NbdSocketPath, "backup", 0x00, 20 * Mi, 64 * 1024), "a later write leaked into the fleecing export");
        Assert.True(Scratch.ReadsAs(qsd.NbdSocketPath, "live", 0x22, 8 * Mi, 64 * 1024));
        Assert.Equal(2 * 65536, Assert.Single(await qmp.QueryBitmapsAsync("vm")).Count); // both writes are in cp1 for the next cycle

        await qmp.NbdExportDelAsync("bk1");
        Assert.Equal("BLOCK_JOB_CANCELLED", await qmp.BlockJobCancelAsync("fleece1"));
        await qmp.BlockdevDelAsync("fleece1");

        Assert.Empty(await qmp.QueryBlockJobsAsync());
        var nodes = await qmp.ExecuteAsync("query-named-block-nodes", new { flat = true });
        Assert.DoesNotContain(nodes.EnumerateArray(), n => n.GetProperty("node-name").GetString() == "fleece1");
        Assert.Equal("cp1", Assert.Single(await qmp.QueryBitmapsAsync("vm")).Name); // the job's unnamed bitmap is gone too
        Assert.Equal(0, await qsd.QuitAsync());
        Assert.Equal("cp1", Assert.Single(Scratch.ImageBitmaps(scratch.Image)).Name);
    }

    [Fact]
    public async Task ExportDel_WithAnAttachedClient_IsRefusedInSafeMode_AndHardModeDropsTheClient()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        await qsd.Qmp.NbdExportAddAsync("x", "vm", "x", writable: false);

        // An interactive qemu-io holds its NBD connection until its stdin closes; its prompt means it is attached.
        var psi = new ProcessStartInfo("qemu-io") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])["-r", "-f", "raw", $"nbd+unix:///x?socket={qsd.NbdSocketPath}"]) psi.ArgumentList.Add(a);
        using var client = Process.Start(psi)!;
        try
        {
            var prompt = new char[9];
            await client.StandardOutput.ReadBlockAsync(prompt).AsTask().WaitAsync(s_wait);
            Assert.Equal("qemu-io> ", new string(prompt));

            var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.NbdExportDelAsync("x"));
            Assert.Equal("export 'x' still in use", e.Description);

            await qsd.Qmp.NbdExportDelAsync("x", hard: true);
            Assert.Equal(0, (await qsd.Qmp.ExecuteAsync("query-block-exports")).GetArrayLength());
        }
        finally
        {
            client.StandardInput.Close();
            if (!client.WaitForExit(10_000)) client.Kill();
        }
    }

    [Fact]
    public async Task ReadOnlyNode_AcceptsAPersistentBitmap_ButLosesItOnQuit_AndCannotRemoveStoredOnes()
    {
        using var scratch = new Scratch();
        Processes.Run("qemu-img", $"bitmap --add {Processes.Quote(scratch.Image)} old");
        await using var qsd = await QemuStorageDaemon.StartAsync(new QemuStorageDaemonOptions
        {
            ImagePath = scratch.Image, RuntimeDirectory = scratch.Runtime, NodeName = "vm", Writable = false,
        });
        Assert.Equal(["auto"], Assert.Single(Scratch.ImageBitmaps(scratch.Image)).Flags); // no write lock, no in-use mark

        await qsd.Qmp.BitmapAddAsync("vm", "p", persistent: true); // QEMU 7.2 does not refuse this…
        var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.BitmapRemoveAsync("vm", "old"));
        Assert.Equal("Bitmap 'old' is readonly and cannot be modified", e.Description);

        Assert.Equal(0, await qsd.QuitAsync());
        Assert.Equal(["old"], Scratch.ImageBitmaps(scratch.Image).Select(b => b.Name)); // …but drops it on close
        Assert.Contains("Lost persistent bitmaps during inactivation of node 'vm': No write access", qsd.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RawImage_Starts_ButRefusesPersistentBitmaps()
    {
        using var scratch = new Scratch();
        string raw = scratch.File("disk.raw");
        using (var f = File.Create(raw)) f.SetLength(16 * Mi);
        await using var qsd = await QemuStorageDaemon.StartAsync(new QemuStorageDaemonOptions
        {
            ImagePath = raw, RuntimeDirectory = scratch.Runtime, NodeName = "vm", Format = "raw",
        });

        Assert.Equal(16 * Mi, await qsd.Qmp.QueryNodeSizeAsync("vm"));
        var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.BitmapAddAsync("vm", "p", persistent: true));
        Assert.Equal("Can't store persistent bitmaps to vm: Operation not supported", e.Description);
        await qsd.Qmp.BitmapAddAsync("vm", "t", persistent: false);
        Assert.Equal("t", Assert.Single(await qsd.Qmp.QueryBitmapsAsync("vm")).Name);
    }
}
