using System.Globalization;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace BlockRepl.Engine.Servers;

/// <summary>A block device of the server (from <c>/sys/block</c>).</summary>
public sealed record InventoryDisk
{
    /// <summary>Kernel name, e.g. <c>sda</c>, <c>nvme0n1</c>, <c>loop3</c>; the device is <c>/dev/NAME</c>.</summary>
    public required string Name { get; init; }
    public long? SizeBytes { get; init; }
    public bool? Rotational { get; init; }
    public bool? ReadOnly { get; init; }
    public string? Model { get; init; }
    /// <summary>True for loop devices (an image file attached as a disk).</summary>
    public bool Loop { get; init; }
    /// <summary>The image file behind a loop device.</summary>
    public string? BackingFile { get; init; }
}

/// <summary>A mounted filesystem (from <c>/proc/self/mounts</c> and statvfs).</summary>
public sealed record InventoryFilesystem
{
    public required string MountPoint { get; init; }
    public required string Device { get; init; }
    public required string Type { get; init; }
    public long? SizeBytes { get; init; }
    public long? UsedBytes { get; init; }
    public long? AvailableBytes { get; init; }
}

/// <summary>A network interface with its addresses (loopback left out).</summary>
public sealed record InventoryNetworkInterface
{
    public required string Name { get; init; }
    public string? MacAddress { get; init; }
    public IReadOnlyList<string> Addresses { get; init; } = [];
}

/// <summary>
/// What a server is and has, like the AWS Application Discovery agent reports it: host, OS, CPU, memory, disks,
/// filesystems and network interfaces (docs/servers.md §3). <see cref="Collect()"/> reads it from this Linux
/// machine and never throws: whatever cannot be read stays null (or an empty list).
/// </summary>
public sealed record ServerInventory
{
    public string? HostName { get; init; }
    /// <summary>PRETTY_NAME from /etc/os-release.</summary>
    public string? Os { get; init; }
    /// <summary>/proc/sys/kernel/osrelease.</summary>
    public string? Kernel { get; init; }
    public string? Architecture { get; init; }
    public string? CpuModel { get; init; }
    public int? CpuCount { get; init; }
    /// <summary>MemTotal from /proc/meminfo.</summary>
    public long? MemoryBytes { get; init; }
    public IReadOnlyList<InventoryDisk> Disks { get; init; } = [];
    public IReadOnlyList<InventoryFilesystem> Filesystems { get; init; } = [];
    public IReadOnlyList<InventoryNetworkInterface> NetworkInterfaces { get; init; } = [];
    public DateTimeOffset CollectedTime { get; init; }

    /// <summary>Filesystem types that hold no user data (kernel interfaces, memory-backed, automount stubs).</summary>
    private static readonly HashSet<string> s_pseudoFilesystems = new(StringComparer.Ordinal)
    {
        "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "cgroup", "cgroup2", "securityfs", "debugfs",
        "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "pstore", "bpf", "autofs", "binfmt_misc", "nsfs",
        "rpc_pipefs", "efivarfs", "selinuxfs", "rootfs", "fuse.gvfsd-fuse", "fuse.portal",
        "fuse.lxcfs", "nfsd", "sockfs", "pipefs",
    };

    /// <summary>Collects the inventory of this machine now.</summary>
    public static ServerInventory Collect() => Collect("/", DateTimeOffset.UtcNow);

    /// <summary>Collects with every <c>/etc</c>, <c>/proc</c> and <c>/sys</c> path under <paramref name="root"/> (tests use a fake tree).</summary>
    internal static ServerInventory Collect(string root, DateTimeOffset now)
    {
        string P(string path) => Path.Combine(root, path.TrimStart('/'));
        var cpu = Safe(() => Cpu(P("/proc/cpuinfo")), (null, null));
        return new ServerInventory
        {
            HostName = Safe(() => FirstLine(P("/proc/sys/kernel/hostname")), null) ?? (root == "/" ? Safe(() => Environment.MachineName, null) : null),
            Os = Safe(() => OsRelease(P("/etc/os-release")), null),
            Kernel = Safe(() => FirstLine(P("/proc/sys/kernel/osrelease")), null),
            Architecture = Safe(() => RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant(), null),
            CpuModel = cpu.Model,
            CpuCount = cpu.Count ?? (root == "/" ? Environment.ProcessorCount : null),
            MemoryBytes = Safe(() => MemTotal(P("/proc/meminfo")), null),
            Disks = Safe(() => ReadDisks(P("/sys/block")), []),
            Filesystems = Safe(() => ReadFilesystems(P("/proc/self/mounts"), statvfs: root == "/"), []),
            NetworkInterfaces = root == "/" ? Safe(ReadInterfaces, []) : [],
            CollectedTime = now,
        };
    }

