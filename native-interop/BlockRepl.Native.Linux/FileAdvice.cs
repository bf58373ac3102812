namespace BlockRepl.Native.Linux;

/// <summary>posix_fadvise(2) advice; values are the kernel's POSIX_FADV_* constants.</summary>
public enum FileAdvice
{
    /// <summary>POSIX_FADV_NORMAL: default readahead.</summary>
    Normal = 0,

    /// <summary>POSIX_FADV_RANDOM: disable readahead.</summary>
    Random = 1,

    /// <summary>POSIX_FADV_SEQUENTIAL: double the readahead window.</summary>
    Sequential = 2,

    /// <summary>POSIX_FADV_WILLNEED: start reading the range into the page cache now.</summary>
    WillNeed = 3,

    /// <summary>POSIX_FADV_DONTNEED: drop clean cached pages of the range (a full-disk scan should not evict the host's cache).</summary>
    DontNeed = 4,

    /// <summary>POSIX_FADV_NOREUSE: data is accessed once (a no-op on most kernels).</summary>
    NoReuse = 5,
}
