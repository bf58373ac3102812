using BlockRepl.Storage;

namespace BlockRepl.Engine.Repository;

/// <summary>Turns a <c>--repo</c> argument into a backend. Local directories today; s3:// plugs in here.</summary>
public static class RepositoryLocator
{
    public static IBackend CreateBackend(string location)
    {
        if (string.IsNullOrWhiteSpace(location)) throw new UsageException("--repo is empty");
        if (location.Contains("://", StringComparison.Ordinal))
            throw new UsageException($"repository '{location}': only local directories are supported by this version");
        return new LocalBackend(location);
    }

    /// <summary>Opens an existing repository (clear errors for missing paths and non-repositories).</summary>
    public static async Task<Repo> OpenAsync(string location, bool loadIndex = true, CancellationToken ct = default)
    {
        if (!location.Contains("://", StringComparison.Ordinal))
        {
            if (File.Exists(location)) throw new RepositoryException($"'{location}' is a file, not a repository directory");
            if (!Directory.Exists(location)) throw new RepositoryException($"repository '{location}' does not exist; create it with 'blockrepl init --repo {location}' (backup creates it too)");
        }
        var backend = CreateBackend(location);
        try { return await Repo.OpenAsync(backend, loadIndex, ct).ConfigureAwait(false); }
        catch { await backend.DisposeAsync().ConfigureAwait(false); throw; }
    }

    /// <summary>Opens a repository, creating it when the location does not exist or is an empty directory.</summary>
    public static async Task<(Repo Repo, bool Created)> OpenOrInitAsync(string location, int chunkSize, CancellationToken ct = default)
    {
        bool fresh = !location.Contains("://", StringComparison.Ordinal)
            && (!Directory.Exists(location) || !Directory.EnumerateFileSystemEntries(location).Any())
            && !File.Exists(location);
        if (!fresh) return (await OpenAsync(location, true, ct).ConfigureAwait(false), false);
        return (await InitAsync(location, chunkSize, ct).ConfigureAwait(false), true);
    }

    public static async Task<Repo> InitAsync(string location, int chunkSize, CancellationToken ct = default)
    {
        if (!location.Contains("://", StringComparison.Ordinal))
        {
            if (File.Exists(location)) throw new RepositoryException($"'{location}' is a file, not a directory");
            if (Directory.Exists(location) && Directory.EnumerateFileSystemEntries(location).Any() && !File.Exists(Path.Combine(location, Repo.ConfigKey)))
                throw new RepositoryException($"'{location}' is not empty and not a blockrepl repository; choose an empty or new directory");
            try { Directory.CreateDirectory(location); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new RepositoryException($"cannot create repository directory '{location}': {e.Message}", e); }
        }
        var backend = CreateBackend(location);
        try { return await Repo.InitAsync(backend, chunkSize, ct).ConfigureAwait(false); }
        catch { await backend.DisposeAsync().ConfigureAwait(false); throw; }
    }
}