    private static T Safe<T>(Func<T> read, T fallback)
    {
        try { return read(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or OverflowException
            or NotSupportedException or PlatformNotSupportedException or NetworkInformationException or ArgumentException or InvalidOperationException)
        {
            return fallback;
        }
    }

    private static string? ReadText(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    private static string? FirstLine(string path)
    {
        string? text = ReadText(path);
        if (text is null) return null;
        int nl = text.IndexOf('\n');
        string line = (nl >= 0 ? text[..nl] : text).Trim();
        return line.Length == 0 ? null : line;
    }

    private static string? OsRelease(string path)
    {
        string? text = ReadText(path);
        if (text is null) return null;
        string? pretty = null, name = null;
        foreach (var raw in text.Split('\n'))
        {
            string line = raw.Trim();
            int eq = line.IndexOf('=');
            if (eq <= 0) continue;
            string value = Unquote(line[(eq + 1)..]);
            switch (line[..eq])
            {
                case "PRETTY_NAME": pretty = value; break;
                case "NAME": name = value; break;
            }
        }
        return string.IsNullOrEmpty(pretty) ? (string.IsNullOrEmpty(name) ? null : name) : pretty;
    }

    /// <summary>os-release values are shell words: "double", 'single' or bare, with \-escapes inside double quotes.</summary>
    private static string Unquote(string v)
    {
        if (v.Length >= 2 && v[0] == '\'' && v[^1] == '\'') return v[1..^1];
        if (v.Length >= 2 && v[0] == '"' && v[^1] == '"')
        {
            var b = new StringBuilder(v.Length);
            for (int i = 1; i < v.Length - 1; i++)
            {
                if (v[i] == '\\' && i + 1 < v.Length - 1) i++;
                b.Append(v[i]);
            }
            return b.ToString();
        }
        return v;
    }

    private static (string? Model, int? Count) Cpu(string path)
    {
        string? text = ReadText(path);
        if (text is null) return (null, null);
        string? model = null;
        int count = 0;
        foreach (var line in text.Split('\n'))
        {
            int colon = line.IndexOf(':');
            if (colon <= 0) continue;
            string key = line[..colon].Trim();
            string value = line[(colon + 1)..].Trim();
            if (key == "processor") count++;
            // x86: "model name"; arm64 kernels print no model name, some print "Hardware" or "cpu model" (mips).
            else if (model is null && value.Length > 0 && key is "model name" or "cpu model" or "Hardware" or "cpu") model = value;
        }
        return (model, count > 0 ? count : null);
    }

    private static long? MemTotal(string path)
    {
        string? text = ReadText(path);
        if (text is null) return null;
        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith("MemTotal:", StringComparison.Ordinal)) continue;
            var parts = line["MemTotal:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length >= 1 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kib))
                return parts.Length >= 2 && parts[1] == "kB" ? checked(kib * 1024) : kib;
        }
        return null;
    }

    private static List<InventoryDisk> ReadDisks(string sysBlock)
    {
        var disks = new List<InventoryDisk>();
        if (!Directory.Exists(sysBlock)) return disks;
        foreach (string dir in Directory.EnumerateFileSystemEntries(sysBlock).Order(StringComparer.Ordinal))
        {
            string name = Path.GetFileName(dir);
            // RAM disks and zram (compressed swap in memory) are not storage to replicate.
            if (name.StartsWith("ram", StringComparison.Ordinal) || name.StartsWith("zram", StringComparison.Ordinal)) continue;
            bool loop = name.StartsWith("loop", StringComparison.Ordinal);
            // /sys/block/*/size counts 512-byte sectors whatever the device's logical block size.
            long? sectors = ParseLong(FirstLine(Path.Combine(dir, "size")));
            string? backing = loop ? FirstLine(Path.Combine(dir, "loop", "backing_file")) : null;
            // Every loop0..N node exists whether attached or not; only attached ones are disks.
            if (loop && (backing is null || sectors is null or 0)) continue;
            string? rotational = FirstLine(Path.Combine(dir, "queue", "rotational"));
            string? ro = FirstLine(Path.Combine(dir, "ro"));
            disks.Add(new InventoryDisk
            {
                Name = name,
                SizeBytes = sectors is { } s ? checked(s * 512) : null,
                Rotational = rotational switch { "1" => true, "0" => false, _ => null },
                ReadOnly = ro switch { "1" => true, "0" => false, _ => null },
                Model = FirstLine(Path.Combine(dir, "device", "model")),
                Loop = loop,
                BackingFile = backing,
            });
        }
        return disks;
    }

    private static long? ParseLong(string? s) =>
        s is not null && long.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v : null;

    private static List<InventoryFilesystem> ReadFilesystems(string mounts, bool statvfs)
    {
        string? text = ReadText(mounts);
        if (text is null) return [];
        // A mount point mounted over again shows the last mount: keep the last entry per mount point.
        var byMountPoint = new Dictionary<string, InventoryFilesystem>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var line in text.Split('\n'))
        {
            var f = line.Split(' ');
            if (f.Length < 3) continue;
            string device = Unescape(f[0]), mountPoint = Unescape(f[1]), type = f[2];
            if (s_pseudoFilesystems.Contains(type) || type.StartsWith("cgroup", StringComparison.Ordinal)) continue;
            long? size = null, used = null, avail = null;
            if (statvfs)
            {
                try
                {
                    // DriveInfo's sizes come from statvfs(3) on the mount point.
                    var d = new DriveInfo(mountPoint);
                    size = d.TotalSize;
                    used = d.TotalSize - d.TotalFreeSpace;
                    avail = d.AvailableFreeSpace;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { }
            }
            if (!byMountPoint.ContainsKey(mountPoint)) order.Add(mountPoint);
            byMountPoint[mountPoint] = new InventoryFilesystem { MountPoint = mountPoint, Device = device, Type = type, SizeBytes = size, UsedBytes = used, AvailableBytes = avail };
        }
        return [.. order.Select(m => byMountPoint[m])];
    }

    /// <summary>/proc/self/mounts writes space, tab, newline and backslash as octal escapes (\040, \011, \012, \134).</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal)) return s;
        var b = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && IsOctal(s, i + 1))
            {
                b.Append((char)Convert.ToInt32(s.Substring(i + 1, 3), 8));
                i += 3;
            }
            else b.Append(s[i]);
        }
        return b.ToString();
    }

    private static bool IsOctal(string s, int at) =>
        at + 3 <= s.Length && s[at] is >= '0' and <= '3' && s[at + 1] is >= '0' and <= '7' && s[at + 2] is >= '0' and <= '7';

    private static List<InventoryNetworkInterface> ReadInterfaces()
    {
        var list = new List<InventoryNetworkInterface>();
        foreach (var nic in NetworkInterface.GetAllNetworkInterfaces().OrderBy(n => n.Name, StringComparer.Ordinal))
        {
            if (nic.NetworkInterfaceType == NetworkInterfaceType.Loopback) continue;
            var addresses = Safe(() => nic.GetIPProperties().UnicastAddresses
                .Where(a => a.Address.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
                .Select(a => $"{a.Address}/{a.PrefixLength}").ToList(), []);
            byte[] mac = Safe(() => nic.GetPhysicalAddress().GetAddressBytes(), []);
            list.Add(new InventoryNetworkInterface
            {
                Name = nic.Name,
                MacAddress = mac.Length == 6 && mac.Any(b => b != 0) ? string.Join(':', mac.Select(b => b.ToString("x2", CultureInfo.InvariantCulture))) : null,
                Addresses = addresses,
            });
        }
        return list;
    }
}
