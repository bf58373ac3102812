using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace BlockRepl.Qemu;

/// <summary>
/// Owns one <c>qemu-storage-daemon</c> process serving one image: a format node <see cref="NodeName"/> over a
/// file node, a QMP monitor on <see cref="QmpSocketPath"/> (connected as <see cref="Qmp"/>) and an NBD server on
/// <see cref="NbdSocketPath"/> (no exports until one is added over QMP). The daemon runs in the foreground under
/// <c>setpriv --pdeathsig TERM</c>, so it gets SIGTERM, a clean shutdown that writes persistent bitmaps back,
/// if this process dies.
/// </summary>
public sealed partial class QemuStorageDaemon : IAsyncDisposable
{
    private const string QmpSocketName = "qmp.sock";
    private const string NbdSocketName = "nbd.sock";

    /// <summary>sizeof(sockaddr_un.sun_path) minus the terminating NUL.</summary>
    private const int MaxSocketPathBytes = 107;

    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly TimeSpan _timeout;
    private QmpClient? _qmp;
    private bool _disposed;

    private QemuStorageDaemon(Process process, QemuStorageDaemonOptions options, string imagePath, string qmpSocket, string nbdSocket)
    {
        _process = process;
        _timeout = options.Timeout;
        ImagePath = imagePath;
        NodeName = options.NodeName;
        QmpSocketPath = qmpSocket;
        NbdSocketPath = nbdSocket;
        Id = process.Id;
    }

    /// <summary>The connected QMP client (the monitor serves one client at a time: this one).</summary>
    public QmpClient Qmp => _qmp ?? throw new InvalidOperationException("the daemon is not ready");

    /// <summary>The format node of the image (the node to put bitmaps on and to export).</summary>
    public string NodeName { get; }

    /// <summary>The image, as an absolute path.</summary>
    public string ImagePath { get; }

    public string QmpSocketPath { get; }

    /// <summary>The NBD server's socket; an export named E is <c>nbd+unix:///E?socket=NbdSocketPath</c>.</summary>
    public string NbdSocketPath { get; }

    /// <summary>The daemon's process id (setpriv execs it, so this is qemu-storage-daemon itself).</summary>
    public int Id { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>Exit code once exited, else null.</summary>
    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>What the daemon wrote to stderr so far.</summary>
    public string Stderr
    {
        get { lock (_stderr) return _stderr.ToString(); }
    }

    /// <summary>
    /// Starts the daemon and waits until its QMP monitor greets (up to <see cref="QemuStorageDaemonOptions.Timeout"/>).
    /// Stale sockets left by an earlier daemon (it does not remove them on exit) are deleted first.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The image is in use by another process (write lock), a socket in the runtime directory is served by a
    /// live process, or the daemon exited during start (its stderr is in the message).
    /// </exception>
    /// <exception cref="QmpException">Timeout: no greeting in time (the daemon is killed).</exception>
    public static async Task<QemuStorageDaemon> StartAsync(QemuStorageDaemonOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        string image = Path.GetFullPath(options.ImagePath);
        string runtime = Path.GetFullPath(options.RuntimeDirectory);
        Validate(options, image);
        Directory.CreateDirectory(runtime);
        string qmpSocket = Path.Combine(runtime, QmpSocketName);
        string nbdSocket = Path.Combine(runtime, NbdSocketName);
        foreach (string socket in (string[])[qmpSocket, nbdSocket, SecondSocket(qmpSocket)])
        {
            if (Encoding.UTF8.GetByteCount(socket) > MaxSocketPathBytes)
                throw new ArgumentException($"socket path {socket} is longer than {MaxSocketPathBytes} bytes (the unix socket limit): use a shorter runtime directory", nameof(options));
            await RemoveStaleSocketAsync(socket, ct).ConfigureAwait(false);
        }

        var psi = new ProcessStartInfo("setpriv")
        {
            UseShellExecute = false,
            // A pipe of our own: under a test host or systemd, the inherited stdin may be closed or shared.
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in (string[])["--pdeathsig", "TERM", options.Program]) psi.ArgumentList.Add(a);
        foreach (string a in BuildArguments(options, image, qmpSocket, nbdSocket)) psi.ArgumentList.Add(a);

        var process = await ChildLauncher.StartAsync(psi).ConfigureAwait(false);
        var daemon = new QemuStorageDaemon(process, options, image, qmpSocket, nbdSocket);
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (daemon._stderr) daemon._stderr.AppendLine(e.Data); };
        process.OutputDataReceived += (_, _) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            await daemon.WaitReadyAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            await daemon.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return daemon;
    }

