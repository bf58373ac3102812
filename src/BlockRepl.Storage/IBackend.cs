namespace BlockRepl.Storage;

/// <summary>Metadata of a stored object.</summary>
public readonly record struct ObjectInfo(string Key, long Length);

/// <summary>
/// Where a repository's objects live: a local directory now, an S3 bucket or other stores later.
/// Keys are relative, '/'-separated (e.g. <c>data/ab/ab12….pack</c>). Objects are write-once:
/// a committed object never changes, so readers need no locks. Retry, throttling and fault
/// injection are decorators around this interface, never flags inside an implementation.
/// </summary>
public interface IBackend : IAsyncDisposable
{
    /// <summary>Human-readable location (no secrets) for messages.</summary>
    string Location { get; }

    /// <summary>
    /// Starts writing a new object. Nothing is visible under <paramref name="key"/> until
    /// <see cref="IObjectUpload.CommitAsync"/> has returned, and then all of it is durable.
    /// </summary>
    ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default);

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>; returns the count (short only at the end).</summary>
    ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default);

    /// <summary>Reads a whole (small) object.</summary>
    ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default);

    /// <summary>Length of the object, or null when it does not exist.</summary>
    ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default);

    /// <summary>Committed objects whose key starts with <paramref name="prefix"/>, in no particular order.</summary>
    IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken ct = default);

    /// <summary>Removes an object; no error when it is already gone.</summary>
    ValueTask DeleteAsync(string key, CancellationToken ct = default);
}

/// <summary>An object being written. Disposing without committing abandons it (nothing becomes visible).</summary>
public interface IObjectUpload : IAsyncDisposable
{
    string Key { get; }
    /// <summary>Append-only stream for the object's bytes.</summary>
    Stream Stream { get; }
    /// <summary>
    /// Makes the object durable and visible. Create-only: throws <see cref="ObjectExistsException"/>
    /// when an object with the key already exists.
    /// </summary>
    ValueTask CommitAsync(CancellationToken ct = default);
}

/// <summary>Convenience operations over <see cref="IBackend"/>.</summary>
public static class BackendExtensions
{
    public static async ValueTask PutAsync(this IBackend backend, string key, ReadOnlyMemory<byte> content, CancellationToken ct = default)
    {
        await using var upload = await backend.CreateAsync(key, ct).ConfigureAwait(false);
        await upload.Stream.WriteAsync(content, ct).ConfigureAwait(false);
        await upload.CommitAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Reads exactly buffer.Length bytes or throws <see cref="StorageException"/>.</summary>
    public static async ValueTask ReadExactlyAtAsync(this IBackend backend, string key, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        int n = await backend.ReadAtAsync(key, offset, buffer, ct).ConfigureAwait(false);
        if (n != buffer.Length)
            throw new StorageException($"{key}: expected {buffer.Length} bytes at offset {offset}, got {n} (object truncated)", transient: false);
    }
}
