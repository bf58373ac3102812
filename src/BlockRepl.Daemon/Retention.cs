using BlockRepl.Engine.Repository;

namespace BlockRepl.Daemon;

/// <summary>
/// Which server recovery points the daemon keeps (docs/daemon.md §5), by default like Elastic Disaster Recovery:
/// every point of the last hour, then the newest of each hour for a day, then the newest of each day for a week.
/// The newest point is always kept.
/// </summary>
public sealed record RetentionPolicy(TimeSpan AllFor, TimeSpan HourlyFor, TimeSpan DailyFor)
{
    public static RetentionPolicy Default { get; } = new(TimeSpan.FromHours(1), TimeSpan.FromHours(24), TimeSpan.FromDays(7));

    /// <summary>The ids to keep among <paramref name="points"/> (any order) at <paramref name="now"/>.</summary>
    public HashSet<string> Keep(IEnumerable<(string Id, DateTimeOffset Time)> points, DateTimeOffset now)
    {
        var sorted = points.OrderByDescending(p => p.Time).ThenByDescending(p => p.Id, StringComparer.Ordinal).ToList();
        var keep = new HashSet<string>();
        if (sorted.Count == 0) return keep;
        keep.Add(sorted[0].Id);
        var hours = new HashSet<long>();
        var days = new HashSet<long>();
        foreach (var (id, time) in sorted)
        {
            var age = now - time;
            if (age <= AllFor) keep.Add(id);
            else if (age <= HourlyFor) { if (hours.Add(time.UtcTicks / TimeSpan.TicksPerHour)) keep.Add(id); }
            else if (age <= DailyFor) { if (days.Add(time.UtcTicks / TimeSpan.TicksPerDay)) keep.Add(id); }
        }
        return keep;
    }

    /// <summary>
    /// Deletes the points the policy drops from <paramref name="points"/> (the server's points, kept in memory by the
    /// daemon so a cycle lists nothing), then the volume recovery points only they named. A point goes first, so no
    /// kept point ever names a deleted recovery point; the data stays until a prune. Returns the points deleted.
    /// </summary>
    public async Task<int> ApplyAsync(Repo repo, List<ServerPoint> points, DateTimeOffset now, CancellationToken ct)
    {
        var keep = Keep(points.Select(p => (p.Id, p.Time)), now);
        var kept = points.Where(p => keep.Contains(p.Id)).SelectMany(p => p.Volumes).Select(v => v.RecoveryPoint).OfType<string>().ToHashSet();
        var dropped = points.Where(p => !keep.Contains(p.Id)).ToList();
        foreach (var p in dropped)
        {
            await repo.Backend.DeleteAsync(ServerPoints.Key(p.ServerId, p.Id), ct).ConfigureAwait(false);
            foreach (var v in p.Volumes)
                if (v.RecoveryPoint is { } id && !kept.Contains(id))
                    await repo.Backend.DeleteAsync(Repo.SnapshotKey(id), ct).ConfigureAwait(false);
            points.Remove(p);
        }
        return dropped.Count;
    }
}
