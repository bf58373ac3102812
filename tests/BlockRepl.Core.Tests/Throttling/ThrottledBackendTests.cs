using BlockRepl.Storage;
using BlockRepl.TestKit;

namespace BlockRepl.Core.Tests.Throttling;

public sealed class ThrottledBackendTests : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-throttled");

    public void Dispose() => _dir.Dispose();

    private sealed class RecordingLimiter : IByteRateLimiter
    {
        public List<int> Requests { get; } = [];
        public ValueTask WaitAsync(int bytes, CancellationToken ct = default)
        {
            lock (Requests) Requests.Add(bytes);
            return default;
        }
    }

    [Fact]
    public async Task Writes_ArePacedInSlices_SyncAndAsync_ContentIntact()
    {
        var limiter = new RecordingLimiter();
        await using var backend = new ThrottledBackend(new LocalBackend(_dir.Path), limiter);
        var data = new byte[200_000];
        new Random(1).NextBytes(data);
        await using (var up = await backend.CreateAsync("a/obj"))
        {
            up.Stream.Write(data.AsSpan(0, 150_000));
            await up.Stream.WriteAsync(data.AsMemory(150_000));
            await up.CommitAsync();
        }
        Assert.Equal([65536, 65536, 18928, 50_000], limiter.Requests);
        Assert.Equal(data, await backend.ReadAllAsync("a/obj"));
        limiter.Requests.Clear();
        _ = await backend.StatAsync("a/obj");
        _ = await backend.ReadAllAsync("a/obj");
        Assert.Empty(limiter.Requests);     // reads are not charged
    }
}
