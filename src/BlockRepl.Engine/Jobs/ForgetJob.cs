using BlockRepl.Core.Formats;
using BlockRepl.Engine.Repository;

namespace BlockRepl.Engine.Jobs;

/// <summary>
/// Deletes recovery points (their manifests) by id or unique prefix. The data stays until a prune. No lock is taken:
/// deleting a manifest can only make a concurrent prune keep more than it needs, never less, and a backup whose
/// parent disappears still finds every blob it deduplicates against (the packs are untouched).
/// </summary>
public static class ForgetJob
{
    /// <summary>Resolves every selection first (so a typo deletes nothing), then deletes the manifests; returns them.</summary>
    public static async Task<List<Manifest>> RunAsync(Repo repo, IReadOnlyList<string> selection, bool dryRun, CancellationToken ct = default)
    {
        if (selection.Count == 0) throw new UsageException("forget needs at least one recovery point id (see 'blockrepl snapshots')");
        if (selection.Contains("latest")) throw new UsageException("forget takes ids or unique prefixes, not 'latest'");
        var manifests = await CopyJob.SelectAsync(repo, selection, ct).ConfigureAwait(false);
        if (!dryRun)
            foreach (var m in manifests)
                await repo.Backend.DeleteAsync(Repo.SnapshotKey(m.Id), ct).ConfigureAwait(false);
        return manifests;
    }
}
