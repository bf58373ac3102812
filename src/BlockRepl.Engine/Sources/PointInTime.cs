using System.Security.Cryptography;
using System.Text;
using BlockRepl.Engine.Ebs;
using BlockRepl.Native.Linux;
using Serilog;

namespace BlockRepl.Engine.Sources;

/// <summary>How a run fixes the instant it reads (docs/daemon.md §4, "Point in time").</summary>
public enum PointInTimeMode
{
    /// <summary>The best the source offers: a QEMU checkpoint, a reflink clone of an image file, else a fuzzy read.</summary>
    Auto,
    /// <summary>A reflink clone of an image file, or an error: never a silent fuzzy read.</summary>
    Reflink,
    /// <summary>Read the volume live (fuzzy).</summary>
    None,
}

/// <summary>What a run's recovery point shows, as the status and the server points name it.</summary>
public static class ViewKinds
{
    public const string QemuCheckpoint = "qemu-checkpoint";
    public const string Reflink = "reflink";
    public const string ReflinkFrozen = "reflink+fsfreeze";
    /// <summary>No point-in-time view: the volume was read while it changed (fuzzy).</summary>
    public const string None = "none";
}

/// <summary>A source opened for one run with its view: dispose it after the run (a clone is deleted then).</summary>
/// <param name="Source">What to read; for a clone, reads the clone but names (and keys its change map by) the original.</param>
/// <param name="View">One of <see cref="ViewKinds"/>.</param>
/// <param name="FuzzyReason">Why there is no view, when <see cref="View"/> is <see cref="ViewKinds.None"/>.</param>
public sealed record SourceView(IBlockSource Source, string View, string? FuzzyReason) : IDisposable
{
    public bool Consistent => View != ViewKinds.None;
    public void Dispose() => Source.Dispose();
}

/// <summary>
/// Point-in-time views of plain image files: a reflink clone (ioctl FICLONE) in a hidden directory next to the
/// image, taken in one atomic step, optionally inside a brief freeze of a filesystem (<see cref="FilesystemFreeze"/>).
/// Block devices have none here (no device-mapper in the kernels this runs on; docs/daemon.md §4).
/// </summary>
public static class PointInTime
{
    /// <summary>The hidden directory, next to the image, that holds its clones while a run reads them.</summary>
    public const string CloneDirectoryName = ".blockrepl-views";
    private const string CloneExtension = ".clone";

    /// <summary><c>auto</c>, <c>reflink</c> or <c>none</c> (any case); null for anything else.</summary>
    public static PointInTimeMode? ParseMode(string text) => text.Trim().ToLowerInvariant() switch
    {
        "auto" => PointInTimeMode.Auto,
        "reflink" => PointInTimeMode.Reflink,
        "none" => PointInTimeMode.None,
        _ => null,
    };

    /// <summary>
    /// Opens <paramref name="source"/> for one run with the best view <paramref name="mode"/> allows. QEMU sources
    /// (their checkpoint is taken by the run) and NBD exports are opened as they are. <paramref name="freeze"/>, a
    /// mount point, is frozen only while the clone is taken, at most <see cref="FilesystemFreeze.MaxFreeze"/>.
    /// </summary>
    /// <exception cref="SourceException">The source is unusable, or <see cref="PointInTimeMode.Reflink"/> cannot be honoured.</exception>
    public static SourceView Open(string source, PointInTimeMode mode, string? freeze, string stateDir, ILogger log)
    {
        if (QemuSource.IsQemu(source) || NbdBlockSource.IsNbd(source))
        {
            if (mode == PointInTimeMode.Reflink || freeze is not null)
                throw new SourceException($"source '{source}': a reflink clone or a freeze needs an image file; QEMU sources take their own checkpoint");
            var opened = BlockSource.OpenAny(source);
            return opened is ITrackedSource
                ? new SourceView(opened, ViewKinds.QemuCheckpoint, null)
                : new SourceView(opened, ViewKinds.None, "an NBD export has no point-in-time view");
        }
        var plain = BlockSource.Open(source);
        try
        {
            if (mode == PointInTimeMode.None && freeze is null) return new SourceView(plain, ViewKinds.None, "pointInTime is none");
            if (plain.Kind != SourceKind.ImageFile)
            {
                if (mode == PointInTimeMode.Reflink || freeze is not null)
                    throw new SourceException($"source '{source}' is a block device: a reflink clone or a freeze needs an image file (docs/daemon.md §4)");
                return new SourceView(plain, ViewKinds.None, "a block device has no point-in-time view here (no device-mapper snapshot)");
            }
            if (mode == PointInTimeMode.None)
                throw new SourceException($"source '{source}': a freeze needs pointInTime auto or reflink (the freeze only lasts while the clone is taken)");
            var (clone, reason) = TryClone(plain, freeze, stateDir, log);
            if (clone is not null)
            {
                plain.Dispose();
                return clone;
            }
            if (mode == PointInTimeMode.Reflink)
                throw new SourceException($"source '{source}': no reflink clone: {reason}; use XFS (mkfs.xfs -m reflink=1) or btrfs, or pointInTime auto/none");
            return new SourceView(plain, ViewKinds.None, reason);
        }
        catch
        {
            plain.Dispose();
            throw;
        }
    }

