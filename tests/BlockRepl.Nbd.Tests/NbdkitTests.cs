using BlockRepl.TestKit;

namespace BlockRepl.Nbd.Tests;

/// <summary>The client against nbdkit: injected errors and delays, odd block sizes, simple replies only.</summary>
[Collection(NbdCollection.Name)]
public sealed class NbdkitTests(ImagesFixture images)
{
    private string[] FilePlugin => ["file", $"file={images.RawPath}"];

    [Fact]
    public async Task InjectedReadError_SurfacesAsCommandFailed_AndTheConnectionStaysUsable()
    {
        string trigger = images.Dir.File($"inject-{Guid.NewGuid():N}");
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir,
            [.. FilePlugin, "error-pread=EIO", "error-pread-rate=100%", $"error-pread-file={trigger}"], false, "--filter=error");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [NbdMetaContexts.BaseAllocation] });
        byte[] buffer = new byte[64 * 1024];
        await client.ReadAsync(4096, buffer);

        File.WriteAllBytes(trigger, []);
        try
        {
            var e = await Assert.ThrowsAsync<NbdException>(async () => await client.ReadAsync(4096, buffer));
            Assert.Equal(NbdErrorKind.CommandFailed, e.Kind);
            Assert.Equal(5u, e.ServerError);
            Assert.True(e.IsTransient);
            Assert.Contains("READ at offset 4096, length 65536 failed: EIO", e.Message);
            Assert.Contains(server.Uri.ToString(), e.Message);

            // Only the reads fail; block status on the same connection still works.
            var extents = await client.BlockStatusAsync(NbdMetaContexts.BaseAllocation, 0, client.Size);
            QemuNbdTests.AssertTiles(extents, 0, client.Size);
        }
        finally
        {
            File.Delete(trigger);
        }

        await client.ReadAsync(4096, buffer);
        Assert.True(buffer.AsSpan().SequenceEqual(images.RawContent.AsSpan(4096, buffer.Length)));
    }

    [Fact]
    public async Task InjectedBlockStatusError_SurfacesAsCommandFailed()
    {
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir,
            [.. FilePlugin, "error-extents=EPERM", "error-extents-rate=100%"], true, "--filter=error");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [NbdMetaContexts.BaseAllocation] });
        var e = await Assert.ThrowsAsync<NbdException>(() => client.BlockStatusAsync(NbdMetaContexts.BaseAllocation, 0, client.Size));
        Assert.Equal(NbdErrorKind.CommandFailed, e.Kind);
        Assert.Equal(1u, e.ServerError);
        Assert.False(e.IsTransient);
    }

    [Theory]
    [InlineData(4096, 16384, 65536)]
    [InlineData(4096, 4096, 4096)] // a read straddling two blocks must become two requests
    [InlineData(512, 4096, 1024 * 1024)]
    public async Task MinimumAndMaximumBlockSize_AreHonoured_ForUnalignedAndLargeReads(int minimum, int preferred, int maximum)
    {
        // blocksize-error-policy=error: the filter rejects any request that breaks the advertised limits.
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir,
            [.. FilePlugin, $"blocksize-minimum={minimum}", $"blocksize-preferred={preferred}", $"blocksize-maximum={maximum}", "blocksize-error-policy=error"],
            false, "--filter=blocksize-policy");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        Assert.Equal(new NbdBlockSizes(minimum, preferred, maximum), client.BlockSizes);
        Assert.Equal(maximum, client.MaxReadRequest);

        var reads = new[] { (1L, 1), (4095L, 2), (100L, 4900), (5000L, 70_000), (0L, 1024 * 1024 + 3), (ImagesFixture.RawSize - 5L, 5), (ImagesFixture.RawSize - 70_001L, 70_001) };
        foreach (var (offset, length) in reads)
        {
            byte[] buffer = new byte[length];
            await client.ReadAsync(offset, buffer);
            Assert.True(buffer.AsSpan().SequenceEqual(images.RawContent.AsSpan((int)offset, length)), $"read at {offset}+{length}");
        }
    }

    [Fact]
    public async Task ServerWithoutStructuredReplies_ReadsWithSimpleReplies_AndRefusesMetaContexts()
    {
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir, FilePlugin, false, "--no-sr");
        await using (var client = await NbdClient.ConnectAsync(server.Uri))
        {
            Assert.False(client.StructuredReplies);
            byte[] all = new byte[client.Size];
            await client.ReadAsync(0, all);
            Assert.True(all.AsSpan().SequenceEqual(images.RawContent));
        }

        var e = await Assert.ThrowsAsync<NbdException>(() =>
            NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [NbdMetaContexts.BaseAllocation] }));
        Assert.Equal(NbdErrorKind.Unsupported, e.Kind);
        Assert.Contains("structured replies", e.Message);
    }

    [Fact]
    public async Task ServerWithoutQemuContexts_GivesAClearUnsupportedContextError()
    {
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir, FilePlugin);
        var e = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(server.Uri,
            new NbdConnectOptions { MetaContexts = [NbdMetaContexts.BaseAllocation, NbdMetaContexts.QemuDirtyBitmap("b1")] }));
        Assert.Equal(NbdErrorKind.UnsupportedContext, e.Kind);
        Assert.Contains("'qemu:dirty-bitmap:b1'", e.Message);
        Assert.Contains("offers: base:allocation", e.Message);
    }

    [Fact]
    public async Task CancelledRead_ReleasesTheCaller_AndLaterRepliesStayInSync()
    {
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir, [.. FilePlugin, "rdelay=300ms"], false, "--filter=delay");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        byte[] abandoned = new byte[1024 * 1024];
        using (var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(50)))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await client.ReadAsync(0, abandoned, cts.Token));
        }
        Array.Fill(abandoned, (byte)0x77);

        // The cancelled read's reply still arrives; it must be discarded, not written into the released buffer.
        byte[] buffer = new byte[8192];
        await client.ReadAsync(2 * 1024 * 1024, buffer);
        Assert.True(buffer.AsSpan().SequenceEqual(images.RawContent.AsSpan(2 * 1024 * 1024, buffer.Length)));
        Assert.True(abandoned.AsSpan().IndexOfAnyExcept((byte)0x77) < 0);
    }

    [Fact]
    public async Task DelayedReplies_ManyInFlight_CompleteConcurrently()
    {
        await using var server = await NbdServer.StartNbdkitAsync(images.Dir, [.. FilePlugin, "rdelay=200ms"], false, "--filter=delay");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var buffers = Enumerable.Range(0, 16).Select(_ => new byte[256 * 1024]).ToArray();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await Task.WhenAll(buffers.Select((b, i) => client.ReadAsync(i * 1024 * 1024L, b).AsTask()));
        watch.Stop();
        // nbdkit serves a connection with several threads: 16 × 200 ms in series would be 3.2 s.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2.5), $"16 delayed reads took {watch.Elapsed}");
        for (int i = 0; i < buffers.Length; i++)
            Assert.True(buffers[i].AsSpan().SequenceEqual(images.RawContent.AsSpan(i * 1024 * 1024, buffers[i].Length)));
    }
}
