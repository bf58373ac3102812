using BlockRepl.Engine.Jobs;

namespace BlockRepl.Cli;

/// <summary>
/// Shows a job's progress on stderr: a live line on a terminal, a plain line every 10 s otherwise
/// (logs, CI, systemd). Quiet when disabled.
/// </summary>
internal sealed class ProgressPrinter : IDisposable
{
    private readonly JobProgress _progress;
    private readonly bool _tty;
    private readonly Timer? _timer;
    private readonly DateTime _start = DateTime.UtcNow;
    private int _lastLength;
    private readonly object _lock = new();
    private bool _disposed;

    public ProgressPrinter(JobProgress progress, bool enabled)
    {
        _progress = progress;
        _tty = !Console.IsErrorRedirected;
        if (!enabled) return;
        var period = _tty ? TimeSpan.FromMilliseconds(250) : TimeSpan.FromSeconds(10);
        _timer = new Timer(_ => Print(), null, period, period);
    }

    private void Print()
    {
        lock (_lock)
        {
            if (_disposed) return;
            long total = _progress.TotalBytes, done = _progress.DoneBytes;
            double secs = (DateTime.UtcNow - _start).TotalSeconds;
            double pct = total > 0 ? 100.0 * done / total : 0;
            string eta = done > 0 && total > done && secs > 1 ? $" ETA {Format.Duration(secs * (total - done) / done)}" : "";
            string line = $"{_progress.Phase}: {pct,5:0.0}%  {Format.Bytes(done)} / {Format.Bytes(total)}  {Format.Rate(done, secs)}  stored {Format.Bytes(_progress.StoredBytes)}{eta}";
            if (_tty)
            {
                string padded = line.PadRight(_lastLength);
                _lastLength = line.Length;
                Console.Error.Write("\r" + padded);
            }
            else Console.Error.WriteLine(line);
        }
    }

    public void Dispose()
    {
        _timer?.Dispose();
        lock (_lock)
        {
            _disposed = true;
            if (_tty && _lastLength > 0) Console.Error.Write("\r" + new string(' ', _lastLength) + "\r");
        }
    }
}
