using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using BlockRepl.Native.Linux;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.Storage;

/// <summary>
/// A repository in a local directory. Objects are published like this: write to <c>tmp/</c>, fsync,
/// link(2) to the final name (fails if it exists: create-only), unlink the temp name, fsync the directory.
/// A crash leaves at most an orphaned file in <c>tmp/</c>, never a partial object.
/// </summary>
public sealed class LocalBackend : IBackend
{
    public const string TempDirectory = "tmp";
    private readonly string _root;
    private readonly ConcurrentDictionary<string, SafeFileHandle> _readHandles = new(StringComparer.Ordinal);
    private const int MaxCachedHandles = 256;

    public LocalBackend(string root)
    {
        _root = Path.GetFullPath(root);
    }

    public string Location => _root;
    public string Root => _root;

    private string PathOf(string key)
    {
        if (key.Length == 0 || key.StartsWith('/') || key.Contains("..", StringComparison.Ordinal) || key.Contains('\\'))
            throw new ArgumentException($"invalid object key '{key}'", nameof(key));
        return Path.Combine(_root, key);
    }

    public ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default)
    {
        string final = PathOf(key);
        string tmpDir = Path.Combine(_root, TempDirectory);
        Directory.CreateDirectory(tmpDir);
        string tmp = Path.Combine(tmpDir, $"{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        // Unbuffered: callers write whole blobs or whole small objects, and a per-object FileStream buffer
        // (allocated anew for each stream) was most of a backup's garbage.
        var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 0, FileOptions.None);
        return ValueTask.FromResult<IObjectUpload>(new LocalUpload(key, final, tmp, stream));
    }

    public ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        for (int attempt = 0; ; attempt++)
        {
            var handle = GetReadHandle(key);
            try
            {
                int total = 0;
                while (total < buffer.Length)
                {
                    int n = RandomAccess.Read(handle, buffer.Span[total..], offset + total);
                    if (n == 0) break;
                    total += n;
                }
                return ValueTask.FromResult(total);
            }
            catch (ObjectDisposedException) when (attempt < 3)
            {
                // Another thread evicted the cached handle between lookup and use; reopen.
            }
        }
    }

    private SafeFileHandle GetReadHandle(string key)
    {
        if (_readHandles.TryGetValue(key, out var h) && !h.IsClosed) return h;
        SafeFileHandle opened;
        try
        {
            opened = File.OpenHandle(PathOf(key), FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (FileNotFoundException) { throw new ObjectNotFoundException(key); }
        catch (DirectoryNotFoundException) { throw new ObjectNotFoundException(key); }
        catch (IOException e) { throw new StorageException($"{key}: {e.Message}", transient: false, e); }
        catch (UnauthorizedAccessException e) { throw new StorageException($"{key}: {e.Message}", transient: false, e); }
        if (_readHandles.Count >= MaxCachedHandles)
        {
            // Immutable files: closing is only a cache miss. SafeHandle ref-counting defers the close
            // of a handle that another thread is reading from.
            foreach (var kv in _readHandles)
                if (_readHandles.TryRemove(kv.Key, out var old)) old.Dispose();
        }
        if (!_readHandles.TryAdd(key, opened))
        {
            opened.Dispose();
            return _readHandles.TryGetValue(key, out var other) ? other : GetReadHandle(key);
        }
        return opened;
    }

    public async ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default)
    {
        try
        {
            return await File.ReadAllBytesAsync(PathOf(key), ct).ConfigureAwait(false);
        }
        catch (FileNotFoundException) { throw new ObjectNotFoundException(key); }
        catch (DirectoryNotFoundException) { throw new ObjectNotFoundException(key); }
        catch (IOException e) { throw new StorageException($"{key}: {e.Message}", transient: false, e); }
        catch (UnauthorizedAccessException e) { throw new StorageException($"{key}: {e.Message}", transient: false, e); }
    }

    public ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        var fi = new FileInfo(PathOf(key));
        return ValueTask.FromResult<ObjectInfo?>(fi.Exists ? new ObjectInfo(key, fi.Length) : null);
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        int slash = prefix.LastIndexOf('/');
        string dir = slash < 0 ? _root : Path.Combine(_root, prefix[..slash]);
        if (!Directory.Exists(dir)) yield break;
        var options = new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = false, AttributesToSkip = 0 };
        foreach (var file in new DirectoryInfo(dir).EnumerateFiles("*", options))
        {
            ct.ThrowIfCancellationRequested();
            string key = Path.GetRelativePath(_root, file.FullName).Replace('\\', '/');
            if (key.StartsWith(TempDirectory + "/", StringComparison.Ordinal)) continue;
            if (!key.StartsWith(prefix, StringComparison.Ordinal)) continue;
            yield return new ObjectInfo(key, file.Length);
        }
        await Task.CompletedTask.ConfigureAwait(false);
    }

    public ValueTask DeleteAsync(string key, CancellationToken ct = default)
    {
        if (_readHandles.TryRemove(key, out var h)) h.Dispose();
        string path = PathOf(key);
        string dir = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(dir)) return ValueTask.CompletedTask;   // already gone
        File.Delete(path);
        LinuxFile.FsyncDirectory(dir);
        return ValueTask.CompletedTask;
    }

    /// <summary>Removes temp files of uploads abandoned by crashed writers (older than <paramref name="age"/>).</summary>
    public int CleanupStaleTemp(TimeSpan age)
    {
        string tmpDir = Path.Combine(_root, TempDirectory);
        if (!Directory.Exists(tmpDir)) return 0;
        int removed = 0;
        foreach (var f in new DirectoryInfo(tmpDir).EnumerateFiles("*.tmp"))
        {
            if (DateTime.UtcNow - f.LastWriteTimeUtc < age) continue;
            try { f.Delete(); removed++; } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        return removed;
    }

    public ValueTask DisposeAsync()
    {
        foreach (var kv in _readHandles)
            if (_readHandles.TryRemove(kv.Key, out var h)) h.Dispose();
        return ValueTask.CompletedTask;
    }

    private sealed class LocalUpload(string key, string finalPath, string tempPath, FileStream stream) : IObjectUpload
    {
        private bool _committed;
        public string Key => key;
        public Stream Stream => stream;

        public async ValueTask CommitAsync(CancellationToken ct = default)
        {
            await stream.FlushAsync(ct).ConfigureAwait(false);
            stream.Flush(flushToDisk: true);
            await stream.DisposeAsync().ConfigureAwait(false);
            string dir = Path.GetDirectoryName(finalPath)!;
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(dir);
                LinuxFile.FsyncDirectory(Path.GetDirectoryName(dir)!);
            }
            if (!LinuxFile.TryLinkNoReplace(tempPath, finalPath))
            {
                File.Delete(tempPath);
                throw new ObjectExistsException(key);
            }
            File.Delete(tempPath);
            LinuxFile.FsyncDirectory(dir);
            _committed = true;
        }

        public async ValueTask DisposeAsync()
        {
            if (_committed) return;
            await stream.DisposeAsync().ConfigureAwait(false);
            try { File.Delete(tempPath); } catch (IOException) { }
        }
    }
}
