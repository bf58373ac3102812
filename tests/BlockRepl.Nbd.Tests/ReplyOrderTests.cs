namespace BlockRepl.Nbd.Tests;

/// <summary>
/// Reply handling that real servers only do sometimes, forced with <see cref="FakeNbdServer"/>: replies out of
/// order, chunks of different requests interleaved, block status in several rounds, error chunks, protocol
/// violations and a server that hangs up.
/// </summary>
public sealed class ReplyOrderTests
{
    [Fact]
    public async Task InterleavedChunks_OutOfOrder_AreReassembledPerRequest()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            var r = await c.ReadRequestsAsync(3); // A 0+8192, B 8192+8192, C 65536+4096
            await c.DataAsync(r[2].Cookie, 65536, 4096, done: true);
            await c.HoleAsync(r[1].Cookie, 12288, 4096, done: false);
            await c.DataAsync(r[0].Cookie, 4096, 4096, done: false);
            await c.DataAsync(r[1].Cookie, 8192, 4096, done: false);
            await c.ChunkAsync(r[1].Cookie, 0, done: true, []);         // NBD_REPLY_TYPE_NONE closes B
            await c.DataAsync(r[0].Cookie, 0, 4096, done: true);
            await c.ReadRequestAsync();                                 // DISC
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        byte[] a = new byte[8192], b = new byte[8192], cc = new byte[4096];
        Array.Fill(b, (byte)0xff);
        await Task.WhenAll(client.ReadAsync(0, a).AsTask(), client.ReadAsync(8192, b).AsTask(), client.ReadAsync(65536, cc).AsTask());

