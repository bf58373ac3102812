using System.Text.Json;
using System.Text.Json.Nodes;

namespace BlockRepl.Qemu;

/// <summary>Typed wrappers for the block commands a checkpoint and fleecing flow needs (docs/qmp.md).</summary>
public sealed partial class QmpClient
{
    /// <summary>
    /// The named dirty bitmaps of the block node <paramref name="nodeName"/> (from <c>query-named-block-nodes</c>
    /// with <c>flat</c>). Unnamed bitmaps (a backup job's internal copy bitmap) are skipped.
    /// </summary>
    /// <exception cref="QmpException">CommandFailed when no node has that name.</exception>
    public async Task<IReadOnlyList<DirtyBitmapInfo>> QueryBitmapsAsync(string nodeName, CancellationToken ct = default)
    {
        var node = await FindNodeAsync(nodeName, ct).ConfigureAwait(false);
        var result = new List<DirtyBitmapInfo>();
        if (!node.TryGetProperty("dirty-bitmaps", out var bitmaps) || bitmaps.ValueKind != JsonValueKind.Array) return result;
        foreach (var b in bitmaps.EnumerateArray())
        {
            if (!b.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String) continue;
            result.Add(new DirtyBitmapInfo(
                name.GetString()!,
                Recording: Bool(b, "recording"),
                Persistent: Bool(b, "persistent"),
                Inconsistent: Bool(b, "inconsistent"),
                Busy: Bool(b, "busy"),
                Granularity: b.TryGetProperty("granularity", out var g) ? g.GetInt64() : 0,
                Count: b.TryGetProperty("count", out var c) ? c.GetInt64() : 0));
        }
        return result;
    }

    /// <summary>The virtual size in bytes of the block node <paramref name="nodeName"/> (<c>image.virtual-size</c>).</summary>
    public async Task<long> QueryNodeSizeAsync(string nodeName, CancellationToken ct = default)
    {
        var node = await FindNodeAsync(nodeName, ct).ConfigureAwait(false);
        return node.TryGetProperty("image", out var image) && image.TryGetProperty("virtual-size", out var size)
            ? size.GetInt64()
            : throw QmpException.Create(QmpErrorKind.Protocol, SocketPath, "query-named-block-nodes", $"node '{nodeName}' has no image.virtual-size");
    }

    /// <summary>Runs the actions as one QMP <c>transaction</c>: all or nothing.</summary>
    public Task TransactionAsync(params QmpAction[] actions) => TransactionAsync(actions, CancellationToken.None);

    /// <summary>Runs the actions as one QMP <c>transaction</c>: all or nothing.</summary>
    public async Task TransactionAsync(IEnumerable<QmpAction> actions, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(actions);
        var list = new JsonArray();
        foreach (var a in actions) list.Add(a.ToJson());
        if (list.Count == 0) throw new ArgumentException("a transaction needs at least one action", nameof(actions));
        await ExecuteAsync("transaction", new JsonObject { ["actions"] = list }, ct).ConfigureAwait(false);
    }

    /// <summary><c>block-dirty-bitmap-add</c> outside a transaction.</summary>
    public Task BitmapAddAsync(string node, string name, bool persistent, bool disabled = false, CancellationToken ct = default) =>
        RunActionAsync(QmpAction.BitmapAdd(node, name, persistent, disabled), ct);

    /// <summary><c>block-dirty-bitmap-remove</c> (also works for an inconsistent bitmap, which is how to get rid of one).</summary>
    public Task BitmapRemoveAsync(string node, string name, CancellationToken ct = default) =>
        RunActionAsync(QmpAction.BitmapRemove(node, name), ct);