    /// <summary>The clone, or null and why not (no reflink on that filesystem, or the hidden directory is unusable).</summary>
    private static (SourceView? View, string? Reason) TryClone(BlockSource image, string? freeze, string stateDir, ILogger log)
    {
        string dir = Path.Combine(Path.GetDirectoryName(image.Path)!, CloneDirectoryName);
        string clonePath = Path.Combine(dir, $"{Path.GetFileName(image.Path)}.{Environment.ProcessId}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}{CloneExtension}");
        FileStream target;
        try
        {
            RemoveStaleClones(dir, log);
            target = CreateClone(dir, clonePath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, $"cannot create a clone in '{dir}': {e.Message}");
        }
        bool keep = false;
        try
        {
            bool cloned, heldThroughout = true;
            int errno;
            using (var frozen = freeze is null ? null : FilesystemFreeze.Begin(freeze, stateDir, log))
            {
                cloned = LinuxFile.TryClone(image.Handle, target.SafeFileHandle, image.Path, out errno);
                if (frozen is not null) heldThroughout = frozen.End();
            }
            if (!cloned)
                return (null, $"the filesystem of '{image.Path}' cannot make reflink clones ({new NativeIoException(errno, "ioctl(FICLONE)", null).Message})");
            var view = new CloneSource(image.Path, BlockSource.Open(clonePath), target, clonePath);
            keep = true;
            string kind = freeze is not null && heldThroughout ? ViewKinds.ReflinkFrozen : ViewKinds.Reflink;
            return (new SourceView(view, kind, null), null);
        }
        catch (NativeIoException e)
        {
            throw new SourceException($"cannot clone '{image.Path}': {e.Message}", e);
        }
        finally
        {
            if (!keep)
            {
                TryDelete(clonePath);
                target.Dispose();
                TryRemoveEmpty(dir);
            }
        }
    }

    /// <summary>
    /// Creates the empty clone file (and the hidden directory, which is removed again when a run leaves it empty, so
    /// images on filesystems without reflink do not keep one): a shared flock is held while the clone exists, which
    /// is how <see cref="RemoveStaleClones"/> tells a live clone from one a killed run left.
    /// </summary>
    private static FileStream CreateClone(string dir, string clonePath)
    {
        for (int attempt = 0; ; attempt++)
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            try
            {
                return new FileStream(clonePath, new FileStreamOptions
                {
                    Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.ReadWrite, BufferSize = 0,
                    UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
                });
            }
            catch (DirectoryNotFoundException) when (attempt < 3) { } // another run removed the directory just now
        }
    }

    private static void TryRemoveEmpty(string dir)
    {
        try { Directory.Delete(dir); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Deletes clones in <paramref name="directory"/> that no run holds (a run killed with SIGKILL leaves its clone;
    /// its flock went with it). Returns how many were removed.
    /// </summary>
    public static int RemoveStaleClones(string directory, ILogger log)
    {
        int removed = 0;
        if (!Directory.Exists(directory)) return 0;
        foreach (var path in Directory.EnumerateFiles(directory, "*" + CloneExtension))
        {
            try
            {
                using var probe = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.None);
                File.Delete(path);
                removed++;
                log.Information("Removed the stale clone {Path} left by an interrupted run", path);
            }
            catch (IOException) { } // held by a run in progress (or gone meanwhile)
            catch (UnauthorizedAccessException) { }
        }
        TryRemoveEmpty(directory);
        return removed;
    }

    /// <summary>The hidden clone directory of an image file source (for sweeping stale clones at start).</summary>
    public static string CloneDirectory(string imagePath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(imagePath))!, CloneDirectoryName);

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Reads a clone under the original's name: <see cref="Path"/> and <see cref="SourceKey"/> are the image's, so
    /// messages, manifests, change maps and EBS chains stay those of the image whatever the clone is called.
    /// </summary>
    private sealed class CloneSource(string original, BlockSource clone, FileStream hold, string clonePath) : IBlockSource
    {
        public string Path => original;
        public string SourceKey => original;
        public long Size => clone.Size;
        public bool DirectIo => clone.DirectIo;
        public bool TryEnableDirectIo() => clone.TryEnableDirectIo();
        public long NextData(long offset) => clone.NextData(offset);
        public int ReadBatch(Memory<byte> alignedBuffer, long offset, int length) => clone.ReadBatch(alignedBuffer, offset, length);
        // The clone is deleted right after the run: its pages are worth nothing to anyone.
        public void DropCache(long offset, long length) => clone.DropCache(offset, length);

        public void Dispose()
        {
            clone.Dispose();
            TryDelete(clonePath);
            hold.Dispose();
            TryRemoveEmpty(System.IO.Path.GetDirectoryName(clonePath)!);
        }
    }
}

