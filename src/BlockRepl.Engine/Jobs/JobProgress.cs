namespace BlockRepl.Engine.Jobs;

/// <summary>Live progress of a long job, polled by the CLI (TTY line or periodic log lines) and the daemon.</summary>
public sealed class JobProgress
{
    private long _total, _done, _stored, _changed;
    private volatile string _phase = "starting";

    public string Phase { get => _phase; set => _phase = value; }
    public long TotalBytes { get => Interlocked.Read(ref _total); set => Interlocked.Exchange(ref _total, value); }
    public long DoneBytes { get => Interlocked.Read(ref _done); set => Interlocked.Exchange(ref _done, value); }
    public long StoredBytes => Interlocked.Read(ref _stored);
    public long ChangedBytes => Interlocked.Read(ref _changed);
    public void AddStored(long n) => Interlocked.Add(ref _stored, n);
    public void AddChanged(long n) => Interlocked.Add(ref _changed, n);
}
