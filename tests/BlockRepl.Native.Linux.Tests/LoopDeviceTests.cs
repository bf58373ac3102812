using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux.Tests;

/// <summary>Block device calls against a real 64 MiB loop device, attached and detached per test.</summary>
public class LoopDeviceTests
{
    private const long ImageSize = 64L * 1024 * 1024;

    [RootFact]
    public void LoopDeviceReportsItsSizeSectorSizeAndKind()
    {
        using var dir = new TempDirectory();
        string image = dir.Combine("disk.img");
        Shell.Run("truncate", "-s", "64M", image);

        string device = Shell.Run("losetup", "--find", "--show", image);
        try
        {
            Assert.StartsWith("/dev/loop", device);

            FileStat stat = LinuxFile.Stat(device);
            Assert.Equal(FileKind.BlockDevice, stat.Kind);
            Assert.Equal(7ul, stat.RDev >> 8 & 0xfff); // loop major

            using (SafeFileHandle handle = File.OpenHandle(device, FileMode.Open, FileAccess.Read))
            {
                Assert.Equal(ImageSize, LinuxFile.GetBlockDeviceSize(handle, device));
                Assert.Equal(512, LinuxFile.GetLogicalSectorSize(handle, device));
                LinuxFile.Fadvise(handle, 0, 0, FileAdvice.Sequential);

                // Either answer is valid depending on the kernel; it must not throw.
                _ = LinuxFile.SupportsSeekData(handle);
            }

            using SafeFileHandle? direct = LinuxFile.TryOpenDirect(device, write: false);
            Assert.NotNull(direct);
            Assert.Equal(ImageSize, LinuxFile.GetBlockDeviceSize(direct, device));
        }
        finally
        {
            Shell.Run("losetup", "-d", device);
        }
    }
}
