namespace BlockRepl.Qemu;

/// <summary>
/// One named dirty bitmap of a block node, as <c>query-named-block-nodes</c> reports it on QEMU 7.2.
/// </summary>
/// <param name="Name">The bitmap name.</param>
/// <param name="Recording">True while the bitmap records writes (enabled and usable). An inconsistent bitmap reports false.</param>
/// <param name="Persistent">Stored in the qcow2 image on a clean close.</param>
/// <param name="Inconsistent">
/// The image says the bitmap was in use when its writer died (qcow2 flag <c>in-use</c>, e.g. after SIGKILL): its
/// contents cannot be trusted, QEMU refuses to export or merge it; remove it and do a full copy.
/// QEMU sends the field only when true.
/// </param>
/// <param name="Busy">In use by an operation (an export, a backup job) and cannot be changed now.</param>
/// <param name="Granularity">Bytes per bit.</param>
/// <param name="Count">Dirty bytes (a multiple of the granularity, except possibly at the end of the image).</param>
public sealed record DirtyBitmapInfo(string Name, bool Recording, bool Persistent, bool Inconsistent, bool Busy, long Granularity, long Count);
