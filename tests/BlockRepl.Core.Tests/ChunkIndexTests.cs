using BlockRepl.Core.Compression;
using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;

namespace BlockRepl.Core.Tests;

public class ChunkIndexTests
{
    private static BlobLocation Durable(int pack, long offset) =>
        new(pack, offset, 100, 65536, BlobType.Data, BlobCompression.Lz4, (ulong)offset * 3);

    [Fact]
    public void AnIdCanBeClaimedOnlyOnce()
    {
        var index = new ChunkIndex();
        var id = TestData.Id(1);
        Assert.True(index.TryClaim(id, BlobType.Data));
        Assert.False(index.TryClaim(id, BlobType.Data));
        Assert.False(index.TryClaim(id, BlobType.Tree));
        Assert.True(index.Contains(id));
        Assert.True(index.TryGet(id, out var location));
        Assert.True(location.IsPending);
        Assert.Equal(1, index.Count);
    }

    [Fact]
    public void ADurableIdCannotBeClaimed()
    {
        var index = new ChunkIndex();
        index.Set(TestData.Id(1), Durable(0, 16));
        Assert.False(index.TryClaim(TestData.Id(1), BlobType.Data));
    }

    [Fact]
    public void ConcurrentClaimsOfTheSameIdsHaveExactlyOneWinnerEach()
    {
        const int ids = 20_000;
        const int claimsPerId = 8;
        var index = new ChunkIndex();
        var keys = Enumerable.Range(0, ids).Select(TestData.Id).ToArray();
        var wins = new int[ids];
        // Claims of one id are spread across the whole run, so they race with each other and with table growth.
        Parallel.For(0, ids * claimsPerId, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(4, Environment.ProcessorCount) }, i =>
        {
            int k = i % ids;
            if (index.TryClaim(keys[k], BlobType.Data)) Interlocked.Increment(ref wins[k]);
        });
        Assert.All(wins, w => Assert.Equal(1, w));
        Assert.Equal(ids, index.Count);
    }

    [Fact]
    public void GrowthKeepsEveryEntry()
    {
        const int n = 50_000;
        var index = new ChunkIndex();
        int pack = index.AddPack(new PackId(1, 2), 1 << 20);
        for (int i = 0; i < n; i++)
        {
            if (i % 3 == 0) Assert.True(index.TryClaim(TestData.Id(i), BlobType.Data));
            else index.Set(TestData.Id(i), Durable(pack, i + 16));
        }
        Assert.Equal(n, index.Count);
        for (int i = 0; i < n; i++)
        {
            Assert.True(index.TryGet(TestData.Id(i), out var location), $"entry {i} lost");
            if (i % 3 == 0) Assert.True(location.IsPending);
            else Assert.Equal(Durable(pack, i + 16), location);
        }
        for (int i = n; i < n + 1000; i++) Assert.False(index.Contains(TestData.Id(i)));
    }

    [Fact]
    public void DropPendingRemovesOnlyPendingClaims()
    {
        var index = new ChunkIndex();
        for (int i = 0; i < 5000; i++)
        {
            if (i % 2 == 0) index.Set(TestData.Id(i), Durable(0, i + 16));
            else index.TryClaim(TestData.Id(i), BlobType.Data);
        }
        index.DropPending();
        Assert.Equal(2500, index.Count);
        for (int i = 0; i < 5000; i++)
        {
            if (i % 2 == 0)
            {
                Assert.True(index.TryGet(TestData.Id(i), out var location));
                Assert.Equal(Durable(0, i + 16), location);
            }
            else
            {
                Assert.False(index.Contains(TestData.Id(i)));
                Assert.True(index.TryClaim(TestData.Id(i), BlobType.Data), "a dropped claim can be claimed again");
            }
        }
    }

    [Fact]
    public void SetMakesAPendingClaimDurableButNeverMovesADurableBlob()
    {
        var index = new ChunkIndex();
        var id = TestData.Id(5);
        index.TryClaim(id, BlobType.Data);
        index.Set(id, Durable(1, 100));
        Assert.True(index.TryGet(id, out var first));
        Assert.Equal(Durable(1, 100), first);

        index.Set(id, Durable(2, 200)); // a second copy in another pack (two writers raced): any copy will do
        Assert.True(index.TryGet(id, out var second));
        Assert.Equal(Durable(1, 100), second);
        Assert.Equal(1, index.Count);
    }

    [Fact]
    public void EntriesListsOnlyDurableBlobs()
    {
        var index = new ChunkIndex();
        index.Set(TestData.Id(1), Durable(0, 16));
        index.TryClaim(TestData.Id(2), BlobType.Data);
        var entries = index.Entries();
        var only = Assert.Single(entries);
        Assert.Equal(TestData.Id(1), only.Id);
    }

    [Fact]
    public void PacksGetStableOrdinals()
    {
        var index = new ChunkIndex();
        var a = new PackId(1, 1);
        var b = new PackId(2, 2);
        Assert.Equal(0, index.AddPack(a, 100));
        Assert.Equal(1, index.AddPack(b, 200));
        Assert.Equal(0, index.AddPack(a, 100));
        Assert.Equal(2, index.PackCount);
        Assert.Equal((b, 200L), index.PackAt(1));
    }
}
