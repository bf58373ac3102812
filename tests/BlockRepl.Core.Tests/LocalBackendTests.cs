using BlockRepl.Storage;

namespace BlockRepl.Core.Tests;

public sealed class LocalBackendTests : IDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly LocalBackend _backend;

    public LocalBackendTests() => _backend = new LocalBackend(_dir.Path);

    public void Dispose()
    {
        _backend.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _dir.Dispose();
    }

    private string[] TempFiles()
    {
        string tmp = Path.Combine(_dir.Path, LocalBackend.TempDirectory);
        return Directory.Exists(tmp) ? Directory.GetFiles(tmp) : [];
    }

    private async Task<List<string>> ListAsync(string prefix)
    {
        var keys = new List<string>();
        await foreach (var o in _backend.ListAsync(prefix)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    [Fact]
    public async Task ObjectIsVisibleOnlyAfterCommit()
    {
        var content = TestData.Random(100_000, 1);
        await using (var upload = await _backend.CreateAsync("data/ab/abc.pack"))
        {
            await upload.Stream.WriteAsync(content);
            Assert.Null(await _backend.StatAsync("data/ab/abc.pack"));
            Assert.Empty(await ListAsync(""));
            await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await _backend.ReadAllAsync("data/ab/abc.pack"));
            await upload.CommitAsync();
        }
        var info = await _backend.StatAsync("data/ab/abc.pack");
        Assert.NotNull(info);
        Assert.Equal(content.Length, info.Value.Length);
        Assert.Equal(content, await _backend.ReadAllAsync("data/ab/abc.pack"));
        Assert.Equal(["data/ab/abc.pack"], await ListAsync(""));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public async Task DisposingWithoutCommitLeavesNothing()
    {
        await using (var upload = await _backend.CreateAsync("snapshots/x.snap"))
        {
            await upload.Stream.WriteAsync(new byte[1000]);
            Assert.Single(TempFiles());
        }
        Assert.Null(await _backend.StatAsync("snapshots/x.snap"));
        Assert.False(File.Exists(Path.Combine(_dir.Path, "snapshots", "x.snap")));
        Assert.Empty(TempFiles());
        Assert.Empty(await ListAsync(""));
    }

    [Fact]
    public async Task SecondCommitOfTheSameKeyFailsAndKeepsTheFirstObject()
    {
        await _backend.PutAsync("config", "first"u8.ToArray());
        var upload = await _backend.CreateAsync("config");
        await upload.Stream.WriteAsync("second"u8.ToArray());
        var ex = await Assert.ThrowsAsync<ObjectExistsException>(async () => await upload.CommitAsync());
        Assert.Equal("config", ex.Key);
        Assert.False(ex.Transient);
        await upload.DisposeAsync();
        Assert.Equal("first"u8.ToArray(), await _backend.ReadAllAsync("config"));
        Assert.Empty(TempFiles());
    }

    [Fact]
    public async Task ReadAtReturnsTheRequestedRangeAndAShortReadAtTheEnd()
    {
        var content = TestData.Random(10_000, 2);
        await _backend.PutAsync("index/00/a.idx", content);

        var buffer = new byte[1000];
        Assert.Equal(1000, await _backend.ReadAtAsync("index/00/a.idx", 0, buffer));
        Assert.Equal(content.AsSpan(0, 1000).ToArray(), buffer);

        Assert.Equal(1000, await _backend.ReadAtAsync("index/00/a.idx", 4321, buffer));
        Assert.Equal(content.AsSpan(4321, 1000).ToArray(), buffer);

        Assert.Equal(400, await _backend.ReadAtAsync("index/00/a.idx", 9600, buffer));
        Assert.Equal(content.AsSpan(9600, 400).ToArray(), buffer.AsSpan(0, 400).ToArray());

        Assert.Equal(0, await _backend.ReadAtAsync("index/00/a.idx", 10_000, buffer));
        Assert.Equal(0, await _backend.ReadAtAsync("index/00/a.idx", 50_000, buffer));

        await _backend.ReadExactlyAtAsync("index/00/a.idx", 9000, buffer);
        await Assert.ThrowsAsync<StorageException>(async () => await _backend.ReadExactlyAtAsync("index/00/a.idx", 9001, buffer));
    }

    [Fact]
    public async Task ListFiltersByPrefixAndNeverShowsTempFiles()
    {
        await _backend.PutAsync("config", new byte[1]);
        await _backend.PutAsync("data/ab/ab01.pack", new byte[2]);
        await _backend.PutAsync("data/cd/cd01.pack", new byte[3]);
        await _backend.PutAsync("index/ab/ab01.idx", new byte[4]);
        await _backend.PutAsync("snapshots/s1.snap", new byte[5]);
        await using var pending = await _backend.CreateAsync("snapshots/s2.snap");
        await pending.Stream.WriteAsync(new byte[6]);
        File.WriteAllBytes(Path.Combine(_dir.Path, LocalBackend.TempDirectory, "orphan.tmp"), [1]);

        Assert.Equal(["config", "data/ab/ab01.pack", "data/cd/cd01.pack", "index/ab/ab01.idx", "snapshots/s1.snap"], await ListAsync(""));
        Assert.Equal(["data/ab/ab01.pack", "data/cd/cd01.pack"], await ListAsync("data/"));
        Assert.Equal(["data/cd/cd01.pack"], await ListAsync("data/cd/"));
        Assert.Equal(["data/ab/ab01.pack"], await ListAsync("data/ab/ab"));
        Assert.Equal(["snapshots/s1.snap"], await ListAsync("snap"));
        Assert.Empty(await ListAsync("tmp/"));
        Assert.Empty(await ListAsync("locks/"));

        long total = 0;
        await foreach (var o in _backend.ListAsync("data/")) total += o.Length;
        Assert.Equal(5, total);
    }

    [Fact]
    public async Task DeleteRemovesTheObjectAndIsIdempotent()
    {
        await _backend.PutAsync("data/ab/ab01.pack", new byte[10]);
        var buffer = new byte[4];
        await _backend.ReadAtAsync("data/ab/ab01.pack", 0, buffer); // caches a read handle
        await _backend.DeleteAsync("data/ab/ab01.pack");
        Assert.Null(await _backend.StatAsync("data/ab/ab01.pack"));
        Assert.Empty(await ListAsync("data/"));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await _backend.ReadAtAsync("data/ab/ab01.pack", 0, buffer));
        await _backend.DeleteAsync("data/ab/ab01.pack");

        // Deleted keys can be written again (prune then re-upload).
        await _backend.PutAsync("data/ab/ab01.pack", new byte[3]);
        Assert.Equal(3, (await _backend.StatAsync("data/ab/ab01.pack"))!.Value.Length);
    }

    [Fact]
    public async Task DeletingAKeyWhoseDirectoryIsGoneIsNotAnError()
    {
        await _backend.DeleteAsync("data/zz/never-written.pack");
    }

    [Fact]
    public async Task MissingObjectIsNotFound()
    {
        var ex = await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await _backend.ReadAllAsync("snapshots/none.snap"));
        Assert.Equal("snapshots/none.snap", ex.Key);
        Assert.False(ex.Transient);
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await _backend.ReadAtAsync("data/zz/none.pack", 0, new byte[1]));
        await Assert.ThrowsAsync<ObjectNotFoundException>(async () => await _backend.ReadAtAsync("config", 0, new byte[1]));
        Assert.Null(await _backend.StatAsync("config"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("/etc/passwd")]
    [InlineData("../outside")]
    [InlineData("data/../../outside")]
    [InlineData("data\\x")]
    public async Task KeysThatEscapeTheRepositoryAreRejected(string key)
    {
        await Assert.ThrowsAsync<ArgumentException>(async () => await _backend.ReadAllAsync(key));
        await Assert.ThrowsAsync<ArgumentException>(async () => await _backend.CreateAsync(key));
    }

    [Fact]
    public async Task CleanupRemovesOnlyStaleTempFiles()
    {
        string tmp = Path.Combine(_dir.Path, LocalBackend.TempDirectory);
        Directory.CreateDirectory(tmp);
        string stale = Path.Combine(tmp, "1-old.tmp");
        string fresh = Path.Combine(tmp, "1-new.tmp");
        await File.WriteAllBytesAsync(stale, [1]);
        await File.WriteAllBytesAsync(fresh, [1]);
        File.SetLastWriteTimeUtc(stale, DateTime.UtcNow.AddHours(-2));
        Assert.Equal(1, _backend.CleanupStaleTemp(TimeSpan.FromHours(1)));
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(fresh));
    }
}
