using System.Security.Cryptography;
using BlockRepl.Storage;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// The <see cref="IBackend"/> contract as one suite that runs unchanged against every backend: a
/// subclass only says how to get a fresh, empty backend (<see cref="CreateBackendAsync"/>). What is
/// specific to one backend (local tmp/ cleanup and key validation, S3 multipart, HEAD-then-PUT,
/// error messages) stays in that backend's own tests. A backend that genuinely deviates overrides
/// the single affected test with a comment and asserts its actual behaviour — never a silent skip.
/// </summary>
public abstract class BackendConformanceTests : IAsyncLifetime
{
    private readonly List<IBackend> _backends = [];

    /// <summary>A new backend over a fresh, empty location (a new directory, a new bucket) on every call.</summary>
    protected abstract Task<IBackend> CreateBackendAsync();

    /// <summary>
    /// How many keys <see cref="ListingReturnsEveryKeyPastOneThousand"/> writes (more than S3's page of
    /// 1000). A backend for which that is too slow may lower it; the test then still lists what it wrote.
    /// </summary>
    protected virtual int LargeListingKeyCount => 1100;

    /// <summary>Called after every backend of the test has been disposed (delete directories and the like).</summary>
    protected virtual Task CleanupAsync() => Task.CompletedTask;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var b in _backends)
            await b.DisposeAsync();
        await CleanupAsync();
    }

    /// <summary>A fresh backend, disposed when the test ends.</summary>
    protected async Task<IBackend> NewBackendAsync()
    {
        var backend = await CreateBackendAsync();
        _backends.Add(backend);
        return backend;
    }

    protected static async Task<List<string>> KeysAsync(IBackend backend, string prefix)
    {
        var keys = new List<string>();
        await foreach (var o in backend.ListAsync(prefix)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    protected static byte[] RandomBytes(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public async Task AnObjectIsVisibleOnlyAfterCommit()
    {
        var backend = await NewBackendAsync();
        var content = RandomBytes(200_000, 1);
        await using (var upload = await backend.CreateAsync("data/ab/ab01.pack"))
        {
            Assert.Equal("data/ab/ab01.pack", upload.Key);
            await upload.Stream.WriteAsync(content.AsMemory(0, 50_000));
            await upload.Stream.WriteAsync(content.AsMemory(50_000));
            Assert.Null(await backend.StatAsync("data/ab/ab01.pack"));
            Assert.Empty(await KeysAsync(backend, ""));
            await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAllAsync("data/ab/ab01.pack"));
            await upload.CommitAsync();
            // visible as soon as CommitAsync has returned, before the upload is disposed
            Assert.Equal(new ObjectInfo("data/ab/ab01.pack", content.Length), await backend.StatAsync("data/ab/ab01.pack"));
        }

        Assert.Equal(new ObjectInfo("data/ab/ab01.pack", content.Length), await backend.StatAsync("data/ab/ab01.pack"));
        Assert.Equal(content, await backend.ReadAllAsync("data/ab/ab01.pack"));
        Assert.Equal(["data/ab/ab01.pack"], await KeysAsync(backend, ""));
    }

    [Fact]
    public async Task AnAbandonedUploadLeavesNothing()
    {
        var backend = await NewBackendAsync();
        await using (var upload = await backend.CreateAsync("snapshots/s1.snap"))
            await upload.Stream.WriteAsync(new byte[1000]);
        await using (var upload = await backend.CreateAsync("data/ab/ab01.pack"))
            await upload.Stream.WriteAsync(RandomBytes(3_000_000, 2));   // large enough to spool to a file

        Assert.Empty(await KeysAsync(backend, ""));
        Assert.Null(await backend.StatAsync("snapshots/s1.snap"));
        Assert.Null(await backend.StatAsync("data/ab/ab01.pack"));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAllAsync("snapshots/s1.snap"));

        // an abandoned upload does not hold the key
        await backend.PutAsync("snapshots/s1.snap", "later"u8.ToArray());
        Assert.Equal("later"u8.ToArray(), await backend.ReadAllAsync("snapshots/s1.snap"));
        Assert.Equal(["snapshots/s1.snap"], await KeysAsync(backend, ""));
    }

    [Fact]
    public virtual async Task ASecondCommitOfTheSameKeyFailsAndKeepsTheFirstContent()
    {
        var backend = await NewBackendAsync();
        await backend.PutAsync("config", "first"u8.ToArray());

        await using (var upload = await backend.CreateAsync("config"))
        {
            await upload.Stream.WriteAsync("second, longer"u8.ToArray());
            var ex = await Assert.ThrowsAsync<ObjectExistsException>(async () => await upload.CommitAsync());
            Assert.Equal("config", ex.Key);
            Assert.False(ex.Transient);
        }

        await Assert.ThrowsAsync<ObjectExistsException>(async () => await backend.PutAsync("config", new byte[] { 3 }));
        Assert.Equal("first"u8.ToArray(), await backend.ReadAllAsync("config"));
        Assert.Equal(new ObjectInfo("config", 5), await backend.StatAsync("config"));
        Assert.Equal(["config"], await KeysAsync(backend, ""));
    }

    [Fact]
    public virtual async Task OfTwoOverlappingUploadsOfOneKeyOnlyTheFirstCommitWins()
    {
        var backend = await NewBackendAsync();
        await using var a = await backend.CreateAsync("snapshots/s1.snap");
        await using var b = await backend.CreateAsync("snapshots/s1.snap");
        await a.Stream.WriteAsync("from a"u8.ToArray());
        await b.Stream.WriteAsync("from b, which is longer"u8.ToArray());

        await b.CommitAsync();
        await Assert.ThrowsAsync<ObjectExistsException>(async () => await a.CommitAsync());
        Assert.Equal("from b, which is longer"u8.ToArray(), await backend.ReadAllAsync("snapshots/s1.snap"));
    }

    [Fact]
    public async Task ReadAtReturnsTheRangeAShortReadAtTheEndAndNothingPastIt()
    {
        var backend = await NewBackendAsync();
        var content = RandomBytes(10_000, 3);
        await backend.PutAsync("index/00/a.idx", content);
        var buffer = new byte[1000];

        Assert.Equal(1000, await backend.ReadAtAsync("index/00/a.idx", 0, buffer));
        Assert.Equal(content.AsSpan(0, 1000).ToArray(), buffer);
        Assert.Equal(1000, await backend.ReadAtAsync("index/00/a.idx", 4321, buffer));
        Assert.Equal(content.AsSpan(4321, 1000).ToArray(), buffer);
        Assert.Equal(1000, await backend.ReadAtAsync("index/00/a.idx", 9000, buffer));   // ends exactly at the end
        Assert.Equal(content.AsSpan(9000, 1000).ToArray(), buffer);

        Array.Clear(buffer);
        Assert.Equal(400, await backend.ReadAtAsync("index/00/a.idx", 9600, buffer));   // short only at the end
        Assert.Equal(content.AsSpan(9600, 400).ToArray(), buffer.AsSpan(0, 400).ToArray());
        Assert.Equal(1, await backend.ReadAtAsync("index/00/a.idx", 9999, buffer));
        Assert.Equal(content[9999], buffer[0]);

        Assert.Equal(0, await backend.ReadAtAsync("index/00/a.idx", 10_000, buffer));   // at the end
        Assert.Equal(0, await backend.ReadAtAsync("index/00/a.idx", 10_001, buffer));   // past the end
        Assert.Equal(0, await backend.ReadAtAsync("index/00/a.idx", 1L << 40, buffer));

        var whole = new byte[20_000];
        Assert.Equal(10_000, await backend.ReadAtAsync("index/00/a.idx", 0, whole));
        Assert.Equal(content, whole.AsSpan(0, 10_000).ToArray());

        await backend.ReadExactlyAtAsync("index/00/a.idx", 9000, buffer);
        await Assert.ThrowsAsync<StorageException>(async () => await backend.ReadExactlyAtAsync("index/00/a.idx", 9001, buffer));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAtAsync("index/00/missing.idx", 0, buffer));
    }

    [Fact]
    public async Task ReadAllReturnsEmptyAndLargeObjects()
    {
        var backend = await NewBackendAsync();
        var big = RandomBytes(5 << 20, 4);
        await backend.PutAsync("snapshots/empty.snap", ReadOnlyMemory<byte>.Empty);
        await backend.PutAsync("data/ff/big.pack", big);

        Assert.Empty(await backend.ReadAllAsync("snapshots/empty.snap"));
        Assert.Equal(new ObjectInfo("snapshots/empty.snap", 0), await backend.StatAsync("snapshots/empty.snap"));
        Assert.Equal(0, await backend.ReadAtAsync("snapshots/empty.snap", 0, new byte[10]));

        Assert.Equal(SHA256.HashData(big), SHA256.HashData(await backend.ReadAllAsync("data/ff/big.pack")));
        Assert.Equal(new ObjectInfo("data/ff/big.pack", big.Length), await backend.StatAsync("data/ff/big.pack"));
        Assert.Equal(["data/ff/big.pack", "snapshots/empty.snap"], await KeysAsync(backend, ""));
    }

    [Fact]
    public async Task StatGivesTheLengthOrNullAndMissingReadsAreNotFound()
    {
        var backend = await NewBackendAsync();
        await backend.PutAsync("data/ab/ab01.pack", new byte[1234]);

        Assert.Equal(new ObjectInfo("data/ab/ab01.pack", 1234), await backend.StatAsync("data/ab/ab01.pack"));
        Assert.Null(await backend.StatAsync("data/ab/ab02.pack"));
        Assert.Null(await backend.StatAsync("data/ab"));          // a "directory" is not an object
        Assert.Null(await backend.StatAsync("data/ab/ab01"));     // nor is a key prefix
        Assert.Null(await backend.StatAsync("config"));

        var ex = await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAllAsync("snapshots/none.snap"));
        Assert.Equal("snapshots/none.snap", ex.Key);
        Assert.False(ex.Transient);
        var ex2 = await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAtAsync("data/zz/none.pack", 0, new byte[1]));
        Assert.Equal("data/zz/none.pack", ex2.Key);
    }

    [Fact]
    public async Task ListReturnsExactlyTheCommittedKeysUnderNestedPrefixes()
    {
        var backend = await NewBackendAsync();
        (string Key, int Length)[] objects =
        [
            ("config", 1),
            ("data/ab/ab01.pack", 2),
            ("data/ab/ab02.pack", 3),
            ("data/cd/cd01.pack", 4),
            ("index/ab/ab01.idx", 5),
            ("index/cd01.idx", 6),
            ("snapshots/s1.snap", 7),
        ];
        foreach (var (key, length) in objects)
            await backend.PutAsync(key, new byte[length]);
        await using var pending = await backend.CreateAsync("snapshots/s2.snap");   // not committed: never listed
        await pending.Stream.WriteAsync(new byte[8]);

        Assert.Equal(objects.Select(o => o.Key), await KeysAsync(backend, ""));
        Assert.Equal(["data/ab/ab01.pack", "data/ab/ab02.pack", "data/cd/cd01.pack"], await KeysAsync(backend, "data/"));
        Assert.Equal(["data/ab/ab01.pack", "data/ab/ab02.pack", "data/cd/cd01.pack"], await KeysAsync(backend, "data"));
        Assert.Equal(["data/ab/ab01.pack", "data/ab/ab02.pack"], await KeysAsync(backend, "data/ab/"));
        Assert.Equal(["data/ab/ab02.pack"], await KeysAsync(backend, "data/ab/ab02"));
        Assert.Equal(["data/cd/cd01.pack"], await KeysAsync(backend, "data/c"));
        Assert.Equal(["index/ab/ab01.idx", "index/cd01.idx"], await KeysAsync(backend, "index/"));
        Assert.Equal(["index/cd01.idx"], await KeysAsync(backend, "index/cd"));
        Assert.Equal(["snapshots/s1.snap"], await KeysAsync(backend, "snap"));
        Assert.Equal(["config"], await KeysAsync(backend, "config"));
        Assert.Empty(await KeysAsync(backend, "locks/"));
        Assert.Empty(await KeysAsync(backend, "data/ef/"));
        Assert.Empty(await KeysAsync(backend, "tmp/"));

        var lengths = new Dictionary<string, long>();
        await foreach (var o in backend.ListAsync("")) lengths.Add(o.Key, o.Length);
        Assert.Equal(objects.ToDictionary(o => o.Key, o => (long)o.Length), lengths);
    }

    [Fact]
    public async Task ListingReturnsEveryKeyPastOneThousand()
    {
        var backend = await NewBackendAsync();
        int count = LargeListingKeyCount;
        await Parallel.ForEachAsync(Enumerable.Range(0, count), new ParallelOptions { MaxDegreeOfParallelism = 16 },
            async (i, ct) => await backend.PutAsync($"index/{i % 7:D2}/{i:D5}.idx", new byte[] { (byte)i }, ct));
        await backend.PutAsync("config", new byte[2]);

        var expected = Enumerable.Range(0, count).Select(i => $"index/{i % 7:D2}/{i:D5}.idx").Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, await KeysAsync(backend, "index/"));
        Assert.Equal(expected.Append("config").Order(StringComparer.Ordinal), await KeysAsync(backend, ""));
        Assert.Equal(expected.Where(k => k.StartsWith("index/03/", StringComparison.Ordinal)), await KeysAsync(backend, "index/03/"));
    }

    [Fact]
    public async Task DeleteRemovesTheObjectAndIsIdempotent()
    {
        var backend = await NewBackendAsync();
        await backend.PutAsync("data/ab/ab01.pack", new byte[10]);
        await backend.PutAsync("data/ab/ab02.pack", new byte[20]);
        var buffer = new byte[4];
        Assert.Equal(4, await backend.ReadAtAsync("data/ab/ab01.pack", 0, buffer));   // may cache a read handle

        await backend.DeleteAsync("data/ab/ab01.pack");
        Assert.Null(await backend.StatAsync("data/ab/ab01.pack"));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAllAsync("data/ab/ab01.pack"));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await backend.ReadAtAsync("data/ab/ab01.pack", 0, buffer));
        Assert.Equal(["data/ab/ab02.pack"], await KeysAsync(backend, ""));

        await backend.DeleteAsync("data/ab/ab01.pack");           // already gone
        await backend.DeleteAsync("data/zz/never-written.pack");  // never existed, nor did its "directory"
        await backend.DeleteAsync("config");

        // a deleted key can be written again (prune, then re-upload)
        await backend.PutAsync("data/ab/ab01.pack", new byte[3]);
        Assert.Equal(new ObjectInfo("data/ab/ab01.pack", 3), await backend.StatAsync("data/ab/ab01.pack"));
        Assert.Equal(["data/ab/ab01.pack", "data/ab/ab02.pack"], await KeysAsync(backend, ""));
    }

    [Fact]
    public async Task ConcurrentUploadsOfDistinctKeysAreAllVisible()
    {
        var backend = await NewBackendAsync();
        const int tasks = 8;
        using var start = new SemaphoreSlim(0);
        var work = Enumerable.Range(0, tasks).Select(t => Task.Run(async () =>
        {
            await start.WaitAsync();
            string key = $"data/{t:x2}/{t:x2}-object.pack";
            var content = RandomBytes(300_000 + t, 100 + t);
            await using var upload = await backend.CreateAsync(key);
            for (int off = 0; off < content.Length; off += 64_000)
            {
                await upload.Stream.WriteAsync(content.AsMemory(off, Math.Min(64_000, content.Length - off)));
                await Task.Yield();
            }
            await upload.CommitAsync();
            return (key, content);
        })).ToList();
        start.Release(tasks);
        var written = await Task.WhenAll(work);

        Assert.Equal(written.Select(w => w.key).Order(StringComparer.Ordinal), await KeysAsync(backend, "data/"));
        foreach (var (key, content) in written)
        {
            Assert.Equal(new ObjectInfo(key, content.Length), await backend.StatAsync(key));
            Assert.Equal(content, await backend.ReadAllAsync(key));
        }
    }

    [Fact]
    public async Task AFortyMebibyteObjectStreamedInOneMebibyteWritesReadsBackIdentically()
    {
        var backend = await NewBackendAsync();
        const int mib = 1 << 20, chunks = 40;
        var rng = new Random(40);
        var chunk = new byte[mib];
        using var written = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using (var upload = await backend.CreateAsync("data/40/big.pack"))
        {
            for (int i = 0; i < chunks; i++)
            {
                rng.NextBytes(chunk);
                written.AppendData(chunk);
                await upload.Stream.WriteAsync(chunk);
            }
            await upload.CommitAsync();
        }
        byte[] expected = written.GetHashAndReset();

        Assert.Equal(new ObjectInfo("data/40/big.pack", (long)chunks * mib), await backend.StatAsync("data/40/big.pack"));

        // ranged reads of an odd size, so that they straddle the writes' boundaries
        using var read = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[3 * mib + 12_345];
        long offset = 0;
        while (true)
        {
            int n = await backend.ReadAtAsync("data/40/big.pack", offset, buffer);
            if (n == 0) break;
            read.AppendData(buffer, 0, n);
            offset += n;
        }
        Assert.Equal((long)chunks * mib, offset);
        Assert.Equal(expected, read.GetHashAndReset());

        Assert.Equal(expected, SHA256.HashData(await backend.ReadAllAsync("data/40/big.pack")));
    }
}
