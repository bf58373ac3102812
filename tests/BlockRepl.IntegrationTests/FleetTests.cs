using System.Text.Json;
using BlockRepl.Engine.Servers;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Native.Linux;
using BlockRepl.Storage;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <c>blockrepl inventory</c> on this machine (a loop device and a mounted ext4 made by the test) and
/// <c>blockrepl fleet</c> over server records in a local repository (docs/servers.md).
/// </summary>
public sealed class FleetTests
{
    [Fact]
    public void Inventory_FindsALoopDeviceWithItsExactSize_AndTheFilesystemMountedFromIt()
    {
        Assert.True(LinuxFile.IsRoot, "loop devices and mount need root (CI runs as root)");
        using var t = new TempDir("br-inventory");
        string image = t.File("disk.img");
        const long size = (48L << 20) + 3 * 512;   // not a round number: the size must be exact
        using (var f = File.Create(image)) f.SetLength(size);
        Processes.Run("mkfs.ext4", "-F -q " + Processes.Quote(image));
        string mountPoint = t.File("mnt");
        Directory.CreateDirectory(mountPoint);
        using var dev = LoopDevice.Attach(image);
        Processes.Run("mount", $"{Processes.Quote(dev.DevicePath)} {Processes.Quote(mountPoint)}");
        try
        {
            File.WriteAllBytes(Path.Combine(mountPoint, "data.bin"), new byte[4 << 20]);
            var inv = Cli.Json(CliRunner.Ok("inventory", "--json"));

            string name = Path.GetFileName(dev.DevicePath);
            var disk = inv.GetProperty("disks").EnumerateArray().Single(d => d.Str("name") == name);
            Assert.True(disk.GetProperty("loop").GetBoolean());
            Assert.Equal(size, disk.Long("sizeBytes"));
            Assert.Equal(image, disk.Str("backingFile"));
            Assert.DoesNotContain(inv.GetProperty("disks").EnumerateArray(), d => d.Str("name").StartsWith("ram", StringComparison.Ordinal));

            var fs = inv.GetProperty("filesystems").EnumerateArray().Single(f => f.Str("mountPoint") == mountPoint);
            Assert.Equal(dev.DevicePath, fs.Str("device"));
            Assert.Equal("ext4", fs.Str("type"));
            long fsSize = fs.Long("sizeBytes"), used = fs.Long("usedBytes");
            Assert.InRange(fsSize, 30L << 20, size);
            Assert.InRange(used, 4L << 20, fsSize);
            Assert.DoesNotContain(inv.GetProperty("filesystems").EnumerateArray(), f => f.Str("type") is "proc" or "sysfs" or "tmpfs");

            Assert.False(string.IsNullOrEmpty(inv.Str("hostName")));
            Assert.Equal(File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), inv.Str("kernel"));
            Assert.True(inv.GetProperty("cpuCount").GetInt32() >= 1);
            Assert.True(inv.Long("memoryBytes") > 0);

            string table = CliRunner.Ok("inventory");
            Assert.Contains(name, table, StringComparison.Ordinal);
            Assert.Contains(mountPoint, table, StringComparison.Ordinal);
        }
        finally
        {
            Processes.Run("umount", Processes.Quote(mountPoint), check: false);
        }
    }

    [Fact]
    public void InventoryPublishedFiveTimes_KeepsThreeRecords_UnderTheStateDirectorysServerId()
    {
        using var t = new TempDir("br-fleet");
        string repo = t.File("repo"), state = t.File("state");
        CliRunner.Ok("init", "--repo", repo);
        var times = new List<DateTimeOffset>();
        for (int i = 0; i < 5; i++)
        {
            var record = Cli.Json(CliRunner.Ok("inventory", "--repo", repo, "--state-dir", state, "--name", "web-1", "--json"));
            times.Add(record.GetProperty("time").GetDateTimeOffset());
            Assert.Equal(JsonValueKind.Null, record.GetProperty("state").ValueKind);
        }
        string id = File.ReadAllText(Path.Combine(state, "server-id")).Trim();
        Assert.True(ServerIdentity.IsValidId(id), id);
        Assert.Equal([id], Directory.GetDirectories(Path.Combine(repo, "servers")).Select(Path.GetFileName));
        Assert.Equal(3, Directory.GetFiles(Path.Combine(repo, "servers", id)).Length);

        var fleet = Fleet(repo);
        var server = Assert.Single(fleet);
        Assert.Equal(id, server.Str("serverId"));
        Assert.Equal(times[^1], server.GetProperty("time").GetDateTimeOffset());
    }

    [Fact]
    public async Task TwoServersInOneLocalRepository_FleetListsBothWithTheirLatestState()
    {
        using var t = new TempDir("br-fleet");
        string repo = t.File("repo");
        CliRunner.Ok("init", "--repo", repo);
        var a = Cli.Json(CliRunner.Ok("inventory", "--repo", repo, "--state-dir", t.File("state-a"), "--name", "server-a", "--json"));
        var b = Cli.Json(CliRunner.Ok("inventory", "--repo", repo, "--state-dir", t.File("state-b"), "--name", "server-b", "--json"));
        Assert.NotEqual(a.Str("serverId"), b.Str("serverId"));

        // Server A then replicates (as the daemon publishes it): its newest record says CONTINUOUS.
        await using (var backend = new LocalBackend(repo))
        {
            await ServerRecords.PublishAsync(backend, new ServerRecord
            {
                ServerId = a.Str("serverId"),
                Name = "server-a",
                Time = DateTimeOffset.UtcNow,
                State = "CONTINUOUS",
                LagSeconds = 4.5,
                Volumes = [new ServerVolumeRecord { Name = "root", Source = "/dev/vda", SizeBytes = 8L << 30, State = "CONTINUOUS", LagSeconds = 4.5, ReplicatedBytes = 8L << 30 }],
            });
        }

        var fleet = Fleet(repo).ToDictionary(s => s.Str("name"), StringComparer.Ordinal);
        Assert.Equal(["server-a", "server-b"], fleet.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(a.Str("serverId"), fleet["server-a"].Str("serverId"));
        Assert.Equal("CONTINUOUS", fleet["server-a"].Str("state"));
        Assert.Equal("CONTINUOUS", fleet["server-a"].Str("fleetState"));
        Assert.Equal(8L << 30, fleet["server-a"].GetProperty("volumes")[0].Long("sizeBytes"));
        Assert.Equal(b.Str("serverId"), fleet["server-b"].Str("serverId"));
        Assert.Equal(JsonValueKind.Null, fleet["server-b"].GetProperty("state").ValueKind);
        Assert.Equal(JsonValueKind.Null, fleet["server-b"].GetProperty("fleetState").ValueKind);
        Assert.Equal(b.GetProperty("inventory").Str("os"), fleet["server-b"].GetProperty("inventory").Str("os"));

        string table = CliRunner.Ok("fleet", "--repo", repo);
        string rowA = table.Split('\n').Single(l => l.StartsWith("server-a", StringComparison.Ordinal));
        Assert.Contains("CONTINUOUS", rowA, StringComparison.Ordinal);
        Assert.Contains("8.0 GiB", rowA, StringComparison.Ordinal);
        Assert.Contains("2 server(s)", table, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AServerWhoseLastRecordIsOld_IsShownDisconnected()
    {
        using var t = new TempDir("br-fleet");
        string repo = t.File("repo");
        CliRunner.Ok("init", "--repo", repo);
        CliRunner.Ok("inventory", "--repo", repo, "--state-dir", t.File("state-live"), "--name", "live");
        string gone = ServerIdentity.NewId();
        await using (var backend = new LocalBackend(repo))
        {
            await ServerRecords.PublishAsync(backend, new ServerRecord
            {
                ServerId = gone,
                Name = "gone",
                Time = DateTimeOffset.UtcNow.AddMinutes(-11),
                State = "CONTINUOUS",
                LagSeconds = 3,
            });
        }

        var fleet = Fleet(repo).ToDictionary(s => s.Str("name"), StringComparer.Ordinal);
        Assert.Equal("DISCONNECTED", fleet["gone"].Str("fleetState"));
        Assert.Equal("CONTINUOUS", fleet["gone"].Str("state"));
        Assert.InRange(fleet["gone"].GetProperty("lastSeenSeconds").GetDouble(), 11 * 60, 24 * 3600);
        Assert.Equal(JsonValueKind.Null, fleet["live"].GetProperty("fleetState").ValueKind);
        string rowGone = CliRunner.Ok("fleet", "--repo", repo).Split('\n').Single(l => l.StartsWith("gone", StringComparison.Ordinal));
        Assert.Contains("DISCONNECTED", rowGone, StringComparison.Ordinal);
        Assert.Contains(gone, rowGone, StringComparison.Ordinal);
    }

    [Fact]
    public void FleetOfAnInitialisedRepositoryWithoutServers_IsEmpty()
    {
        using var t = new TempDir("br-fleet");
        string repo = t.File("repo");
        CliRunner.Ok("init", "--repo", repo);
        Assert.Empty(Fleet(repo));
        Assert.Contains("no servers", CliRunner.Ok("fleet", "--repo", repo), StringComparison.Ordinal);
    }

    [Fact]
    public void BadArguments_AreOneLineErrors()
    {
        using var t = new TempDir("br-fleet");
        Cli.AssertOneLineError(CliRunner.Run("fleet", "--repo", t.File("missing")), 4, "does not exist");
        Cli.AssertOneLineError(CliRunner.Run("fleet", "--repo", "ftp://host/x"), 2, "only local directories");
        Cli.AssertOneLineError(CliRunner.Run("fleet"), 2, "--repo");
        Cli.AssertOneLineError(CliRunner.Run("fleet", "--repo", t.Path, "extra"), 2, "no arguments");
        Cli.AssertOneLineError(CliRunner.Run("inventory", "--state-dir", t.File("s")), 2, "--repo");

        // A damaged identity file: named in one line, not replaced, and nothing is published.
        string repo = t.File("repo"), state = t.File("state");
        CliRunner.Ok("init", "--repo", repo);
        Directory.CreateDirectory(state);
        File.WriteAllText(Path.Combine(state, "server-id"), "not-an-id\n");
        Cli.AssertOneLineError(CliRunner.Run("inventory", "--repo", repo, "--state-dir", state), 7, Path.Combine(state, "server-id"));
        Assert.Equal("not-an-id\n", File.ReadAllText(Path.Combine(state, "server-id")));
        Assert.False(Directory.Exists(Path.Combine(repo, "servers")));
    }

    internal static JsonElement[] Fleet(string repo, IDictionary<string, string>? env = null)
    {
        var r = CliRunner.Run(["fleet", "--repo", repo, "--json"], env, TimeSpan.FromMinutes(2));
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException("fleet failed: " + r);
        return [.. Cli.Json(r.Stdout).EnumerateArray()];
    }
}

/// <summary>Two servers publish into one S3 repository (moto) and <c>fleet</c> lists both.</summary>
[Collection("moto")]
public sealed class S3ServerRecordTests(MotoServer server)
{
    [Fact]
    public async Task TwoServersInOneS3Repository_FleetListsBothWithTheirLatestRecord()
    {
        string bucket = await server.CreateBucketAsync("servers");
        string repo = $"s3://{bucket}/fleet";
        var env = new Dictionary<string, string>(server.ClientEnvironment);
        using var t = new TempDir("br-fleet-s3");
        Run(env, "init", "--repo", repo);
        var a1 = Cli.Json(Run(env, "inventory", "--repo", repo, "--state-dir", t.File("state-a"), "--name", "server-a", "--json"));
        var b = Cli.Json(Run(env, "inventory", "--repo", repo, "--state-dir", t.File("state-b"), "--name", "server-b", "--json"));
        var a2 = Cli.Json(Run(env, "inventory", "--repo", repo, "--state-dir", t.File("state-a"), "--name", "server-a", "--json"));
        Assert.Equal(a1.Str("serverId"), a2.Str("serverId"));

        var fleet = FleetTests.Fleet(repo, env).ToDictionary(s => s.Str("name"), StringComparer.Ordinal);
        Assert.Equal(["server-a", "server-b"], fleet.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(a2.Str("serverId"), fleet["server-a"].Str("serverId"));
        Assert.Equal(a2.GetProperty("time").GetDateTimeOffset(), fleet["server-a"].GetProperty("time").GetDateTimeOffset());
        Assert.Equal(b.Str("serverId"), fleet["server-b"].Str("serverId"));
        Assert.Equal(JsonValueKind.Null, fleet["server-b"].GetProperty("state").ValueKind);

        string table = Run(env, "fleet", "--repo", repo);
        Assert.Contains(a2.Str("serverId"), table, StringComparison.Ordinal);
        Assert.Contains(b.Str("serverId"), table, StringComparison.Ordinal);
    }

    private static string Run(Dictionary<string, string> env, params string[] args)
    {
        var r = CliRunner.Run(args, env, TimeSpan.FromMinutes(2));
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
        return r.Stdout;
    }
}
