using BlockRepl.Engine.Ebs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Sources;
using Serilog;

namespace BlockRepl.Engine.Jobs;

/// <summary>
/// One read of a source into its targets — a repository, an EBS chain, or both fed by the same read — inside
/// <see cref="TrackedRun"/>, so a tracked source's checkpoint is committed only when every target recorded it.
/// The one sequence `backup`, `demo` and the daemon share. The repository's shared lock (docs/format.md §8) is held
/// around the repository job, so no prune deletes what the job deduplicates against.
/// </summary>
public static class ReplicationRun
{
    /// <param name="options">For the repository job; its <see cref="BackupOptions.Observer"/> must be <paramref name="ebs"/>.</param>
    /// <param name="locks">How the repository's shared lock waits for a running prune (default: <see cref="LockOptions.Default"/>).</param>
    /// <param name="watch">Called with each job's progress while it runs (a progress printer, the daemon's status); disposed after.</param>
    public static Task<(BackupResult? Repository, EbsResult? Ebs)> RunAsync(IBlockSource source, Repo? repo, BackupOptions options,
        EbsReplicator? ebs, Func<JobProgress, IDisposable?> watch, ILogger log, CancellationToken ct, LockOptions? locks = null)
    {
        if (repo is null && ebs is null) throw new ArgumentException("a repository, an EBS chain or both");
        if (!ReferenceEquals(options.Observer, ebs)) throw new ArgumentException("options.Observer must be the EBS replicator", nameof(options));
        return TrackedRun.RunAsync(source, async () =>
        {
            if (repo is null)
            {
                using (watch(ebs!.Progress))
                    return ((BackupResult?)null, (EbsResult?)await ebs.RunAsync(source, options.Workers, options.DropSourceCache, ct).ConfigureAwait(false));
            }
            if (ebs is not null) await ebs.PrepareAsync(source, ct).ConfigureAwait(false);
            var job = new BackupJob(repo, options, log);
            BackupResult result;
            await using (var held = await repo.LockSharedAsync(locks ?? LockOptions.Default, log, ct).ConfigureAwait(false))
            {
                using var lockedCt = CancellationTokenSource.CreateLinkedTokenSource(ct, held.Lost);
                using (watch(job.Progress)) result = await job.RunAsync(source, lockedCt.Token).ConfigureAwait(false);
            }
            EbsResult? ebsResult = null;
            if (ebs is not null)
                using (watch(ebs.Progress)) ebsResult = await ebs.FinishAsync(ct).ConfigureAwait(false);
            return ((BackupResult?)result, ebsResult);
        }, ct);
    }
}
