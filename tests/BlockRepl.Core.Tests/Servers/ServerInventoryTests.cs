using BlockRepl.Engine.Servers;
using BlockRepl.TestKit;

namespace BlockRepl.Core.Tests.Servers;

public sealed class ServerInventoryTests
{
    private static readonly DateTimeOffset s_now = new(2026, 1, 2, 3, 4, 5, TimeSpan.Zero);

    private static void Write(TempDir root, string path, string content)
    {
        string full = Path.Combine(root.Path, path.TrimStart('/'));
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full, content);
    }

    [Fact]
    public void Collect_ReadsAFakeMachine()
    {
        using var root = new TempDir("br-inventory");
        Write(root, "/etc/os-release", "NAME=\"Fake Linux\"\nPRETTY_NAME=\"Fake Linux 9 (\\\"quoted\\\")\"\nID=fake\n");
        Write(root, "/proc/sys/kernel/osrelease", "6.1.0-fake\n");
        Write(root, "/proc/sys/kernel/hostname", "web-01\n");
        Write(root, "/proc/cpuinfo", "processor\t: 0\nmodel name\t: Fake CPU @ 3GHz\n\nprocessor\t: 1\nmodel name\t: Fake CPU @ 3GHz\n\nprocessor\t: 2\n");
        Write(root, "/proc/meminfo", "MemTotal:       16384000 kB\nMemFree:         1000 kB\n");
        Write(root, "/sys/block/sda/size", "2097152\n");
        Write(root, "/sys/block/sda/queue/rotational", "1\n");
        Write(root, "/sys/block/sda/device/model", "FAKE DISK   \n");
        Write(root, "/sys/block/nvme0n1/size", "4096\n");
        Write(root, "/sys/block/nvme0n1/queue/rotational", "0\n");
        Write(root, "/sys/block/ram0/size", "8192\n");
        Write(root, "/sys/block/loop0/size", "0\n");
        Write(root, "/sys/block/loop1/size", "2048\n");
        Write(root, "/sys/block/loop1/loop/backing_file", "/images/a disk.img\n");
        Write(root, "/proc/self/mounts",
            "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sdb1 /srv/my\\040data xfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n/dev/sdc1 / ext4 rw 0 0\nbroken-line\n");

        var inv = ServerInventory.Collect(root.Path, s_now);

        Assert.Equal("web-01", inv.HostName);
        Assert.Equal("Fake Linux 9 (\"quoted\")", inv.Os);
        Assert.Equal("6.1.0-fake", inv.Kernel);
        Assert.Equal("Fake CPU @ 3GHz", inv.CpuModel);
        Assert.Equal(3, inv.CpuCount);
        Assert.Equal(16384000L * 1024, inv.MemoryBytes);
        Assert.Equal(s_now, inv.CollectedTime);

        Assert.Equal(["loop1", "nvme0n1", "sda"], inv.Disks.Select(d => d.Name));
        var loop = inv.Disks[0];
        Assert.True(loop.Loop);
        Assert.Equal(2048L * 512, loop.SizeBytes);
        Assert.Equal("/images/a disk.img", loop.BackingFile);
        var sda = inv.Disks[2];
        Assert.Equal(1L << 30, sda.SizeBytes);
        Assert.True(sda.Rotational);
        Assert.Equal("FAKE DISK", sda.Model);
        Assert.False(sda.Loop);
        Assert.False(inv.Disks[1].Rotational);
        Assert.Null(inv.Disks[1].Model);

        // Pseudo filesystems are left out; an over-mounted / shows its last mount; octal escapes are decoded.
        Assert.Equal(["/", "/srv/my data"], inv.Filesystems.Select(f => f.MountPoint));
        Assert.Equal("/dev/sdc1", inv.Filesystems[0].Device);
        Assert.Equal("xfs", inv.Filesystems[1].Type);
        Assert.Empty(inv.NetworkInterfaces);
    }

    [Fact]
    public void Collect_OnAnEmptyTree_GivesNullsNotErrors()
    {
        using var root = new TempDir("br-inventory-empty");
        Write(root, "/etc/os-release", "garbage without equals\n=\n");
        Write(root, "/proc/meminfo", "MemTotal: lots kB\n");
        Write(root, "/sys/block/sda/size", "not a number\n");
        var inv = ServerInventory.Collect(root.Path, s_now);
        Assert.Null(inv.HostName);
        Assert.Null(inv.Os);
        Assert.Null(inv.Kernel);
        Assert.Null(inv.CpuModel);
        Assert.Null(inv.CpuCount);
        Assert.Null(inv.MemoryBytes);
        Assert.Null(Assert.Single(inv.Disks).SizeBytes);
        Assert.Empty(inv.Filesystems);
    }
}
