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

    // The IBackend contract itself (visibility, create-only, ranges, listing, delete, concurrency,
    // large objects) is BackendConformanceTests in BlockRepl.IntegrationTests, which runs the same suite
    // on LocalBackend and on S3. Here: what is specific to the local directory layout (tmp/, key checks).

    [Fact]
    public async Task CommittedFailedAndAbandonedUploadsLeaveNoTempFiles()
    {
        await using (var upload = await _backend.CreateAsync("data/ab/abc.pack"))
        {
            await upload.Stream.WriteAsync(TestData.Random(100_000, 1));
            Assert.Single(TempFiles());
            await upload.CommitAsync();
        }
        Assert.Empty(TempFiles());

        await using (var upload = await _backend.CreateAsync("snapshots/x.snap"))
        {
            await upload.Stream.WriteAsync(new byte[1000]);
            Assert.Single(TempFiles());
        }
        Assert.False(File.Exists(Path.Combine(_dir.Path, "snapshots", "x.snap")));
        Assert.Empty(TempFiles());

        var again = await _backend.CreateAsync("data/ab/abc.pack");
        await again.Stream.WriteAsync("second"u8.ToArray());
        await Assert.ThrowsAsync<ObjectExistsException>(async () => await again.CommitAsync());
        await again.DisposeAsync();
        Assert.Empty(TempFiles());
        Assert.Equal(["data/ab/abc.pack"], await ListAsync(""));
    }

    [Fact]
    public async Task ListNeverShowsTempFiles()
    {
        await _backend.PutAsync("config", new byte[1]);
        await using var pending = await _backend.CreateAsync("snapshots/s2.snap");
        await pending.Stream.WriteAsync(new byte[6]);
        File.WriteAllBytes(Path.Combine(_dir.Path, LocalBackend.TempDirectory, "orphan.tmp"), [1]);

        Assert.Equal(["config"], await ListAsync(""));
        Assert.Empty(await ListAsync("tmp/"));
        Assert.Empty(await ListAsync("tmp"));
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
