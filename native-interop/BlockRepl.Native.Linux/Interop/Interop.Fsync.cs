using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    [LibraryImport(Libc, EntryPoint = "fsync", SetLastError = true)]
    internal static partial int FSync(SafeFileHandle fd);
}
