using System.Diagnostics.CodeAnalysis;

namespace BlockRepl.Core;

/// <summary>Keeps throw sites out of hot methods so they stay small enough to inline.</summary>
public static class ThrowHelper
{
    [DoesNotReturn]
    public static void ThrowCorrupt(string what, string detail) => throw new CorruptDataException(what, detail);

    [DoesNotReturn]
    public static void ThrowArgument(string paramName, string message) => throw new ArgumentException(message, paramName);

    [DoesNotReturn]
    public static void ThrowBufferTooSmall(string paramName) =>
        throw new ArgumentException("The destination buffer is too small.", paramName);

    [DoesNotReturn]
    public static void ThrowUnsupportedVersion(string what, int version, int supported) =>
        throw new UnsupportedFormatException(what, version, supported);
}

/// <summary>A stored structure failed its checksum or did not parse. Never retried.</summary>
public sealed class CorruptDataException(string what, string detail)
    : Exception($"{what} is corrupt: {detail}")
{
    /// <summary>The object (file, blob, structure) that was corrupt.</summary>
    public string What { get; } = what;
}

/// <summary>A structure was written by a newer BlockRepl than this one.</summary>
public sealed class UnsupportedFormatException(string what, int version, int supported)
    : Exception($"{what} has format version {version}; this blockrepl supports up to {supported}. Upgrade blockrepl.")
{
    public int Version { get; } = version;
}