    /// <summary>
    /// The daemon's command line after the program name. File names are escaped for QEMU's option syntax
    /// (a comma is written as two).
    /// </summary>
    internal static IReadOnlyList<string> BuildArguments(QemuStorageDaemonOptions options, string image, string qmpSocket, string nbdSocket)
    {
        string readOnly = options.Writable ? "" : ",read-only=on";
        string node = options.NodeName;
        string[] second = options.SecondMonitor
            ? ["--chardev", $"socket,id=qmp1,path={EscapeOption(SecondSocket(qmpSocket))},server=on,wait=off", "--monitor", "chardev=qmp1"]
            : [];
        return
        [
            "--blockdev", $"driver=file,node-name={node}-file,filename={EscapeOption(image)}{readOnly}",
            "--blockdev", $"driver={options.Format},node-name={node},file={node}-file{readOnly}",
            "--chardev", $"socket,id=qmp0,path={EscapeOption(qmpSocket)},server=on,wait=off",
            "--monitor", "chardev=qmp0",
            "--nbd-server", $"addr.type=unix,addr.path={EscapeOption(nbdSocket)}",
            .. second,
        ];
    }

    private static string SecondSocket(string qmpSocket) => Path.Combine(Path.GetDirectoryName(qmpSocket)!, "qmp2.sock");

    /// <summary>The second monitor's socket (<see cref="QemuStorageDaemonOptions.SecondMonitor"/>).</summary>
    public string SecondQmpSocketPath => SecondSocket(QmpSocketPath);

    /// <summary>QEMU option values end at a comma; a literal comma is written twice.</summary>
    internal static string EscapeOption(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    /// <summary>
    /// Asks the daemon to quit over QMP and waits for it to exit (up to the options' timeout). Persistent
    /// bitmaps are written to the image on this clean close. Returns the exit code.
    /// </summary>
    public async Task<int> QuitAsync(CancellationToken ct = default)
    {
        if (!_process.HasExited && _qmp is { IsConnected: true } qmp)
        {
            try
            {
                await qmp.ExecuteAsync("quit", null, ct).ConfigureAwait(false);
            }
            catch (QmpException e) when (e.Kind == QmpErrorKind.Transport)
            {
                // The daemon may close the monitor before the reply gets out; its exit is what counts.
            }
        }
        else if (!_process.HasExited)
        {
            // No monitor to ask: SIGTERM is the same clean shutdown.
            Signal("TERM");
        }
        return await WaitForExitAsync(_timeout, ct).ConfigureAwait(false);
    }

    /// <summary>SIGKILL: the daemon dies without closing the image (persistent bitmaps loaded read-write stay marked in-use). For crash tests.</summary>
    public void Kill()
    {
        try
        {
            if (!_process.HasExited) _process.Kill();
        }
        catch (InvalidOperationException)
        {
            // Exited meanwhile.
        }
    }

    /// <summary>Waits for the daemon to exit and returns its exit code.</summary>
    /// <exception cref="QmpException">Timeout.</exception>
    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken ct = default)
    {
        try
        {
            await _process.WaitForExitAsync(ct).WaitAsync(timeout, ct).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            throw QmpException.Create(QmpErrorKind.Timeout, QmpSocketPath, null, $"qemu-storage-daemon (pid {Id}) did not exit within {timeout.TotalSeconds:0.#} s", e);
        }
        return _process.ExitCode;
    }

    /// <summary>Quits cleanly if still running (killing it if that fails or takes longer than the timeout), then deletes the sockets.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed) return;
        _disposed = true;
        if (!_process.HasExited)
        {
            try
            {
                await QuitAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is QmpException or OperationCanceledException or InvalidOperationException)
            {
                Kill();
            }
        }
        try
        {
            await _process.WaitForExitAsync().WaitAsync(_timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // SIGKILL cannot be refused; only an uninterruptible sleep in the kernel gets here. Do not hang disposal on it.
        }
        if (_qmp is not null) await _qmp.DisposeAsync().ConfigureAwait(false);
        _process.Dispose();
        TryDelete(QmpSocketPath);
        TryDelete(SecondQmpSocketPath);
        TryDelete(NbdSocketPath);
    }