/// <summary>
/// A filesystem frozen (FIFREEZE) for at most <see cref="MaxFreeze"/>: thawed by <see cref="End"/>/<see cref="Dispose"/>,
/// or by a watchdog timer whatever the caller does. A record in the state directory, written before the freeze and
/// deleted after the thaw, lets <see cref="ThawStale"/> at the next start thaw what a killed process left frozen.
/// Record format: docs/daemon.md §4.
/// </summary>
public sealed class FilesystemFreeze : IDisposable
{
    /// <summary>The longest a filesystem stays frozen, whatever happens.</summary>
    public static readonly TimeSpan MaxFreeze = TimeSpan.FromSeconds(10);
    private const string RecordPrefix = "frozen-";

    private readonly string _mountPoint, _record;
    private readonly ILogger _log;
    private readonly Timer _watchdog;
    private int _thawed; // 0 frozen, 1 thawed by End, 2 thawed by the watchdog

    private FilesystemFreeze(string mountPoint, string record, ILogger log, TimeSpan limit)
    {
        _mountPoint = mountPoint;
        _record = record;
        _log = log;
        _watchdog = new Timer(_ => Thaw(byWatchdog: true), null, limit, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Freezes the filesystem mounted at <paramref name="mountPoint"/>; the state directory must not be on it.</summary>
    /// <exception cref="SourceException">It cannot be frozen (already frozen, not supported, not root…); nothing is left frozen.</exception>
    public static FilesystemFreeze Begin(string mountPoint, string stateDir, ILogger log, TimeSpan? limit = null)
    {
        string record = RecordPath(stateDir, mountPoint);
        Directory.CreateDirectory(stateDir);
        StateFile.WriteAtomically(record, s =>
        {
            using var w = new System.Text.Json.Utf8JsonWriter(s);
            w.WriteStartObject();
            w.WriteNumber("version", 1);
            w.WriteString("mountPoint", mountPoint);
            w.WriteNumber("pid", Environment.ProcessId);
            w.WriteString("frozenAt", DateTimeOffset.UtcNow);
            w.WriteEndObject();
        });
        try { LinuxFile.Freeze(mountPoint); }
        catch (NativeIoException e)
        {
            File.Delete(record);
            throw new SourceException($"cannot freeze '{mountPoint}': {e.Message}", e);
        }
        return new FilesystemFreeze(mountPoint, record, log, limit ?? MaxFreeze);
    }

    /// <summary>Thaws now; false when the watchdog had already thawed it (the freeze did not cover the whole view).</summary>
    public bool End()
    {
        Thaw(byWatchdog: false);
        return Volatile.Read(ref _thawed) == 1;
    }

    public void Dispose() => End();

    private void Thaw(bool byWatchdog)
    {
        if (Interlocked.CompareExchange(ref _thawed, byWatchdog ? 2 : 1, 0) != 0) return;
        _watchdog.Dispose();
        try
        {
            if (!LinuxFile.TryThaw(_mountPoint)) _log.Warning("{MountPoint} was already thawed (by someone else?)", _mountPoint);
            File.Delete(_record);
            if (byWatchdog) _log.Warning("Thawed {MountPoint} after {Seconds} s, before the view was taken: this view is not quiesced", _mountPoint, MaxFreeze.TotalSeconds);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The record stays: the next start tries again.
            _log.Error("Cannot thaw {MountPoint}: {Error}; run fsfreeze -u on it", _mountPoint, e.Message);
        }
    }

    /// <summary>Thaws every filesystem a killed process left frozen (its record is still there); returns how many records were handled.</summary>
    public static int ThawStale(string stateDir, ILogger log)
    {
        if (!Directory.Exists(stateDir)) return 0;
        int n = 0;
        foreach (var record in Directory.EnumerateFiles(stateDir, RecordPrefix + "*.json"))
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(record));
                string mountPoint = doc.RootElement.GetProperty("mountPoint").GetString()
                    ?? throw new System.Text.Json.JsonException("no mountPoint");
                if (LinuxFile.TryThaw(mountPoint)) log.Warning("Thawed {MountPoint}, left frozen by an interrupted run", mountPoint);
                File.Delete(record);
                n++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException or KeyNotFoundException or InvalidOperationException)
            {
                log.Error("Cannot handle the freeze record {Record}: {Error}; thaw its filesystem with 'fsfreeze -u', then delete it", record, e.Message);
            }
        }
        return n;
    }

    /// <summary>STATEDIR/frozen-HASH.json: one record per mount point.</summary>
    public static string RecordPath(string stateDir, string mountPoint) =>
        Path.Combine(stateDir, $"{RecordPrefix}{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(mountPoint)))[..16]}.json");
}
