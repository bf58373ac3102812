using System.Text.Json.Nodes;

namespace BlockRepl.Qemu;

/// <summary>
/// One action of a QMP <c>transaction</c>: <c>{"type":Type,"data":{…}}</c>. QEMU applies all actions of a
/// transaction or none, and no guest write falls between them, which is what makes a checkpoint
/// (bitmap rotation + fleecing start) atomic.
/// </summary>
public sealed class QmpAction
{
    private QmpAction(string type, JsonObject data)
    {
        Type = type;
        Data = data;
    }

    /// <summary>The action type, e.g. <c>block-dirty-bitmap-add</c>.</summary>
    public string Type { get; }

    /// <summary>The action's arguments, names as QMP spells them.</summary>
    public JsonObject Data { get; }

    /// <summary>Any action QEMU knows, for types without a factory here.</summary>
    public static QmpAction Custom(string type, JsonObject data)
    {
        ArgumentException.ThrowIfNullOrEmpty(type);
        ArgumentNullException.ThrowIfNull(data);
        return new(type, data);
    }

    /// <summary>
    /// <c>block-dirty-bitmap-add</c>: a new bitmap on <paramref name="node"/>. Persistent bitmaps are stored in the
    /// qcow2 image on a clean close (the node must be writable); a disabled one does not record writes.
    /// <paramref name="granularity"/> null lets QEMU choose (the qcow2 cluster size, normally 64 KiB).
    /// </summary>
    public static QmpAction BitmapAdd(string node, string name, bool persistent, bool disabled = false, int? granularity = null)
    {
        var data = NodeAndName(node, name);
        data["persistent"] = persistent;
        data["disabled"] = disabled;
        if (granularity is int g) data["granularity"] = g;
        return new("block-dirty-bitmap-add", data);
    }

    /// <summary><c>block-dirty-bitmap-merge</c>: ORs <paramref name="sources"/> (bitmaps on the same node) into <paramref name="target"/>.</summary>
    public static QmpAction BitmapMerge(string node, string target, IEnumerable<string> sources)
    {
        ArgumentException.ThrowIfNullOrEmpty(node);
        ArgumentException.ThrowIfNullOrEmpty(target);
        ArgumentNullException.ThrowIfNull(sources);
        var list = new JsonArray();
        foreach (string s in sources)
        {
            ArgumentException.ThrowIfNullOrEmpty(s, nameof(sources));
            list.Add(s);
        }
        if (list.Count == 0) throw new ArgumentException("a merge needs at least one source bitmap", nameof(sources));
        return new("block-dirty-bitmap-merge", new JsonObject { ["node"] = node, ["target"] = target, ["bitmaps"] = list });
    }

    /// <summary><c>block-dirty-bitmap-disable</c>: the bitmap stops recording writes.</summary>
    public static QmpAction BitmapDisable(string node, string name) => new("block-dirty-bitmap-disable", NodeAndName(node, name));

    /// <summary><c>block-dirty-bitmap-enable</c>: the bitmap records writes again.</summary>
    public static QmpAction BitmapEnable(string node, string name) => new("block-dirty-bitmap-enable", NodeAndName(node, name));

    /// <summary><c>block-dirty-bitmap-clear</c>: all bits to 0.</summary>
    public static QmpAction BitmapClear(string node, string name) => new("block-dirty-bitmap-clear", NodeAndName(node, name));

    /// <summary>
    /// <c>block-dirty-bitmap-remove</c> inside a transaction. Accepted by QEMU 7.2 (verified; see docs/qmp.md), so a
    /// rotation can drop the old generation atomically with the rest.
    /// </summary>
    public static QmpAction BitmapRemove(string node, string name) => new("block-dirty-bitmap-remove", NodeAndName(node, name));

    /// <summary>
    /// <c>blockdev-backup</c>: with <paramref name="sync"/> <c>none</c> and a qcow2 overlay whose backing is
    /// <paramref name="device"/> as <paramref name="target"/>, this is fleecing: before a guest write changes a
    /// block, the old block is copied into the overlay, so the overlay shows the point in time of the transaction.
    /// </summary>
    public static QmpAction BlockdevBackup(string jobId, string device, string target, string sync = "none")
    {
        ArgumentException.ThrowIfNullOrEmpty(jobId);
        ArgumentException.ThrowIfNullOrEmpty(device);
        ArgumentException.ThrowIfNullOrEmpty(target);
        ArgumentException.ThrowIfNullOrEmpty(sync);
        return new("blockdev-backup", new JsonObject { ["job-id"] = jobId, ["device"] = device, ["target"] = target, ["sync"] = sync });
    }

    internal JsonObject ToJson() => new() { ["type"] = Type, ["data"] = Data.DeepClone() };

    private static JsonObject NodeAndName(string node, string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(node);
        ArgumentException.ThrowIfNullOrEmpty(name);
        return new JsonObject { ["node"] = node, ["name"] = name };
    }
}