    private async Task WaitReadyAsync(CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (_process.HasExited) throw await ExitedDuringStartAsync().ConfigureAwait(false);
            if (File.Exists(QmpSocketPath))
            {
                try
                {
                    var remaining = _timeout - clock.Elapsed;
                    _qmp = await QmpClient.ConnectAsync(QmpSocketPath, remaining > TimeSpan.Zero ? remaining : TimeSpan.FromMilliseconds(1), ct).ConfigureAwait(false);
                    // The monitor is created after the --blockdev options are processed, so a greeting means the image is open.
                    return;
                }
                catch (QmpException e) when (e.Kind is QmpErrorKind.Transport or QmpErrorKind.Protocol && clock.Elapsed < _timeout)
                {
                    if (_qmp is not null) await _qmp.DisposeAsync().ConfigureAwait(false);
                    _qmp = null;
                }
            }
            if (clock.Elapsed >= _timeout)
            {
                throw QmpException.Create(QmpErrorKind.Timeout, QmpSocketPath, null,
                    $"qemu-storage-daemon for {ImagePath} did not answer on its QMP socket within {_timeout.TotalSeconds:0.#} s; stderr: {QmpException.OneLine(Stderr.Trim())}");
            }
            // Polling for the socket file: the daemon gives no other sign of readiness when run in the foreground.
            await Task.Delay(10, ct).ConfigureAwait(false);
        }
    }

    private async Task<Exception> ExitedDuringStartAsync()
    {
        await _process.WaitForExitAsync().ConfigureAwait(false); // also drains stderr
        string stderr = QmpException.OneLine(Stderr.Trim());
        if (stderr.Contains("\"write\" lock", StringComparison.Ordinal))
        {
            return new InvalidOperationException(
                $"Image {ImagePath} is in use by another process: qemu-storage-daemon could not get its write lock ({stderr})");
        }
        return new InvalidOperationException($"qemu-storage-daemon for {ImagePath} exited with code {_process.ExitCode} during start: {stderr}");
    }

    private static void Validate(QemuStorageDaemonOptions options, string image)
    {
        if (options.Format is not ("qcow2" or "raw"))
            throw new ArgumentException($"image format '{options.Format}' is not supported: use qcow2 or raw", nameof(options));
        // QEMU node names: a letter, then letters, digits, '-', '.', '_'; at most 31 bytes, and "-file" is appended.
        if (!NodeNameRegex().IsMatch(options.NodeName))
            throw new ArgumentException($"node name '{options.NodeName}' is not valid: a letter, then up to 25 letters, digits, '-', '.', '_'", nameof(options));
        if (image.AsSpan().IndexOfAny('\n', '\r', '\0') >= 0)
            throw new ArgumentException("the image path contains a line break or NUL", nameof(options));
        if (!File.Exists(image))
            throw new FileNotFoundException($"image {image} does not exist", image);
        if (options.Timeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(options), "Timeout must be positive");
    }

    /// <summary>Deletes a socket file nobody listens on; refuses to touch one a live process serves.</summary>
    private static async Task RemoveStaleSocketAsync(string path, CancellationToken ct)
    {
        if (!File.Exists(path)) return;
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                await probe.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
                throw new InvalidOperationException($"{path} is served by a running process (another qemu-storage-daemon using this runtime directory?)");
            }
            catch (SocketException)
            {
                // ECONNREFUSED: a leftover of a daemon that has exited.
            }
        }
        File.Delete(path);
    }

    private void Signal(string name)
    {
        try
        {
            using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { "-s", name, Id.ToString(System.Globalization.CultureInfo.InvariantCulture) }, UseShellExecute = false });
            kill?.WaitForExit();
        }
        catch (System.ComponentModel.Win32Exception)
        {
            Kill();
        }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_.-]{0,25}$")]
    private static partial Regex NodeNameRegex();

    /// <summary>
    /// Starts children from one thread that lives as long as this process. prctl(2) documents that
    /// PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a child forked
    /// from a thread-pool thread could get SIGTERM when the pool retires that thread. The 6.18 kernel this was
    /// developed on did not signal on a thread exit (docs/qmp.md), but a dedicated thread costs nothing and is
    /// right under the documented rule.
    /// </summary>
    private static class ChildLauncher
    {
        private static readonly BlockingCollection<(ProcessStartInfo Info, TaskCompletionSource<Process> Done)> s_queue = [];
        private static readonly Lazy<Thread> s_thread = new(() =>
        {
            var t = new Thread(Run) { IsBackground = true, Name = "BlockRepl.Qemu child launcher" };
            t.Start();
            return t;
        });

        public static Task<Process> StartAsync(ProcessStartInfo psi)
        {
            _ = s_thread.Value;
            var done = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
            s_queue.Add((psi, done));
            return done.Task;
        }

        private static void Run()
        {
            foreach (var (info, done) in s_queue.GetConsumingEnumerable())
            {
                try
                {
                    done.SetResult(QemuImg.StartOrExplain(info));
                }
                catch (Exception e)
                {
                    done.SetException(e);
                }
            }
        }
    }
}
