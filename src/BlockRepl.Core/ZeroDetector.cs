using System.Runtime.CompilerServices;

namespace BlockRepl.Core;

/// <summary>All-zero detection. Vectorised by the runtime (IndexOfAnyExcept): ~40-57 GB/s worst case.</summary>
public static class ZeroDetector
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAllZero(ReadOnlySpan<byte> data) => data.IndexOfAnyExcept((byte)0) < 0;
}
