using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;

namespace BlockRepl.Core.Tests;

public class PackRangesTests
{
    private static readonly PackRangeOptions s_options = new() { MaxGap = 1000, MaxRange = 10_000 };

    private static BlobRead Blob(int pack, long offset, int length, long tag = 0) =>
        new(TestData.Id((int)(offset + pack * 1_000_000)), new BlobLocation(pack, offset, length, length, BlobType.Data, BlobCompression.None, 0), tag);

    private static List<(int Pack, long Offset, int Length, int Blobs)> Plan(params BlobRead[] blobs) =>
        PackRanges.Plan(blobs, s_options).Select(r => (r.Pack, r.Offset, r.Length, r.Blobs.Length)).ToList();

    [Fact]
    public void NeighboursWithinTheGapAreOneRangeInOffsetOrder()
    {
        // given out of order, as a tree walk over an incremental gives them
        var plan = Plan(Blob(0, 2100, 100), Blob(0, 16, 1000), Blob(0, 1016, 84));
        Assert.Equal([(0, 16L, 2184, 3)], plan);
    }

    [Fact]
    public void AGapLargerThanMaxGapStartsANewRange()
    {
        Assert.Equal([(0, 0L, 100, 1), (0, 1101L, 100, 1)], Plan(Blob(0, 0, 100), Blob(0, 1101, 100)));
        Assert.Equal([(0, 0L, 1200, 2)], Plan(Blob(0, 0, 100), Blob(0, 1100, 100)));
    }

    [Fact]
    public void RangesStopAtMaxRangeAndAtPackBoundaries()
    {
        var plan = Plan(Blob(0, 0, 6000), Blob(0, 6000, 4000), Blob(0, 10_000, 1), Blob(1, 10_001, 5));
        Assert.Equal([(0, 0L, 10_000, 2), (0, 10_000L, 1, 1), (1, 10_001L, 5, 1)], plan);
    }

    [Fact]
    public void ABlobLargerThanMaxRangeIsItsOwnRange()
    {
        Assert.Equal([(0, 0L, 20_000, 1), (0, 20_000L, 10, 1)], Plan(Blob(0, 0, 20_000), Blob(0, 20_000, 10)));
    }

    [Fact]
    public void ABlobNeededTwiceIsReadOnceAndTakenTwice()
    {
        var plan = PackRanges.Plan(new[] { Blob(0, 500, 100, tag: 7), Blob(0, 500, 100, tag: 3) }, s_options);
        var range = Assert.Single(plan);
        Assert.Equal((500L, 100), (range.Offset, range.Length));
        Assert.Equal([3L, 7L], range.Blobs.Select(b => b.Tag).Order());
        var buffer = new byte[100];
        Assert.Equal(100, range.Slice(buffer, range.Blobs[0]).Length);
    }

    [Fact]
    public async Task AByteBudgetCapsALargeRequestAndServesWaitersInOrder()
    {
        using var budget = new ByteBudget(1 << 20);
        int big = await budget.AcquireAsync(100L << 20, CancellationToken.None);   // capped: does not wait forever
        var next = budget.AcquireAsync(64 << 10, CancellationToken.None).AsTask();
        await Task.Delay(50);
        Assert.False(next.IsCompleted);
        budget.Release(big);
        budget.Release(await next.WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
