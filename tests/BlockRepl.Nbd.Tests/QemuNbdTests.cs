using BlockRepl.TestKit;

namespace BlockRepl.Nbd.Tests;

/// <summary>The client against qemu-nbd (QEMU 7.2 on Debian 12): handshake, reads, block status, errors.</summary>
[Collection(NbdCollection.Name)]
public sealed class QemuNbdTests(ImagesFixture images)
{
    private const string BaseAllocation = NbdMetaContexts.BaseAllocation;

    [Theory]
    [InlineData("raw", false)]
    [InlineData("raw", true)]
    [InlineData("qcow2", false)]
    [InlineData("qcow2", true)]
    public async Task Handshake_ReportsSizeFlagsAndBlockSizes_AndReadsMatchTheImage(string format, bool tcp)
    {
        string image = format == "raw" ? images.RawPath : images.Qcow2Path;
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, image, format, "disk", tcp);
        await using var client = await NbdClient.ConnectAsync(server.Uri.ToString());

        Assert.Equal(ImagesFixture.RawSize, client.Size);
        Assert.True(client.Flags.HasFlag(NbdTransmissionFlags.HasFlags));
        Assert.True(client.Flags.HasFlag(NbdTransmissionFlags.ReadOnly));
        Assert.True(client.StructuredReplies);
        Assert.Equal(new NbdBlockSizes(1, 4096, 32 * 1024 * 1024), client.BlockSizes);

