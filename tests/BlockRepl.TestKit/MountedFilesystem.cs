namespace BlockRepl.TestKit;

/// <summary>
/// A filesystem mounted on a directory for a test (needs root): a fresh XFS or ext4 on a loop device over a sparse
/// image, or a tmpfs. Unmounted (and its loop device detached) on dispose, whatever happened.
/// </summary>
public sealed class MountedFilesystem : IDisposable
{
    private readonly LoopDevice? _loop;
    private bool _disposed;

    private MountedFilesystem(string mountPoint, LoopDevice? loop)
    {
        MountPoint = mountPoint;
        _loop = loop;
    }

    /// <summary>The directory the filesystem is mounted on.</summary>
    public string MountPoint { get; }

    /// <summary>Path of <paramref name="name"/> inside the filesystem.</summary>
    public string File(string name) => Path.Combine(MountPoint, name);

    /// <summary>XFS with reflink (<c>mkfs.xfs -m reflink=1</c>) on a loop device over <paramref name="image"/> (300 MiB: XFS's minimum).</summary>
    public static MountedFilesystem XfsWithReflink(string image, string mountPoint) =>
        OnLoop(image, 300L << 20, mountPoint, "mkfs.xfs", "-q -m reflink=1");

    /// <summary>ext4 (no reflink) on a loop device over <paramref name="image"/>.</summary>
    public static MountedFilesystem Ext4(string image, long size, string mountPoint) =>
        OnLoop(image, size, mountPoint, "mkfs.ext4", "-q -F");

    /// <summary>A tmpfs of <paramref name="size"/> bytes.</summary>
    public static MountedFilesystem Tmpfs(string mountPoint, long size)
    {
        Directory.CreateDirectory(mountPoint);
        Processes.Run("mount", $"-t tmpfs -o size={size} tmpfs {Processes.Quote(mountPoint)}");
        return new MountedFilesystem(mountPoint, null);
    }

    private static MountedFilesystem OnLoop(string image, long size, string mountPoint, string mkfs, string options)
    {
        if (!Processes.HasCommand(mkfs)) throw new InvalidOperationException($"{mkfs} not found (scripts/test.sh installs it)");
        using (var f = new FileStream(image, FileMode.CreateNew)) f.SetLength(size);
        Processes.Run(mkfs, $"{options} {Processes.Quote(image)}");
        var loop = LoopDevice.Attach(image);
        try
        {
            Directory.CreateDirectory(mountPoint);
            Processes.Run("mount", $"{Processes.Quote(loop.DevicePath)} {Processes.Quote(mountPoint)}");
            return new MountedFilesystem(mountPoint, loop);
        }
        catch
        {
            loop.Dispose();
            throw;
        }
    }

    /// <summary>Unmounts (thawing first, in case a failed test left it frozen), then detaches the loop device. Never throws.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            Processes.Run("fsfreeze", $"-u {Processes.Quote(MountPoint)}", check: false, timeout: TimeSpan.FromSeconds(30));
            var (code, _, stderr) = Processes.Run("umount", Processes.Quote(MountPoint), check: false, timeout: TimeSpan.FromMinutes(1));
            if (code != 0)
            {
                // Busy (a process of a failed test still holds a file): detach lazily so the loop device can go.
                Processes.Run("umount", $"-l {Processes.Quote(MountPoint)}", check: false, timeout: TimeSpan.FromMinutes(1));
                Console.Error.WriteLine($"warning: umount {MountPoint}: {stderr.Trim()}; unmounted lazily");
            }
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException)
        {
            Console.Error.WriteLine($"warning: could not unmount {MountPoint}: {e.Message}");
        }
        _loop?.Dispose();
    }
}