        Assert.Equal(FakeNbdServer.Bytes(0, 8192), a);
        Assert.Equal([.. FakeNbdServer.Bytes(8192, 4096), .. new byte[4096]], b);
        Assert.Equal(FakeNbdServer.Bytes(65536, 4096), cc);
    }

    [Fact]
    public async Task BlockStatus_PicksItsContext_ClipsOverhang_AndAsksAgainForTheRest()
    {
        await using var server = new FakeNbdServer(["base:allocation", "qemu:dirty-bitmap:x"], async c =>
        {
            var first = await c.ReadRequestAsync();
            Assert.Equal((7, 0L, (uint)FakeNbdServer.ExportSize), (first.Type, first.Offset, first.Length));
            await c.BlockStatusAsync(first.Cookie, 9, false, (4096, 1));             // the other context, first
            await c.BlockStatusAsync(first.Cookie, 7, true, (4096, 3), (4096, 3), (8192, 0)); // covers only 16 KiB
            var second = await c.ReadRequestAsync();
            Assert.Equal(16384L, second.Offset);
            await c.BlockStatusAsync(second.Cookie, 7, false, (1024 * 1024, 0));      // runs past the end of the request
            await c.BlockStatusAsync(second.Cookie, 9, true, (4096, 0));
            await c.ReadRequestAsync();                                               // DISC
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri,
            new NbdConnectOptions { MetaContexts = ["base:allocation", "qemu:dirty-bitmap:x"] });
        Assert.Equal(7u, client.MetaContexts["base:allocation"]);
        Assert.Equal(9u, client.MetaContexts["qemu:dirty-bitmap:x"]);

        var extents = await client.BlockStatusAsync("base:allocation", 0, FakeNbdServer.ExportSize);
        Assert.Equal([new NbdExtent(0, 8192, 3), new NbdExtent(8192, FakeNbdServer.ExportSize - 8192, 0)], extents);
    }

    [Fact]
    public async Task ErrorChunk_FollowedByMoreChunks_FailsThatRequestOnly()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            var r = await c.ReadRequestsAsync(2);
            await c.ErrorAsync(r[0].Cookie, 75, "too big, try again", done: false);
            await c.DataAsync(r[0].Cookie, 0, 4096, done: true);
            await c.DataAsync(r[1].Cookie, 4096, 4096, done: true);
            await c.ReadRequestAsync();
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        byte[] ok = new byte[4096];
        var failing = client.ReadAsync(0, new byte[4096]).AsTask();
        var fine = client.ReadAsync(4096, ok).AsTask();
        var e = await Assert.ThrowsAsync<NbdException>(() => failing);
        Assert.Equal(NbdErrorKind.CommandFailed, e.Kind);
        Assert.Equal(75u, e.ServerError);
        Assert.Contains("EOVERFLOW (too big, try again)", e.Message);
        await fine;
        Assert.Equal(FakeNbdServer.Bytes(4096, 4096), ok);
    }

    [Fact]
    public async Task ReplyForAnUnknownCookie_IsAProtocolError_ThatFailsEveryRequestInFlight()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            await c.ReadRequestsAsync(2);
            await c.DataAsync(0xdead, 0, 16, done: true);
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var reads = new[] { client.ReadAsync(0, new byte[16]).AsTask(), client.ReadAsync(16, new byte[16]).AsTask() };
        foreach (var read in reads)
        {
            var e = await Assert.ThrowsAsync<NbdException>(() => read);
            Assert.Equal(NbdErrorKind.Protocol, e.Kind);
            Assert.Contains("unknown cookie", e.Message);
        }
        var later = await Assert.ThrowsAsync<NbdException>(async () => await client.ReadAsync(0, new byte[16]));
        Assert.Equal(NbdErrorKind.Protocol, later.Kind);
    }

    [Fact]
    public async Task DataOutsideTheRequest_IsAProtocolError()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            var r = await c.ReadRequestAsync();
            await c.DataAsync(r.Cookie, 4000, 200, done: true);
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var e = await Assert.ThrowsAsync<NbdException>(async () => await client.ReadAsync(0, new byte[4096]));
        Assert.Equal(NbdErrorKind.Protocol, e.Kind);
        Assert.Contains("outside", e.Message);
    }

    [Fact]
    public async Task ServerHangingUp_WithRequestsInFlight_IsATransportError()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            await c.ReadRequestAsync();
            c.Close();
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var e = await Assert.ThrowsAsync<NbdException>(async () => await client.ReadAsync(0, new byte[4096]));
        Assert.Equal(NbdErrorKind.Transport, e.Kind);
        Assert.True(e.IsTransient);
        Assert.Contains("closed the connection", e.Message);
    }

    [Fact]
    public async Task ServerWithoutGo_IsOpenedWithExportName()
    {
        await using var server = new FakeNbdServer([], async c =>
        {
            var r = await c.ReadRequestAsync();
            await c.DataAsync(r.Cookie, r.Offset, (int)r.Length, done: true);
            await c.ReadRequestAsync();
        }, FakeNbdServer.GoBehaviour.Unsupported);
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        Assert.Equal(FakeNbdServer.ExportSize, client.Size);
        Assert.Equal(new NbdBlockSizes(1, 4096, 32 * 1024 * 1024), client.BlockSizes);
        byte[] buffer = new byte[100];
        await client.ReadAsync(1000, buffer);
        Assert.Equal(FakeNbdServer.Bytes(1000, 100), buffer);
    }

    [Fact]
    public async Task ServerRequiringTls_IsUnsupported_WithTheServersMessage()
    {
        await using var server = new FakeNbdServer([], _ => Task.CompletedTask, FakeNbdServer.GoBehaviour.TlsRequired);
        var e = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(server.Uri));
        Assert.Equal(NbdErrorKind.Unsupported, e.Kind);
        Assert.Contains("requires TLS", e.Message);
        Assert.Contains("NBD_REP_ERR_TLS_REQD: TLS first", e.Message);
    }

    [Fact]
    public async Task CancelWhileTheReaderWritesIntoTheBuffer_WaitsForThatWrite_ThenDiscardsTheRest()
    {
        var halfSent = new TaskCompletionSource();
        var sendRest = new TaskCompletionSource();
        await using var server = new FakeNbdServer([], async c =>
        {
            var first = await c.ReadRequestAsync();
            byte[] chunk = FakeNbdServer.Connection.DataChunk(first.Cookie, 0, 512 * 1024, done: true);
            await c.RawAsync(chunk.AsMemory(0, 200 * 1024));
            halfSent.SetResult();
            await sendRest.Task;
            await c.RawAsync(chunk.AsMemory(200 * 1024));
            var second = await c.ReadRequestAsync();
            await c.DataAsync(second.Cookie, second.Offset, (int)second.Length, done: true);
            await c.ReadRequestAsync();
        });
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        using var cts = new CancellationTokenSource();
        var read = client.ReadAsync(0, new byte[512 * 1024], cts.Token).AsTask();
        await halfSent.Task;
        // Wait until the reader is inside the caller's buffer (it has the chunk header and part of the payload).
        using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            while (client.WritesInProgress == 0) await Task.Delay(5, deadline.Token);
        }
        cts.Cancel(); // the cancellation callback runs synchronously, so the outcome is settled on return
        Assert.False(read.IsCompleted); // the reader is still filling the caller's buffer: the caller must not have it back yet
        sendRest.SetResult();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read);

        byte[] next = new byte[4096];
        await client.ReadAsync(8192, next);
        Assert.Equal(FakeNbdServer.Bytes(8192, 4096), next);
    }
}
