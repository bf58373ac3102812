using System.Text;
using BlockRepl.Core.Formats;

namespace BlockRepl.Core.Tests;

public class LockRecordTests
{
    private static readonly DateTimeOffset s_t0 = new(2026, 12, 2, 12, 0, 0, TimeSpan.Zero);

    private static LockRecord Sample(LockKind kind = LockKind.Shared, string host = "web-1", int pid = 4242) => new()
    {
        Host = host, Pid = pid, Kind = kind, Created = s_t0, Refreshed = s_t0.AddMinutes(5),
    };

    [Theory]
    [InlineData(LockKind.Shared, "shared")]
    [InlineData(LockKind.Exclusive, "exclusive")]
    [InlineData(LockKind.Pruned, "pruned")]
    public void RoundTrips_WithTheKindSpelledAsDocumented(LockKind kind, string spelled)
    {
        var bytes = Sample(kind).Serialize();
        Assert.Equal("BRLOCK\0\0"u8.ToArray(), bytes[..8]);
        Assert.Contains($"\"kind\":\"{spelled}\"", Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
        var back = LockRecord.Deserialize(bytes, "lock");
        Assert.Equal(("web-1", 4242, kind, s_t0, s_t0.AddMinutes(5)), (back.Host, back.Pid, back.Kind, back.Created, back.Refreshed));
        Assert.Equal("web-1 pid 4242 since 2026-12-02 12:00:00Z", back.ToString());
    }

    [Fact]
    public void AFlippedBit_IsCorrupt()
    {
        var bytes = Sample().Serialize();
        bytes[30] ^= 1;
        Assert.Throws<CorruptDataException>(() => LockRecord.Deserialize(bytes, "lock"));
    }

    [Fact]
    public void ANewerVersion_IsRefused()
    {
        var bytes = Envelope.Wrap(LockRecord.Magic, 2, "{}"u8);
        Assert.Throws<UnsupportedFormatException>(() => LockRecord.Deserialize(bytes, "lock"));
    }

    [Theory]
    [InlineData("{\"host\":\"\",\"pid\":1,\"kind\":\"shared\",\"created\":\"2026-12-02T12:00:00Z\",\"refreshed\":\"2026-12-02T12:00:00Z\"}")]
    [InlineData("{\"host\":\"h\",\"pid\":0,\"kind\":\"shared\",\"created\":\"2026-12-02T12:00:00Z\",\"refreshed\":\"2026-12-02T12:00:00Z\"}")]
    [InlineData("{\"host\":\"h\",\"pid\":1,\"kind\":\"weird\",\"created\":\"2026-12-02T12:00:00Z\",\"refreshed\":\"2026-12-02T12:00:00Z\"}")]
    [InlineData("{\"host\":\"h\",\"pid\":1,\"kind\":\"shared\"}")]
    public void InvalidFields_AreCorrupt(string json)
    {
        var bytes = Envelope.Wrap(LockRecord.Magic, LockRecord.Version, Encoding.UTF8.GetBytes(json));
        Assert.Throws<CorruptDataException>(() => LockRecord.Deserialize(bytes, "lock"));
    }

    [Fact]
    public void Staleness_IsAgeOrADeadProcessOnThisHost_AndNeverForAPruneMark()
    {
        var stale = TimeSpan.FromMinutes(30);
        static bool Alive(int _) => true;
        static bool Dead(int _) => false;
        var r = Sample();
        Assert.False(r.IsStale(s_t0.AddMinutes(34), stale, "other", Alive));
        Assert.True(r.IsStale(s_t0.AddMinutes(36), stale, "other", Alive));
        // Same host, process gone: stale at once. Another host's pid says nothing about this host.
        Assert.True(r.IsStale(s_t0.AddMinutes(6), stale, "web-1", Dead));
        Assert.False(r.IsStale(s_t0.AddMinutes(6), stale, "db-1", Dead));
        Assert.False(Sample(LockKind.Pruned).IsStale(s_t0.AddDays(30), stale, "web-1", Dead));
    }
}
