using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace BlockRepl.Native.Linux;

[SupportedOSPlatform("linux")]
internal static partial class Interop
{
    /// <summary>
    /// "libc" is mapped to the real C library soname (libc.so.6 on glibc) by the runtime's PAL,
    /// so this works without the libc6-dev linker script being installed.
    /// </summary>
    internal const string Libc = "libc";

    /// <summary>
    /// Offsets are passed as C <c>off_t</c>/<c>long</c> (C# <see cref="long"/>) and several open(2)
    /// flags differ between architectures; only the LP64 ABIs whose values are pinned in
    /// <see cref="OpenFlags"/> are supported. Everything else fails loudly instead of passing
    /// wrong flags or truncated offsets to the kernel.
    /// </summary>
    internal static void EnsureSupportedArchitecture()
    {
        Architecture arch = RuntimeInformation.ProcessArchitecture;
        if (arch is not (Architecture.X64 or Architecture.Arm64))
        {
            throw new PlatformNotSupportedException(
                $"BlockRepl.Native.Linux supports linux-x64 and linux-arm64 only (this process is {arch}).");
        }
    }
}
