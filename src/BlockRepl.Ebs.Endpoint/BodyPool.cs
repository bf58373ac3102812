using System.Buffers;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// Buffers for request bodies and blocks. ArrayPool.Shared keeps only a few 512 KiB arrays per core, so with 64 puts
/// in flight most rents would allocate on the large-object heap (and cost gen-2 collections); this pool keeps enough.
/// </summary>
internal static class BodyPool
{
    public static readonly ArrayPool<byte> Shared = ArrayPool<byte>.Create(maxArrayLength: 1 << 20, maxArraysPerBucket: 256);
}