        byte[] head = new byte[1024 * 1024];
        await client.ReadAsync(0, head);
        Assert.True(head.AsSpan().SequenceEqual(images.RawContent.AsSpan(0, head.Length)));
        byte[] tail = new byte[5000];
        await client.ReadAsync(client.Size - tail.Length, tail);
        Assert.True(tail.AsSpan().SequenceEqual(images.RawContent.AsSpan(images.RawContent.Length - tail.Length)));
    }

    [Fact]
    public async Task WholeImageRead_LargerThanTheServerMaximum_IsSplitAndByteIdentical()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.Qcow2Path, "qcow2", "disk");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        Assert.True(client.Size > client.BlockSizes.MaximumPayload);

        byte[] all = new byte[client.Size];
        Array.Fill(all, (byte)0xff); // holes must be written as zeros, not left alone
        await client.ReadAsync(0, all);
        Assert.True(all.AsSpan().SequenceEqual(images.RawContent)); // includes the zero runs, served as OFFSET_HOLE chunks
    }

    [Theory]
    [InlineData(1L, 1)]
    [InlineData(4095L, 2)]
    [InlineData(12345L, 100_000)]
    [InlineData(3L * 1024 * 1024 - 7, 2 * 1024 * 1024 + 19)] // across the zero run's edges
    [InlineData(33L * 1024 * 1024 + 1, 1)]
    public async Task UnalignedReads_MatchTheImage(long offset, int length)
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.Qcow2Path, "qcow2", "disk");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        byte[] buffer = new byte[length];
        await client.ReadAsync(offset, buffer);
        Assert.True(buffer.AsSpan().SequenceEqual(images.RawContent.AsSpan((int)offset, length)));
    }

    [Fact]
    public async Task ManyConcurrentReads_OnOneConnection_EachGetsItsOwnBytes()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.RawPath, "raw", "disk", tcp: true);
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var random = new Random(42);
        var reads = Enumerable.Range(0, 256).Select(i =>
        {
            // Mixed sizes so that qemu's coroutines finish out of order.
            int length = i % 16 == 0 ? 4 * 1024 * 1024 : 1 + random.Next(256 * 1024);
            long offset = random.Next(ImagesFixture.RawSize - length + 1);
            return (Offset: offset, Buffer: new byte[length]);
        }).ToList();

        await Task.WhenAll(reads.Select(r => Task.Run(async () => await client.ReadAsync(r.Offset, r.Buffer))));

        foreach (var (offset, buffer) in reads)
            Assert.True(buffer.AsSpan().SequenceEqual(images.RawContent.AsSpan((int)offset, buffer.Length)), $"read at {offset}+{buffer.Length}");
    }

    [Fact]
    public async Task SimpleReplies_WhenStructuredRepliesAreDisabled_ReadTheSameBytes()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.Qcow2Path, "qcow2", "disk");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { StructuredReplies = false });
        Assert.False(client.StructuredReplies);
        byte[] all = new byte[client.Size];
        await Task.WhenAll(
            client.ReadAsync(0, all.AsMemory(0, 20_000_000)).AsTask(),
            client.ReadAsync(20_000_000, all.AsMemory(20_000_000)).AsTask());
        Assert.True(all.AsSpan().SequenceEqual(images.RawContent));
    }

    [Fact]
    public async Task BaseAllocation_OnSparseQcow2_SeparatesWrittenRangesFromHoles()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.SparsePath, "qcow2", "disk");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [BaseAllocation] });
        var extents = await client.BlockStatusAsync(BaseAllocation, 0, client.Size);

        AssertTiles(extents, 0, client.Size);
        uint FlagsAt(long offset) => extents.Single(e => e.Offset <= offset && offset < e.End).Flags;
        foreach (var w in ImagesFixture.BeforeBitmaps.Concat(ImagesFixture.AfterB1).Concat(ImagesFixture.AfterB2))
        {
            for (long o = w.Offset; o < w.Offset + w.Length; o += 4096)
            {
                uint flags = FlagsAt(o);
                if (w.Pattern is null) Assert.True((flags & NbdMetaContexts.StateZero) != 0, $"zero write at {o}: flags {flags}");
                else Assert.Equal(0u, flags & (NbdMetaContexts.StateHole | NbdMetaContexts.StateZero));
            }
        }
        foreach (long never in new[] { 2 * ImagesFixture.Mi, 5 * ImagesFixture.Mi, 30 * ImagesFixture.Mi, ImagesFixture.SparseSize - 1 })
            Assert.Equal(NbdMetaContexts.StateHole | NbdMetaContexts.StateZero, FlagsAt(never));

        byte[] all = new byte[client.Size];
        Array.Fill(all, (byte)0xff);
        await client.ReadAsync(0, all);
        Assert.True(all.AsSpan().SequenceEqual(images.SparseContent));
    }

    [Fact]
    public async Task DirtyBitmaps_ReportExactlyTheWritesMadeWhileEachWasRecording()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.SparsePath, "qcow2", "disk", false, "b1", "b2");
        string b1 = NbdMetaContexts.QemuDirtyBitmap("b1"), b2 = NbdMetaContexts.QemuDirtyBitmap("b2");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [BaseAllocation, b1, b2] });
        Assert.Equal(3, client.MetaContexts.Count);
        Assert.Equal(3, client.MetaContexts.Values.Distinct().Count());

        // Every request gets one chunk per selected context: each call must pick its own by id.
        var dirty1 = await client.BlockStatusAsync(b1, 0, client.Size);
        var dirty2 = await client.BlockStatusAsync(b2, 0, client.Size);

        AssertTiles(dirty1, 0, client.Size);
        AssertTiles(dirty2, 0, client.Size);
        Assert.Equal(ImagesFixture.DirtyRanges(ImagesFixture.AfterB1.Concat(ImagesFixture.AfterB2)), DirtyOf(dirty1));
        Assert.Equal(ImagesFixture.DirtyRanges(ImagesFixture.AfterB2), DirtyOf(dirty2));

        // A sub-range with unaligned ends is clipped to exactly that range.
        long from = ImagesFixture.Mi + 100, to = 10 * ImagesFixture.Mi + 5;
        var part = await client.BlockStatusAsync(b1, from, to - from);
        AssertTiles(part, from, to);
        Assert.Equal([(from, ImagesFixture.Mi + 64 * 1024 - from), (10 * ImagesFixture.Mi, 5)], DirtyOf(part));
    }

    [Fact]
    public async Task DirtyBitmap_OnAnImageOver4GiB_LoopsOverRequests()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.HugePath, "qcow2", "disk", false, "b1");
        string b1 = NbdMetaContexts.QemuDirtyBitmap("b1");
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [b1, BaseAllocation] });
        Assert.Equal(ImagesFixture.HugeSize, client.Size);

        var dirty = await client.BlockStatusAsync(b1, 0, client.Size);
        AssertTiles(dirty, 0, client.Size);
        Assert.Equal(ImagesFixture.DirtyRanges(ImagesFixture.HugeWrites), DirtyOf(dirty));
        var allocation = await client.BlockStatusAsync(BaseAllocation, 0, client.Size);
        AssertTiles(allocation, 0, client.Size);
    }

    [Fact]
    public async Task MissingMetaContext_FailsTheConnect_NamingTheContextAndWhatTheServerOffers()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.SparsePath, "qcow2", "disk");
        var e = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(server.Uri,
            new NbdConnectOptions { MetaContexts = [BaseAllocation, "qemu:dirty-bitmap:nosuch"] }));
        Assert.Equal(NbdErrorKind.UnsupportedContext, e.Kind);
        Assert.Contains("'qemu:dirty-bitmap:nosuch'", e.Message);
        Assert.Contains("base:allocation", e.Message);
        Assert.Contains(server.Uri.SocketPath, e.Message);
        Assert.DoesNotContain('\n', e.Message);

        // The server is still fine for a correct request.
        await using var client = await NbdClient.ConnectAsync(server.Uri, new NbdConnectOptions { MetaContexts = [BaseAllocation] });
        Assert.Equal(ImagesFixture.SparseSize, client.Size);
    }

    [Fact]
    public async Task UnknownExport_FailsWithUnknownExport()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.RawPath, "raw", "disk", tcp: true);
        var uri = NbdUri.Tcp("127.0.0.1", server.Uri.Port, "nosuch");
        var e = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(uri));
        Assert.Equal(NbdErrorKind.UnknownExport, e.Kind);
        Assert.Equal("nosuch", e.Export);
        Assert.Contains("NBD_REP_ERR_UNKNOWN", e.Message);

        var withContext = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(uri, new NbdConnectOptions { MetaContexts = [BaseAllocation] }));
        Assert.Equal(NbdErrorKind.UnknownExport, withContext.Kind);
    }

    [Fact]
    public async Task BlockStatus_ForAContextNotNegotiated_IsAnInvalidRequest()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.RawPath, "raw", "disk");
        await using var client = await NbdClient.ConnectAsync(server.Uri);
        var e = await Assert.ThrowsAsync<NbdException>(() => client.BlockStatusAsync(BaseAllocation, 0, 4096));
        Assert.Equal(NbdErrorKind.InvalidRequest, e.Kind);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await client.ReadAsync(client.Size - 10, new byte[11]));
    }

    [Fact]
    public async Task NoServer_IsATransportError()
    {
        using var dir = new TempDir("blockrepl-nbd");
        var e = await Assert.ThrowsAsync<NbdException>(() => NbdClient.ConnectAsync(NbdUri.Unix(dir.File("none.sock"), "disk")));
        Assert.Equal(NbdErrorKind.Transport, e.Kind);
        Assert.True(e.IsTransient);
    }

    [Fact]
    public async Task Dispose_SendsDisc_AndTheServerKeepsServingOthers()
    {
        await using var server = await NbdServer.StartQemuNbdAsync(images.Dir, images.RawPath, "raw", "disk");
        for (int i = 0; i < 3; i++)
        {
            var client = await NbdClient.ConnectAsync(server.Uri);
            var pending = client.ReadAsync(0, new byte[8 * 1024 * 1024]).AsTask();
            await client.DisposeAsync(); // waits for the read in flight, then NBD_CMD_DISC
            await pending;
            await Assert.ThrowsAsync<ObjectDisposedException>(async () => await client.ReadAsync(0, new byte[1]));
        }
        Assert.DoesNotContain("error", server.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    internal static void AssertTiles(IReadOnlyList<NbdExtent> extents, long from, long to)
    {
        Assert.NotEmpty(extents);
        Assert.Equal(from, extents[0].Offset);
        Assert.Equal(to, extents[^1].End);
        for (int i = 1; i < extents.Count; i++)
        {
            Assert.Equal(extents[i - 1].End, extents[i].Offset);
            Assert.NotEqual(extents[i - 1].Flags, extents[i].Flags); // adjacent equal flags are merged
        }
    }

    private static List<(long Offset, long Length)> DirtyOf(IEnumerable<NbdExtent> extents) =>
        [.. extents.Where(e => (e.Flags & NbdMetaContexts.StateDirty) != 0).Select(e => (e.Offset, e.Length))];
}