    /// <summary>
    /// The fleecing overlay: <c>blockdev-add</c> of a qcow2 node <paramref name="nodeName"/> on
    /// <paramref name="scratchFile"/> (created beforehand, e.g. by <see cref="QemuImg.CreateQcow2Async"/>, with
    /// the virtual size of the backing node and no backing file in its header) whose backing is
    /// <paramref name="backingNode"/>. Reads of blocks not yet copied fall through to the live node.
    /// </summary>
    public async Task BlockdevAddQcow2OverlayAsync(string nodeName, string scratchFile, string backingNode, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        ArgumentException.ThrowIfNullOrEmpty(scratchFile);
        ArgumentException.ThrowIfNullOrEmpty(backingNode);
        await ExecuteAsync("blockdev-add", new JsonObject
        {
            ["driver"] = "qcow2",
            ["node-name"] = nodeName,
            ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = Path.GetFullPath(scratchFile) },
            ["backing"] = backingNode,
            ["discard"] = "unmap",
        }, ct).ConfigureAwait(false);
    }

    /// <summary><c>blockdev-del</c>: removes a node added with <c>blockdev-add</c> (no job or export may still use it).</summary>
    public async Task BlockdevDelAsync(string nodeName, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        await ExecuteAsync("blockdev-del", new JsonObject { ["node-name"] = nodeName }, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// <c>block-job-cancel</c>, then waits (up to <see cref="DefaultTimeout"/>) for the job's
    /// <c>BLOCK_JOB_CANCELLED</c> or <c>BLOCK_JOB_COMPLETED</c> event; returns the event name.
    /// </summary>
    public async Task<string> BlockJobCancelAsync(string device, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(device);
        long before = EventSequence;
        await ExecuteAsync("block-job-cancel", new JsonObject { ["device"] = device }, ct).ConfigureAwait(false);
        var e = await WaitForEventCoreAsync(["BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"], d => StringField(d, "device") == device,
            before, DefaultTimeout, ct).ConfigureAwait(false);
        return e.Name;
    }

    /// <summary>The ids of the block jobs that exist now (<c>query-block-jobs</c>).</summary>
    public async Task<IReadOnlyList<string>> QueryBlockJobsAsync(CancellationToken ct = default)
    {
        var jobs = await ExecuteAsync("query-block-jobs", null, ct).ConfigureAwait(false);
        return [.. jobs.EnumerateArray().Select(j => StringField(j, "device") ?? "")];
    }

    /// <summary>
    /// <c>nbd-server-start</c> on a unix socket, for a daemon started without <c>--nbd-server</c>
    /// (<see cref="QemuStorageDaemon"/> always starts one).
    /// </summary>
    public async Task NbdServerStartAsync(string socketPath, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        await ExecuteAsync("nbd-server-start", new JsonObject
        {
            ["addr"] = new JsonObject { ["type"] = "unix", ["data"] = new JsonObject { ["path"] = Path.GetFullPath(socketPath) } },
        }, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// <c>block-export-add</c> of type nbd: <paramref name="nodeName"/> under the NBD export name
    /// <paramref name="exportName"/>, with the <c>qemu:dirty-bitmap:NAME</c> contexts of <paramref name="bitmaps"/>
    /// (looked up on the node and down its backing chain). QEMU refuses a read-only export of a writable node
    /// with an enabled bitmap: export a disabled copy.
    /// </summary>
    public async Task NbdExportAddAsync(string id, string nodeName, string exportName, bool writable,
        IEnumerable<string>? bitmaps = null, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        ArgumentNullException.ThrowIfNull(exportName);
        var args = new JsonObject
        {
            ["type"] = "nbd",
            ["id"] = id,
            ["node-name"] = nodeName,
            ["name"] = exportName,
            ["writable"] = writable,
        };
        if (bitmaps is not null)
        {
            var list = new JsonArray();
            foreach (string b in bitmaps) list.Add(b);
            if (list.Count > 0) args["bitmaps"] = list;
        }
        await ExecuteAsync("block-export-add", args, ct).ConfigureAwait(false);
    }

    /// <summary>
    /// <c>block-export-del</c>, then waits (up to <see cref="DefaultTimeout"/>) for <c>BLOCK_EXPORT_DELETED</c>:
    /// deletion completes asynchronously, and the node stays in use until it has (the event may even come
    /// before the reply). While a client is attached to the export, the default ("safe") mode is refused with
    /// <c>GenericError: export 'ID' still in use</c>; <paramref name="hard"/> drops the clients instead.
    /// </summary>
    public async Task NbdExportDelAsync(string id, bool hard = false, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(id);
        long before = EventSequence;
        var args = new JsonObject { ["id"] = id };
        if (hard) args["mode"] = "hard";
        await ExecuteAsync("block-export-del", args, ct).ConfigureAwait(false);
        await WaitForEventCoreAsync(["BLOCK_EXPORT_DELETED"], d => StringField(d, "id") == id, before, DefaultTimeout, ct).ConfigureAwait(false);
    }

    private async Task RunActionAsync(QmpAction action, CancellationToken ct) =>
        await ExecuteAsync(action.Type, action.Data, ct).ConfigureAwait(false);

    private async Task<JsonElement> FindNodeAsync(string nodeName, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        const string command = "query-named-block-nodes";
        var nodes = await ExecuteAsync(command, new JsonObject { ["flat"] = true }, ct).ConfigureAwait(false);
        foreach (var node in nodes.EnumerateArray())
        {
            if (StringField(node, "node-name") == nodeName) return node;
        }
        throw QmpException.CommandError(SocketPath, command, "DeviceNotFound", $"no block node named '{nodeName}'");
    }

    private static bool Bool(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static string? StringField(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
