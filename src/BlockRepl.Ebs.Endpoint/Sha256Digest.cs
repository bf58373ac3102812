using System.Runtime.CompilerServices;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>A raw 32-byte SHA-256 digest held by value (no array per block).</summary>
[InlineArray(32)]
internal struct Sha256Digest
{
    private byte _element0;

    public static Sha256Digest From(ReadOnlySpan<byte> bytes)
    {
        var d = default(Sha256Digest);
        bytes[..32].CopyTo(d);
        return d;
    }

    public readonly string ToBase64() => Convert.ToBase64String(this);
}
