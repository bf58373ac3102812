using System.Text;
using BlockRepl.Engine.Servers;
using BlockRepl.Storage;
using BlockRepl.TestKit;

namespace BlockRepl.Core.Tests.Servers;

public sealed class ServerRecordsTests : IAsyncLifetime
{
    private static readonly DateTimeOffset s_t0 = new(2026, 3, 4, 5, 6, 7, 890, TimeSpan.Zero);
    private readonly TempDir _dir = new("br-records");
    private LocalBackend _backend = null!;

    public Task InitializeAsync()
    {
        _backend = new LocalBackend(_dir.Path);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _backend.DisposeAsync();
        _dir.Dispose();
    }

    private static ServerRecord Record(string id, string name, DateTimeOffset time, string? state = "CONTINUOUS") => new()
    {
        ServerId = id,
        Name = name,
        Time = time,
        State = state,
        LagSeconds = state is null ? null : 12.5,
        LastRecoveryPointTime = time.AddSeconds(-12.5),
        Volumes = [new ServerVolumeRecord { Name = "root", Source = "/dev/vda", SizeBytes = 1L << 30, State = state, LagSeconds = 12.5, ReplicatedBytes = 1L << 30, BacklogBytes = 4096 }],
        Inventory = new ServerInventory { HostName = name, Os = "Test OS 1", CollectedTime = time },
    };

    private async Task<List<string>> KeysAsync(string prefix)
    {
        var keys = new List<string>();
        await foreach (var o in _backend.ListAsync(prefix)) keys.Add(o.Key);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    [Fact]
    public void KeyFor_IsTheUtcTimeToTheMillisecondAndFourHexDigits_AndParsesBack()
    {
        string key = ServerRecords.KeyFor("s-00000000000000aa", s_t0.ToOffset(TimeSpan.FromHours(2)));
        Assert.Matches(@"^servers/s-00000000000000aa/20260304T050607890Z-[0-9a-f]{4}\.json$", key);
        Assert.True(ServerRecords.TryParseKey(key, out string id, out var time));
        Assert.Equal("s-00000000000000aa", id);
        Assert.Equal(s_t0, time);
        Assert.False(ServerRecords.TryParseKey("servers/s-00000000000000aa/notes.txt", out _, out _));
        Assert.False(ServerRecords.TryParseKey("servers/bad-id/20260304T050607890Z-abcd.json", out _, out _));
    }

    [Fact]
    public async Task PublishingFiveRecords_KeepsTheNewestThree()
    {
        const string id = "s-0000000000000001";
        var written = new List<string>();
        for (int i = 0; i < 5; i++)
            written.Add(await ServerRecords.PublishAsync(_backend, Record(id, "web-1", s_t0.AddMinutes(i))));
        Assert.Equal(written.Skip(2), await KeysAsync("servers/"));
        var latest = Assert.Single(await ServerRecords.ListLatestAsync(_backend));
        Assert.Equal(s_t0.AddMinutes(4), latest.Time);
    }

    [Fact]
    public async Task PublishingAnOlderRecord_NeverDeletesTheOneJustWritten()
    {
        const string id = "s-0000000000000001";
        for (int i = 0; i < 3; i++) await ServerRecords.PublishAsync(_backend, Record(id, "web-1", s_t0.AddMinutes(10 + i)));
        string old = await ServerRecords.PublishAsync(_backend, Record(id, "web-1", s_t0));
        var keys = await KeysAsync("servers/");
        Assert.Contains(old, keys);
        Assert.Equal(4, keys.Count);
    }

    [Fact]
    public async Task ARecordRoundTripsThroughJsonWithEveryField()
    {
        var r = Record("s-0000000000000001", "web-1", s_t0);
        string key = await ServerRecords.PublishAsync(_backend, r);
        var json = Encoding.UTF8.GetString(await _backend.ReadAllAsync(key));
        foreach (string field in new[] { "\"version\": 1", "\"serverId\"", "\"name\"", "\"time\"", "\"state\"", "\"lagSeconds\"", "\"lastRecoveryPointTime\"", "\"volumes\"", "\"sizeBytes\"", "\"replicatedBytes\"", "\"backlogBytes\"", "\"inventory\"" })
            Assert.Contains(field, json, StringComparison.Ordinal);
        var back = ServerRecord.FromJson(Encoding.UTF8.GetBytes(json), key);
        Assert.Equal(r.Time, back.Time);
        Assert.Equal(r.LastRecoveryPointTime, back.LastRecoveryPointTime);
        Assert.Equal(r.Volumes[0], back.Volumes[0]);
        Assert.Equal("Test OS 1", back.Inventory?.Os);
    }

    [Fact]
    public async Task ListLatest_GivesTheNewestRecordPerServer_AndFallsBackPastAnUnreadableOne()
    {
        const string a = "s-000000000000000a", b = "s-000000000000000b";
        await ServerRecords.PublishAsync(_backend, Record(a, "alpha", s_t0, state: null));
        await ServerRecords.PublishAsync(_backend, Record(a, "alpha", s_t0.AddMinutes(1), state: "BACKLOG"));
        await ServerRecords.PublishAsync(_backend, Record(b, "bravo", s_t0));
        // B's newest record is damaged, and a record of a newer format version is not guessed at.
        string damaged = ServerRecords.KeyFor(b, s_t0.AddMinutes(5));
        await _backend.PutAsync(damaged, "{ not json"u8.ToArray());
        string future = ServerRecords.KeyFor(b, s_t0.AddMinutes(6));
        await _backend.PutAsync(future, """{"version":2,"serverId":"s-000000000000000b","name":"bravo","time":"2026-03-04T05:12:07Z"}"""u8.ToArray());
        // Foreign objects under servers/ are ignored.
        await _backend.PutAsync("servers/README", "hello"u8.ToArray());

        var warnings = new List<string>();
        var latest = await ServerRecords.ListLatestAsync(_backend, default, (key, e) => warnings.Add($"{key}: {e.Message}"));

        Assert.Equal(["alpha", "bravo"], latest.Select(r => r.Name));
        Assert.Equal("BACKLOG", latest[0].State);
        Assert.Equal(s_t0, latest[1].Time);
        Assert.Equal(2, warnings.Count);
        Assert.Contains(warnings, w => w.StartsWith(damaged, StringComparison.Ordinal) && w.Contains("corrupt", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.StartsWith(future, StringComparison.Ordinal) && w.Contains("version 2", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ListLatest_OnARepositoryWithoutServers_IsEmpty()
    {
        Assert.Empty(await ServerRecords.ListLatestAsync(_backend));
    }

    [Fact]
    public async Task Publish_RefusesAnInvalidServerId()
    {
        await Assert.ThrowsAsync<ArgumentException>(() => ServerRecords.PublishAsync(_backend, Record("../x", "bad", s_t0)));
        Assert.Empty(await KeysAsync(""));
    }
}
