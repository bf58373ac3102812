namespace BlockRepl.TestKit;

/// <summary>A loop device over an image file (<c>losetup</c>; needs root), detached on dispose.</summary>
public sealed class LoopDevice : IDisposable
{
    private bool _disposed;

    private LoopDevice(string devicePath, string imagePath)
    {
        DevicePath = devicePath;
        ImagePath = imagePath;
    }

    /// <summary>The device node, e.g. <c>/dev/loop3</c>.</summary>
    public string DevicePath { get; }

    /// <summary>The backing image file.</summary>
    public string ImagePath { get; }

    /// <summary>Attaches <paramref name="imagePath"/> to the first free loop device (<c>losetup --find --show</c>).</summary>
    /// <exception cref="InvalidOperationException">losetup is missing or failed (typically: not root, or no loop support).</exception>
    public static LoopDevice Attach(string imagePath)
    {
        string full = System.IO.Path.GetFullPath(imagePath);
        if (!File.Exists(full))
        {
            throw new FileNotFoundException("Image for the loop device does not exist.", full);
        }

        if (!Processes.HasCommand("losetup"))
        {
            throw new InvalidOperationException("losetup not found: install util-linux (apt-get install util-linux).");
        }

        var (_, stdout, _) = Processes.Run("losetup", "--find --show " + Processes.Quote(full), timeout: TimeSpan.FromMinutes(1));
        string device = stdout.Trim();
        if (!device.StartsWith("/dev/", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"losetup --find --show printed '{device}', not a device path.");
        }

        return new LoopDevice(device, full);
    }

    /// <summary>
    /// Detaches with <c>losetup -d</c>, retrying while the device is busy (udev and blkid briefly hold
    /// it open after any write). Never throws: a failure is reported on stderr so that it does not
    /// hide the exception of the test that was running.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        string lastError = string.Empty;
        for (int attempt = 0; attempt < 10; attempt++)
        {
            try
            {
                var (code, _, stderr) = Processes.Run("losetup", "-d " + Processes.Quote(DevicePath), check: false, timeout: TimeSpan.FromSeconds(30));
                if (code == 0)
                {
                    return;
                }

                lastError = stderr.Trim();
                if (!lastError.Contains("busy", StringComparison.OrdinalIgnoreCase))
                {
                    break;
                }
            }
            catch (Exception ex) when (ex is InvalidOperationException or TimeoutException)
            {
                lastError = ex.Message;
            }

            Thread.Sleep(100 * (attempt + 1));
        }

        Console.Error.WriteLine($"warning: could not detach {DevicePath} ({ImagePath}): {lastError}");
    }
}
