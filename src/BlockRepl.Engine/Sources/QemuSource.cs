using System.Globalization;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using BlockRepl.Nbd;
using BlockRepl.Qemu;
using Serilog;

namespace BlockRepl.Engine.Sources;

/// <summary>
/// A QEMU volume with change tracking by persistent dirty bitmaps (docs/tracking.md):
/// <list type="bullet">
/// <item><c>qcow2:PATH</c>, an image nobody else has open: BlockRepl runs qemu-storage-daemon on it for the
/// length of the run (holding it, so nothing writes it meanwhile) and manages the bitmaps itself.</item>
/// <item><c>qmp:SOCKET?node=NODE[&amp;nbd=SOCKET]</c>, a node of a running QEMU or qemu-storage-daemon: each
/// checkpoint fleeces a point-in-time view in the same QMP transaction that starts the next bitmap.</item>
/// </list>
/// Checkpoint bitmaps are named <c>blockrepl-GEN-RAND</c>: generation GEN+1 is added (recording, persistent) in the
/// transaction that freezes GEN, so every write lands in exactly one generation from the first checkpoint on. A run
/// since base generation B merges B … GEN into a temporary disabled bitmap, exports it with the view over NBD, and
/// reads the dirty extents, rounded out to 512 KiB blocks. Generations older than the new one are removed only on
/// <see cref="CommitCheckpointAsync"/>, i.e. once every target has recorded the new checkpoint; a failed or killed run
/// leaves them, and the next run merges them again.
/// </summary>
public sealed partial class QemuSource : ITrackedSource
{
    private const string Prefix = "blockrepl-";
    private static readonly TimeSpan QmpTimeout = TimeSpan.FromMinutes(2);

    private readonly QemuStorageDaemon? _daemon;   // qcow2:PATH — ours for the run
    private readonly QmpClient _qmp;
    private readonly string _node;
    private readonly string? _nbdSocket;            // qmp: with an NBD server already running
    private readonly string _runtimeDir;
    private readonly ILogger _log;
    private NbdBlockSource? _reader;
    private Active? _active;
    private bool _disposed;

    /// <summary>What a begun checkpoint set up, torn down by commit or abort.</summary>
    private sealed class Active
    {
        public required string NewBitmap;
        public required int NewGeneration;
        public string? TempBitmap;
        public string? ExportId;
        public string? FleeceNode;
        public string? FleeceJob;
        public string? ScratchFile;
        public List<string> Merged = [];
    }

    private QemuSource(string path, string sourceKey, QemuStorageDaemon? daemon, QmpClient qmp, string node, string? nbdSocket, string runtimeDir, long size)
    {
        Path = path;
        SourceKey = sourceKey;
        _daemon = daemon;
        _qmp = qmp;
        _node = node;
        _nbdSocket = nbdSocket;
        _runtimeDir = runtimeDir;
        Size = size;
        _log = Log.ForContext<QemuSource>();
    }

    public string Path { get; }
    public string SourceKey { get; }
    public long Size { get; }
    public bool DirectIo => false;
    public bool TryEnableDirectIo() => false;
    public int MaxConcurrentReads => 8;
    public void DropCache(long offset, long length) { }

    /// <summary>True when <paramref name="text"/> names a QEMU source (<c>qcow2:</c> or <c>qmp:</c>).</summary>
    public static bool IsQemu(string text) => text.StartsWith("qcow2:", StringComparison.Ordinal) || text.StartsWith("qmp:", StringComparison.Ordinal);

    /// <summary>Opens a <c>qcow2:PATH</c> or <c>qmp:SOCKET?node=NODE[&amp;nbd=SOCKET]</c> source; one-line <see cref="SourceException"/> on failure.</summary>
    public static QemuSource Open(string text, CancellationToken ct = default)
    {
        try { return OpenAsync(text, ct).GetAwaiter().GetResult(); }
        catch (QmpException e) { throw new SourceException($"source '{text}': {e.Message}", e); }
        catch (NbdException e) { throw new SourceException($"source '{text}': {e.Message}", e); }
        catch (InvalidOperationException e) { throw new SourceException($"source '{text}': {e.Message}", e); }
        catch (IOException e) { throw new SourceException($"source '{text}': {e.Message}", e); }
    }

