using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace BlockRepl.Qemu.Tests;

/// <summary>The QMP client against a real qemu-storage-daemon (QEMU 7.2).</summary>
public sealed class QmpClientTests
{
    [Fact]
    public async Task Handshake_ReportsTheVersionFromTheGreeting()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());

        Assert.Matches(@"^\d+\.\d+\.\d+$", qsd.Qmp.Version);
        var version = await qsd.Qmp.ExecuteAsync("query-version");
        var qemu = version.GetProperty("qemu");
        Assert.Equal($"{qemu.GetProperty("major")}.{qemu.GetProperty("minor")}.{qemu.GetProperty("micro")}", qsd.Qmp.Version);
        Assert.True(qsd.Qmp.IsConnected);
    }

    [Fact]
    public async Task UnknownCommand_IsCommandFailed_WithClassCommandNotFound_AndTheConnectionStaysUsable()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());

        var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.ExecuteAsync("no-such-command"));
        Assert.Equal(QmpErrorKind.CommandFailed, e.Kind);
        Assert.Equal("CommandNotFound", e.Class);
        Assert.Equal("no-such-command", e.Command);
        Assert.Equal(JsonValueKind.Object, (await qsd.Qmp.ExecuteAsync("query-version")).ValueKind);
    }

    [Fact]
    public async Task ErrorReply_MessageIsOneLine_WithCommandSocketClassAndDescription()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        await qsd.Qmp.TransactionAsync(QmpAction.BitmapAdd("vm", "cp1", persistent: true));

        // ref/nbd.md §2.5: a read-only export of a writable node with an enabled bitmap is refused.
        var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.NbdExportAddAsync("bk", "vm", "backup", writable: false, ["cp1"]));

        Assert.Equal(QmpErrorKind.CommandFailed, e.Kind);
        Assert.Equal("GenericError", e.Class);
        Assert.Equal("Enabled bitmap 'cp1' incompatible with readonly export", e.Description);
        Assert.Equal($"QMP 'block-export-add' on {qsd.QmpSocketPath} failed: GenericError: Enabled bitmap 'cp1' incompatible with readonly export", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public async Task Arguments_FromAnonymousObjectsDictionariesAndJsonObjects_KeepTheirNames()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());

        var nodes = await qsd.Qmp.ExecuteAsync("query-named-block-nodes", new { flat = true });
        Assert.Contains(nodes.EnumerateArray(), n => n.GetProperty("node-name").GetString() == "vm-file");
        await qsd.Qmp.ExecuteAsync("block-dirty-bitmap-add", new Dictionary<string, object?> { ["node"] = "vm", ["name"] = "d", ["persistent"] = false });
        await qsd.Qmp.ExecuteAsync("block-dirty-bitmap-add", new JsonObject { ["node"] = "vm", ["name"] = "j", ["disabled"] = true });

        var bitmaps = await qsd.Qmp.QueryBitmapsAsync("vm");
        Assert.Equal(["d", "j"], bitmaps.Select(b => b.Name).Order());
        Assert.False(bitmaps.Single(b => b.Name == "j").Recording);
        Assert.Throws<ArgumentException>(() => QmpClient.BuildRequest("x", new[] { 1, 2 }, 1));
    }

    [Fact]
    public void Request_IsOneLineWithExecuteArgumentsAndId()
    {
        byte[] line = QmpClient.BuildRequest("block-export-del", new Dictionary<string, object?> { ["id"] = "a\nb", ["mode"] = "hard" }, 7);
        Assert.Equal("""{"execute":"block-export-del","arguments":{"id":"a\nb","mode":"hard"},"id":7}""", Encoding.UTF8.GetString(line));
        Assert.Equal("""{"execute":"quit","id":8}""", Encoding.UTF8.GetString(QmpClient.BuildRequest("quit", null, 8)));
    }

    [Fact]
    public async Task ConcurrentCommands_EachGetItsOwnReply()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());

        var calls = Enumerable.Range(0, 200).Select(i => Task.Run(async () =>
        {
            if (i % 3 == 0) return (i, (await qsd.Qmp.ExecuteAsync("query-version")).ValueKind == JsonValueKind.Object);
            if (i % 3 == 1) return (i, (await qsd.Qmp.ExecuteAsync("query-named-block-nodes", new { flat = true })).ValueKind == JsonValueKind.Array);
            var e = await Assert.ThrowsAsync<QmpException>(() => qsd.Qmp.ExecuteAsync($"nope-{i}"));
            return (i, e.Description == $"The command nope-{i} has not been found");
        }));

        Assert.All(await Task.WhenAll(calls), r => Assert.True(r.Item2, $"call {r.i} got a reply meant for another"));
    }

    [Fact]
    public async Task Events_AreBuffered_AndAWaitTakesTheFirstMatchOnce()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        var qmp = qsd.Qmp;

        foreach (string id in (string[])["e1", "e2"])
        {
            await qmp.NbdExportAddAsync(id, "vm", id, writable: true);
            await qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = id });
        }
        // Both BLOCK_EXPORT_DELETED events may already be buffered; each wait must find "its" one, whenever it came.
        var second = await qmp.WaitForEventAsync("BLOCK_EXPORT_DELETED", d => d.GetProperty("id").GetString() == "e2", TimeSpan.FromSeconds(10));
        var first = await qmp.WaitForEventAsync("BLOCK_EXPORT_DELETED", null, TimeSpan.FromSeconds(10));
        Assert.Equal("e2", second.GetProperty("id").GetString());
        Assert.Equal("e1", first.GetProperty("id").GetString());

        // Consumed: a third wait has nothing to take.
        var e = await Assert.ThrowsAsync<QmpException>(() => qmp.WaitForEventAsync("BLOCK_EXPORT_DELETED", null, TimeSpan.FromMilliseconds(200)));
        Assert.Equal(QmpErrorKind.Timeout, e.Kind);

        // A wait that starts first is completed by the event when it arrives.
        var waiting = qmp.WaitForEventAsync("BLOCK_EXPORT_DELETED", d => d.GetProperty("id").GetString() == "e3", TimeSpan.FromSeconds(10));
        await qmp.NbdExportAddAsync("e3", "vm", "e3", writable: true);
        await qmp.ExecuteAsync("block-export-del", new JsonObject { ["id"] = "e3" });
        Assert.Equal("e3", (await waiting.WaitAsync(TimeSpan.FromSeconds(10))).GetProperty("id").GetString());
    }

    [Fact]
    public async Task DaemonKilledMidCall_FailsPendingAndLaterCallsWithTransport_Quickly()
    {
        using var scratch = new Scratch();
        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        var qmp = qsd.Qmp;
        var eventWait = qmp.WaitForEventAsync("NEVER", null, TimeSpan.FromMinutes(1));
        var hammer = Task.Run(async () =>
        {
            while (true) await qmp.ExecuteAsync("query-named-block-nodes", new { flat = true });
        });
        await qmp.ExecuteAsync("query-version"); // the hammer is running

        var clock = Stopwatch.StartNew();
        qsd.Kill();
        var fromHammer = await Assert.ThrowsAsync<QmpException>(() => hammer.WaitAsync(TimeSpan.FromSeconds(10)));
        var fromWait = await Assert.ThrowsAsync<QmpException>(() => eventWait.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");

        Assert.Equal(QmpErrorKind.Transport, fromHammer.Kind);
        Assert.Equal(QmpErrorKind.Transport, fromWait.Kind);
        Assert.Contains(qsd.QmpSocketPath, fromHammer.Message, StringComparison.Ordinal);
        var later = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("query-version"));
        Assert.Equal(QmpErrorKind.Transport, later.Kind);
        Assert.Equal("query-version", later.Command);
        Assert.False(qmp.IsConnected);
    }

    [Fact]
    public async Task ConnectToNothing_IsTransport_AndASecondClientGetsNoGreeting_Timeout()
    {
        using var scratch = new Scratch();
        var none = await Assert.ThrowsAsync<QmpException>(() => QmpClient.ConnectAsync(scratch.File("nothing.sock"), TimeSpan.FromSeconds(5)));
        Assert.Equal(QmpErrorKind.Transport, none.Kind);

        await using var qsd = await QemuStorageDaemon.StartAsync(scratch.Options());
        // The monitor chardev serves one client; the daemon's own client holds it.
        var second = await Assert.ThrowsAsync<QmpException>(() => QmpClient.ConnectAsync(qsd.QmpSocketPath, TimeSpan.FromMilliseconds(500)));
        Assert.Equal(QmpErrorKind.Timeout, second.Kind);
        Assert.Contains("greeting", second.Message, StringComparison.Ordinal);
    }
}
