namespace BlockRepl.Native.Linux;

/// <summary>What a path resolves to, after following symlinks.</summary>
public enum FileKind
{
    /// <summary>Nothing there (ENOENT, or a path component is not a directory: ENOTDIR).</summary>
    Missing = 0,

    /// <summary>A regular file (S_IFREG).</summary>
    Regular,

    /// <summary>A block device node (S_IFBLK); its size comes from <see cref="LinuxFile.GetBlockDeviceSize"/>.</summary>
    BlockDevice,

    /// <summary>A directory (S_IFDIR).</summary>
    Directory,

    /// <summary>Anything else: character device, FIFO, socket.</summary>
    Other,
}
