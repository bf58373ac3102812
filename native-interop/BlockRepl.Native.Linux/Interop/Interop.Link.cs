using System.Runtime.InteropServices;

namespace BlockRepl.Native.Linux;

internal static partial class Interop
{
    // link(2) never replaces an existing name (EEXIST), which makes it an atomic create-only
    // publish on local filesystems, unlike rename(2).
    [LibraryImport(Libc, EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Link(string existingPath, string newPath);
}
