using BlockRepl.Storage;
using BlockRepl.Storage.S3;

namespace BlockRepl.Engine.Repository;

/// <summary>
/// Turns a <c>--repo</c> argument into a backend: a local directory, or <c>s3://bucket[/prefix]</c>
/// (S3 or an S3-compatible store; <paramref name="endpointUrl"/> parameters are <c>--endpoint-url</c>,
/// which beats <c>AWS_ENDPOINT_URL_S3</c> / <c>AWS_ENDPOINT_URL</c>). S3 backends are wrapped in a
/// <see cref="RetryingBackend"/>. <c>packStorageClass</c> parameters are <c>--storage-class</c>: the S3
/// storage class of packs (<c>data/</c>); everything else stays STANDARD (docs/s3.md). <c>decorate</c>
/// wraps the backend before the repository uses it (e.g. a <see cref="ThrottledBackend"/> for <c>--bwlimit</c>).
/// </summary>
public static class RepositoryLocator
{
    public static bool IsS3(string location) => S3Location.IsS3(location);

    public static IBackend CreateBackend(string location, string? endpointUrl = null, string? packStorageClass = null, Func<IBackend, IBackend>? decorate = null)
    {
        if (decorate is not null) return decorate(CreateBackend(location, endpointUrl, packStorageClass));
        if (string.IsNullOrWhiteSpace(location)) throw new UsageException("--repo is empty");
        if (IsS3(location))
        {
            try
            {
                return new RetryingBackend(new S3Backend(S3Location.Parse(location), new S3BackendOptions { EndpointUrl = endpointUrl }.WithPackStorageClass(packStorageClass)));
            }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            catch (StorageException e) { throw new UsageException($"repository '{location}': {e.Message}"); }
        }
        if (location.Contains("://", StringComparison.Ordinal))
            throw new UsageException($"repository '{location}': only local directories and s3://bucket[/prefix] are supported");
        if (endpointUrl is not null)
            throw new UsageException("--endpoint-url applies only to s3:// repositories");
        if (!string.IsNullOrWhiteSpace(packStorageClass))
            throw new UsageException("--storage-class applies only to s3:// repositories");
        return new LocalBackend(location);
    }

    /// <summary>Opens an existing repository (clear errors for missing paths and non-repositories).</summary>
    public static async Task<Repo> OpenAsync(string location, bool loadIndex = true, CancellationToken ct = default, string? endpointUrl = null, Func<IBackend, IBackend>? decorate = null)
    {
        if (!location.Contains("://", StringComparison.Ordinal))
        {
            if (File.Exists(location)) throw new RepositoryException($"'{location}' is a file, not a repository directory");
            if (!Directory.Exists(location)) throw new RepositoryException($"repository '{location}' does not exist; create it with 'blockrepl init --repo {location}' (backup creates it too)");
        }
        var backend = CreateBackend(location, endpointUrl, decorate: decorate);
        try { return await Repo.OpenAsync(backend, loadIndex, ct).ConfigureAwait(false); }
        catch { await backend.DisposeAsync().ConfigureAwait(false); throw; }
    }

    /// <summary>
    /// Opens a repository, creating it when the location does not exist or is empty (a directory
    /// without entries; for S3, no config object and no object under the prefix).
    /// </summary>
    public static async Task<(Repo Repo, bool Created)> OpenOrInitAsync(string location, int chunkSize, CancellationToken ct = default, string? endpointUrl = null, string? packStorageClass = null, Func<IBackend, IBackend>? decorate = null)
    {
        if (IsS3(location))
        {
            var backend = CreateBackend(location, endpointUrl, packStorageClass, decorate);
            try
            {
                if (await backend.StatAsync(Repo.ConfigKey, ct).ConfigureAwait(false) is not null)
                    return (await Repo.OpenAsync(backend, true, ct).ConfigureAwait(false), false);
                // Several servers of a fleet may run their first backup into one new prefix at once:
                // one create-only PUT of config wins, the others open the repository it created.
                if (await AnyObjectAsync(backend, ct).ConfigureAwait(false))
                {
                    if (await backend.StatAsync(Repo.ConfigKey, ct).ConfigureAwait(false) is not null)
                        return (await Repo.OpenAsync(backend, true, ct).ConfigureAwait(false), false);
                    throw new RepositoryException($"'{location}' is not empty and not a blockrepl repository (no config); choose an empty prefix");
                }
                try
                {
                    return (await Repo.InitAsync(backend, chunkSize, ct).ConfigureAwait(false), true);
                }
                catch (RepositoryException)
                {
                    if (await backend.StatAsync(Repo.ConfigKey, ct).ConfigureAwait(false) is null) throw;
                }
                return (await Repo.OpenAsync(backend, true, ct).ConfigureAwait(false), false);
            }
            catch { await backend.DisposeAsync().ConfigureAwait(false); throw; }
        }
        if (!string.IsNullOrWhiteSpace(packStorageClass))
            throw new UsageException("--storage-class applies only to s3:// repositories");
        bool fresh = !location.Contains("://", StringComparison.Ordinal)
            && (!Directory.Exists(location) || !Directory.EnumerateFileSystemEntries(location).Any())
            && !File.Exists(location);
        if (!fresh) return (await OpenAsync(location, true, ct, endpointUrl, decorate).ConfigureAwait(false), false);
        return (await InitAsync(location, chunkSize, ct, endpointUrl, decorate: decorate).ConfigureAwait(false), true);
    }

    public static async Task<Repo> InitAsync(string location, int chunkSize, CancellationToken ct = default, string? endpointUrl = null, string? packStorageClass = null, Func<IBackend, IBackend>? decorate = null)
    {
        if (!IsS3(location) && !string.IsNullOrWhiteSpace(packStorageClass))
            throw new UsageException("--storage-class applies only to s3:// repositories");
        if (!location.Contains("://", StringComparison.Ordinal))
        {
            if (File.Exists(location)) throw new RepositoryException($"'{location}' is a file, not a directory");
            if (Directory.Exists(location) && Directory.EnumerateFileSystemEntries(location).Any() && !File.Exists(Path.Combine(location, Repo.ConfigKey)))
                throw new RepositoryException($"'{location}' is not empty and not a blockrepl repository; choose an empty or new directory");
            try { Directory.CreateDirectory(location); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new RepositoryException($"cannot create repository directory '{location}': {e.Message}", e); }
        }
        var backend = CreateBackend(location, endpointUrl, packStorageClass, decorate);
        try
        {
            if (IsS3(location) && await backend.StatAsync(Repo.ConfigKey, ct).ConfigureAwait(false) is null && await AnyObjectAsync(backend, ct).ConfigureAwait(false))
                throw new RepositoryException($"'{location}' is not empty and not a blockrepl repository; choose an empty prefix");
            return await Repo.InitAsync(backend, chunkSize, ct).ConfigureAwait(false);
        }
        catch { await backend.DisposeAsync().ConfigureAwait(false); throw; }
    }

    private static async Task<bool> AnyObjectAsync(IBackend backend, CancellationToken ct)
    {
        await foreach (var _ in backend.ListAsync("", ct).ConfigureAwait(false)) return true;
        return false;
    }
}