    private static async Task<QemuSource> OpenAsync(string text, CancellationToken ct)
    {
        string runtime = RuntimeDirectory();
        if (text.StartsWith("qcow2:", StringComparison.Ordinal))
        {
            string image = text["qcow2:".Length..];
            if (image.Length == 0) throw new SourceException("source 'qcow2:' names no image: use qcow2:/path/to/disk.qcow2");
            string full = System.IO.Path.GetFullPath(image);
            if (!File.Exists(full)) throw new SourceException($"source '{text}': image '{full}' does not exist");
            var daemon = await QemuStorageDaemon.StartAsync(new QemuStorageDaemonOptions
            {
                ImagePath = full,
                Format = "qcow2",
                NodeName = "blockrepl0",
                RuntimeDirectory = runtime,
                Writable = true,
            }, ct).ConfigureAwait(false);
            try
            {
                long size = await daemon.Qmp.QueryNodeSizeAsync(daemon.NodeName, ct).ConfigureAwait(false);
                return new QemuSource(text, "qcow2:" + full, daemon, daemon.Qmp, daemon.NodeName, daemon.NbdSocketPath, runtime, size);
            }
            catch
            {
                await daemon.DisposeAsync().ConfigureAwait(false);
                throw;
            }
        }

        var (socket, node, nbd) = ParseQmp(text);
        var qmp = await QmpClient.ConnectAsync(socket, QmpTimeout, ct).ConfigureAwait(false);
        try
        {
            long size = await qmp.QueryNodeSizeAsync(node, ct).ConfigureAwait(false);
            return new QemuSource(text, $"qmp:{socket}?node={node}", null, qmp, node, nbd, runtime, size);
        }
        catch
        {
            await qmp.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static (string Socket, string Node, string? Nbd) ParseQmp(string text)
    {
        string rest = text["qmp:".Length..];
        int q = rest.IndexOf('?');
        string socket = q < 0 ? rest : rest[..q];
        string? node = null, nbd = null;
        if (q >= 0)
        {
            foreach (var part in rest[(q + 1)..].Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                int eq = part.IndexOf('=');
                string key = eq < 0 ? part : part[..eq], value = eq < 0 ? "" : Uri.UnescapeDataString(part[(eq + 1)..]);
                switch (key)
                {
                    case "node": node = value; break;
                    case "nbd": nbd = System.IO.Path.GetFullPath(value); break;
                    default: throw new SourceException($"source '{text}': unknown parameter '{key}' (use node=NODE and optionally nbd=SOCKET)");
                }
            }
        }
        if (socket.Length == 0 || string.IsNullOrEmpty(node))
            throw new SourceException($"source '{text}' needs a QMP socket and a node: qmp:/run/vm/qmp.sock?node=NODE");
        return (System.IO.Path.GetFullPath(socket), node, nbd);
    }

    private static string RuntimeDirectory()
    {
        string baseDir = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } x ? x : System.IO.Path.GetTempPath();
        string dir = System.IO.Path.Combine(baseDir, $"blockrepl-{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    [GeneratedRegex("^blockrepl-([0-9]{1,9})-[0-9a-f]{8}$")]
    private static partial Regex CheckpointName();

    private static int Generation(string name)
    {
        var m = CheckpointName().Match(name);
        return m.Success ? int.Parse(m.Groups[1].ValueSpan, CultureInfo.InvariantCulture) : -1;
    }

    public async Task<ChangeSet> BeginCheckpointAsync(IReadOnlyList<string?> bases, int alignment, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_active is not null) throw new InvalidOperationException("a checkpoint is already in progress");
        try
        {
            var bitmaps = await _qmp.QueryBitmapsAsync(_node, ct).ConfigureAwait(false);
            var ours = bitmaps.Where(b => Generation(b.Name) >= 0).OrderBy(b => Generation(b.Name)).ToList();

            // A bitmap QEMU could not save (killed while it was loaded) is useless: drop it, and it cannot be a base.
            string? loss = null;
            foreach (var bad in ours.Where(b => b.Inconsistent).ToList())
            {
                loss ??= $"checkpoint bitmap '{bad.Name}' on node '{_node}' is inconsistent (QEMU stopped without saving it)";
                await _qmp.BitmapRemoveAsync(_node, bad.Name, ct).ConfigureAwait(false);
                ours.Remove(bad);
            }
            int newGeneration = ours.Count == 0 ? 1 : Generation(ours[^1].Name) + 1;
            var active = new Active
            {
                NewGeneration = newGeneration,
                NewBitmap = $"{Prefix}{newGeneration}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}",
            };

            // The changes since every base: generations from the oldest base to the newest, all present.
            List<string>? since = null;
            if (bases.Count > 0 && bases.All(b => b is not null) && loss is null)
            {
                int oldest = bases.Min(b => Generation(b!));
                string? missing = bases.FirstOrDefault(b => ours.All(o => o.Name != b));
                var chain = ours.Where(o => Generation(o.Name) >= oldest).ToList();
                bool contiguous = chain.Count > 0 && chain.Select((o, i) => Generation(o.Name) == oldest + i).All(x => x);
                if (oldest < 0 || missing is not null)
                    loss = $"checkpoint bitmap '{missing ?? bases[0]}' is not on node '{_node}' (removed, the image was replaced, or QEMU stopped before saving it)";
                else if (!contiguous)
                    loss = $"the checkpoint bitmaps of node '{_node}' since '{chain[0].Name}' have a gap";
                else
                    since = [.. chain.Select(o => o.Name)];
            }

            var actions = new List<QmpAction> { QmpAction.BitmapAdd(_node, active.NewBitmap, persistent: true, disabled: false) };
            if (since is not null)
            {
                active.TempBitmap = $"blockrepl-tmp-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
                actions.Add(QmpAction.BitmapAdd(_node, active.TempBitmap, persistent: false, disabled: true));
                actions.Add(QmpAction.BitmapMerge(_node, active.TempBitmap, since));
                active.Merged = since;
            }
            // The previous generations stop recording: from now on the new one has every write.
            foreach (var o in ours.Where(o => o.Recording)) actions.Add(QmpAction.BitmapDisable(_node, o.Name));

            string exportNode = _node;
            if (_daemon is null)
            {
                // A live node: a copy-before-write overlay keeps the view of this instant while the guest writes on.
                active.FleeceNode = $"blockrepl-fleece-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
                active.ScratchFile = System.IO.Path.Combine(_runtimeDir, active.FleeceNode + ".qcow2");
                await NewScratchAsync(active.ScratchFile, ct).ConfigureAwait(false);
                await _qmp.BlockdevAddQcow2OverlayAsync(active.FleeceNode, active.ScratchFile, _node, ct).ConfigureAwait(false);
                active.FleeceJob = active.FleeceNode;
                actions.Add(QmpAction.BlockdevBackup(active.FleeceJob, _node, active.FleeceNode, "none"));
                exportNode = active.FleeceNode;
            }
            _active = active;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await _qmp.TransactionAsync([.. actions], ct).ConfigureAwait(false);
            _log.Debug("{Source}: transaction in {Ms} ms", Path, clock.ElapsedMilliseconds);
            _log.Debug("{Source}: checkpoint {Bitmap} begun{Since}", Path, active.NewBitmap, since is null ? "" : " (changes since " + since[0] + ")");

            string nbdSocket = _nbdSocket ?? await StartNbdServerAsync(ct).ConfigureAwait(false);
            string exportName = "blockrepl-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            await _qmp.NbdExportAddAsync(exportName, exportNode, exportName, writable: false,
                active.TempBitmap is null ? [] : [active.TempBitmap], ct).ConfigureAwait(false);
            active.ExportId = exportName;
            string uri = NbdUri.Unix(nbdSocket, exportName).ToString();

            IReadOnlyList<ByteRange>? changed = null;
            if (active.TempBitmap is not null) changed = await DirtyRangesAsync(NbdUri.Unix(nbdSocket, exportName), active.TempBitmap, alignment, ct).ConfigureAwait(false);
            _log.Debug("{Source}: export and {Count} changed ranges at {Ms} ms", Path, changed?.Count, clock.ElapsedMilliseconds);
            _reader = await NbdBlockSource.OpenAsync(uri, ct).ConfigureAwait(false);
            if (_reader.Size != Size)
                throw new SourceException($"source '{Path}': the exported view is {_reader.Size} bytes, the node {Size}");
            return new ChangeSet(active.NewBitmap, changed, since is null ? loss : null);
        }
        catch
        {
            await AbortCheckpointAsync().ConfigureAwait(false);
            throw;
        }
    }

    private string? _startedNbdSocket;
    private string? _scratchTemplate;

    /// <summary>
    /// An empty qcow2 of the node's size for a fleecing overlay. qemu-img makes one template per source; each checkpoint
    /// copies it (a few hundred KiB) instead of starting a process, which under load is the slowest step of a cycle.
    /// </summary>
    private async Task NewScratchAsync(string path, CancellationToken ct)
    {
        if (_scratchTemplate is null)
        {
            string template = System.IO.Path.Combine(_runtimeDir, "scratch-template.qcow2");
            await QemuImg.CreateQcow2Async(template, Size, ct).ConfigureAwait(false);
            _scratchTemplate = template;
        }
        File.Copy(_scratchTemplate, path, overwrite: false);
    }

    private async Task<string> StartNbdServerAsync(CancellationToken ct)
    {
        if (_startedNbdSocket is not null) return _startedNbdSocket;
        string socket = System.IO.Path.Combine(_runtimeDir, "nbd.sock");
        try { await _qmp.NbdServerStartAsync(socket, ct).ConfigureAwait(false); }
        catch (QmpException e) when (e.Kind == QmpErrorKind.CommandFailed && e.Description is { } d && d.Contains("already", StringComparison.OrdinalIgnoreCase))
        {
            throw new SourceException($"source '{Path}': QEMU already runs an NBD server; name its unix socket with &nbd=SOCKET");
        }
        _startedNbdSocket = socket;
        return socket;
    }

    /// <summary>The dirty extents of <paramref name="bitmap"/> over the export, rounded out to <paramref name="alignment"/> and merged.</summary>
    private async Task<IReadOnlyList<ByteRange>> DirtyRangesAsync(NbdUri uri, string bitmap, int alignment, CancellationToken ct)
    {
        string context = NbdMetaContexts.QemuDirtyBitmap(bitmap);
        await using var client = await NbdClient.ConnectAsync(uri, new NbdConnectOptions { MetaContexts = [context] }, ct).ConfigureAwait(false);
        var ranges = new List<ByteRange>();
        const long Window = 1L << 30;
        for (long pos = 0; pos < client.Size; pos += Window)
        {
            var extents = await client.BlockStatusAsync(context, pos, Math.Min(Window, client.Size - pos), ct).ConfigureAwait(false);
            foreach (var e in extents)
            {
                if ((e.Flags & NbdMetaContexts.StateDirty) == 0) continue;
                long start = e.Offset - e.Offset % alignment;
                long end = Math.Min(client.Size, (e.End + alignment - 1) / alignment * alignment);
                if (ranges.Count > 0 && ranges[^1].End >= start)
                {
                    var last = ranges[^1];
                    ranges[^1] = new ByteRange(last.Offset, Math.Max(last.End, end) - last.Offset);
                }
                else ranges.Add(new ByteRange(start, end - start));
            }
        }
        return ranges;
    }

    public long NextData(long offset) => Reader.NextData(offset);
    public int ReadBatch(Memory<byte> alignedBuffer, long offset, int length) => Reader.ReadBatch(alignedBuffer, offset, length);
    public ValueTask<int> ReadBatchAsync(Memory<byte> alignedBuffer, long offset, int length) => Reader.ReadBatchAsync(alignedBuffer, offset, length);

    private NbdBlockSource Reader => _reader ?? throw new InvalidOperationException($"source '{Path}' is read only between BeginCheckpointAsync and its end");

    public async Task CommitCheckpointAsync(CancellationToken ct)
    {
        var active = _active;
        if (active is null) return;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await TeardownAsync(active).ConfigureAwait(false);
        long teardown = clock.ElapsedMilliseconds;
        _active = null;
        // The targets have the new checkpoint: generations before it are superseded.
        try
        {
            var bitmaps = await _qmp.QueryBitmapsAsync(_node, ct).ConfigureAwait(false);
            foreach (var b in bitmaps)
            {
                int g = Generation(b.Name);
                if (g >= 0 && g < active.NewGeneration) await _qmp.BitmapRemoveAsync(_node, b.Name, ct).ConfigureAwait(false);
            }
        }
        catch (QmpException e)
        {
            // Harmless: an old generation left behind is merged again or removed by the next commit.
            _log.Warning("{Source}: could not retire old checkpoint bitmaps: {Error}", Path, e.Message);
        }
        _log.Debug("{Source}: checkpoint {Bitmap} committed: view released in {Teardown} ms, older generations retired in {Retire} ms",
            Path, active.NewBitmap, teardown, clock.ElapsedMilliseconds - teardown);
    }

    public async Task AbortCheckpointAsync()
    {
        var active = _active;
        _active = null;
        if (active is not null) await TeardownAsync(active).ConfigureAwait(false);
    }

    /// <summary>Ends the point-in-time view: reader, export, fleecing job and overlay, temporary bitmap. Best effort, logged.</summary>
    private async Task TeardownAsync(Active active)
    {
        if (_reader is not null)
        {
            _reader.Dispose();
            _reader = null;
        }
        await Try(active.ExportId, id => _qmp.NbdExportDelAsync(id, hard: true, CancellationToken.None)).ConfigureAwait(false);
        await Try(active.FleeceJob, job => _qmp.BlockJobCancelAsync(job, CancellationToken.None)).ConfigureAwait(false);
        await Try(active.FleeceNode, node => _qmp.BlockdevDelAsync(node, CancellationToken.None)).ConfigureAwait(false);
        await Try(active.TempBitmap, b => _qmp.BitmapRemoveAsync(_node, b, CancellationToken.None)).ConfigureAwait(false);
        if (active.ScratchFile is not null)
        {
            try { File.Delete(active.ScratchFile); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }

        async Task Try(string? what, Func<string, Task> step)
        {
            if (what is null) return;
            try { await step(what).ConfigureAwait(false); }
            catch (QmpException e) { _log.Warning("{Source}: cleaning up {What}: {Error}", Path, what, e.Message); }
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        AbortCheckpointAsync().GetAwaiter().GetResult();
        if (_startedNbdSocket is not null)
        {
            try { _qmp.ExecuteAsync("nbd-server-stop").GetAwaiter().GetResult(); }
            catch (QmpException e) { _log.Warning("{Source}: stopping the NBD server: {Error}", Path, e.Message); }
        }
        if (_daemon is not null) _daemon.DisposeAsync().AsTask().GetAwaiter().GetResult(); // a clean quit saves the bitmaps
        else _qmp.DisposeAsync().AsTask().GetAwaiter().GetResult();
        try { Directory.Delete(_runtimeDir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
