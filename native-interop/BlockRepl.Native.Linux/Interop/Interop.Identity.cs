using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    // geteuid cannot fail (POSIX), so no errno and no check.
    [LibraryImport(Libc, EntryPoint = "geteuid")]
    internal static partial uint GetEUid();
}
