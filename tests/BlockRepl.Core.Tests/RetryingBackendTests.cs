using BlockRepl.Storage;

namespace BlockRepl.Core.Tests;

public sealed class RetryingBackendTests : IAsyncDisposable
{
    private readonly TempDirectory _dir = new();
    private readonly FaultInjectingBackend _faults;
    private readonly RetryingBackend _backend;
    private readonly List<TimeSpan> _delays = [];

    public RetryingBackendTests()
    {
        _faults = new FaultInjectingBackend(new LocalBackend(_dir.Path));
        _backend = new RetryingBackend(_faults, new RetryOptions
        {
            Delay = (d, _) => { lock (_delays) _delays.Add(d); return Task.CompletedTask; },
        });
    }

    public async ValueTask DisposeAsync()
    {
        await _backend.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task TransientReadFailuresAreRetriedUntilTheySucceed()
    {
        var content = TestData.Random(10_000, 3);
        await _backend.PutAsync("index/a", content);
        _faults.FailNth(FaultOperation.ReadAll, 1, transient: true, count: 3);

        Assert.Equal(content, await _backend.ReadAllAsync("index/a"));
        Assert.Equal(4, _faults.Calls(FaultOperation.ReadAll));
        Assert.Equal(3, _delays.Count);
    }

    [Fact]
    public async Task PermanentFailuresAreNotRetried()
    {
        await _backend.PutAsync("index/a", new byte[10]);
        _faults.FailNth(FaultOperation.ReadAt, 1, transient: false);

        var e = await Assert.ThrowsAsync<StorageException>(() => _backend.ReadAtAsync("index/a", 0, new byte[4]).AsTask());
        Assert.False(e.Transient);
        Assert.Equal(1, _faults.Calls(FaultOperation.ReadAt));
        Assert.Empty(_delays);
    }

    [Fact]
    public async Task MissingObjectsAreReportedAtOnce()
    {
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => _backend.ReadAllAsync("index/missing").AsTask());
        Assert.Equal(1, _faults.Calls(FaultOperation.ReadAll));
        Assert.Null(await _backend.StatAsync("index/missing"));
    }

    [Fact]
    public async Task AnOperationThatKeepsFailingGivesUpAfterMaxAttemptsWithTheCountInTheMessage()
    {
        _faults.FailAlways(FaultOperation.Stat);

        var e = await Assert.ThrowsAsync<StorageException>(() => _backend.StatAsync("config").AsTask());
        Assert.True(e.Transient);
        Assert.Contains("gave up after 6 tries", e.Message, StringComparison.Ordinal);
        Assert.Contains("config", e.Message, StringComparison.Ordinal);
        Assert.Equal(6, _faults.Calls(FaultOperation.Stat));
        Assert.Equal(5, _delays.Count);
    }

    [Fact]
    public async Task CommitIsRetriedWithoutRewritingTheContent()
    {
        var content = TestData.Random(100_000, 4);
        _faults.FailNth(FaultOperation.Commit, 1, count: 2);

        await _backend.PutAsync("data/ab/abc.pack", content);

        Assert.Equal(1, _faults.Calls(FaultOperation.Create));
        Assert.Equal(3, _faults.Calls(FaultOperation.Commit));
        Assert.Equal(content, await _backend.ReadAllAsync("data/ab/abc.pack"));
    }

    [Fact]
    public async Task CreateOnlyConflictIsNotRetried()
    {
        await _backend.PutAsync("snapshots/x", new byte[] { 1 });
        await Assert.ThrowsAsync<ObjectExistsException>(() => _backend.PutAsync("snapshots/x", new byte[] { 2 }).AsTask());
        Assert.Empty(_delays);
        Assert.Equal(new byte[] { 1 }, await _backend.ReadAllAsync("snapshots/x"));
    }

    [Fact]
    public async Task ListingIsRetriedAndReturnsEveryKeyOnce()
    {
        for (int i = 0; i < 5; i++) await _backend.PutAsync($"index/{i}", new byte[i + 1]);
        _faults.FailNth(FaultOperation.List, 1, count: 2);

        var keys = new List<string>();
        await foreach (var o in _backend.ListAsync("index/")) keys.Add(o.Key);

        keys.Sort(StringComparer.Ordinal);
        Assert.Equal(["index/0", "index/1", "index/2", "index/3", "index/4"], keys);
        Assert.Equal(3, _faults.Calls(FaultOperation.List));
    }

    [Fact]
    public async Task DeleteIsRetried()
    {
        await _backend.PutAsync("index/a", new byte[1]);
        _faults.FailNth(FaultOperation.Delete, 1);

        await _backend.DeleteAsync("index/a");

        Assert.Null(await _backend.StatAsync("index/a"));
        Assert.Equal(2, _faults.Calls(FaultOperation.Delete));
    }

    [Fact]
    public async Task BackoffGrowsExponentiallyWithJitterAndIsCapped()
    {
        var delays = new List<TimeSpan>();
        await using var backend = new RetryingBackend(new FaultInjectingBackend(new LocalBackend(_dir.Path)).FailAlways(FaultOperation.Any), new RetryOptions
        {
            MaxAttempts = 10,
            BaseDelay = TimeSpan.FromMilliseconds(100),
            MaxDelay = TimeSpan.FromSeconds(2),
            Delay = (d, _) => { delays.Add(d); return Task.CompletedTask; },
        });

        await Assert.ThrowsAsync<StorageException>(() => backend.StatAsync("x").AsTask());

        Assert.Equal(9, delays.Count);
        for (int i = 0; i < delays.Count; i++)
        {
            double step = Math.Min(100 * Math.Pow(2, i), 2000);
            Assert.InRange(delays[i].TotalMilliseconds, step / 2, step);
        }
    }

    [Fact]
    public async Task CancellationDuringBackoffStopsRetrying()
    {
        using var cts = new CancellationTokenSource();
        var faults = new FaultInjectingBackend(new LocalBackend(_dir.Path)).FailAlways(FaultOperation.ReadAll);
        await using var backend = new RetryingBackend(faults, new RetryOptions
        {
            Delay = (d, ct) => { cts.Cancel(); return Task.Delay(d, ct); },
        });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => backend.ReadAllAsync("x", cts.Token).AsTask());
        Assert.Equal(1, faults.Calls(FaultOperation.ReadAll));
    }

    [Fact]
    public async Task FaultInjectorCountsCallsAcrossOperationsForAny()
    {
        await using var faults = new FaultInjectingBackend(new LocalBackend(_dir.Path));
        faults.FailNth(FaultOperation.Any, 2, transient: false);

        Assert.Null(await faults.StatAsync("a"));
        var e = await Assert.ThrowsAsync<StorageException>(() => faults.ReadAllAsync("a").AsTask());
        Assert.Contains("injected permanent fault", e.Message, StringComparison.Ordinal);
        Assert.Null(await faults.StatAsync("a"));
        Assert.Equal(3, faults.Calls(FaultOperation.Any));
        Assert.Equal(1, faults.Injected);
    }

    [Fact]
    public async Task FailedCommitLeavesNothingVisible()
    {
        await using var faults = new FaultInjectingBackend(new LocalBackend(_dir.Path));
        faults.FailAlways(FaultOperation.Commit, transient: false);

        await Assert.ThrowsAsync<StorageException>(() => faults.PutAsync("index/z", new byte[3]).AsTask());

        Assert.Null(await faults.StatAsync("index/z"));
    }
}
