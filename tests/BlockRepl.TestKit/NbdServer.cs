using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using BlockRepl.Nbd;

namespace BlockRepl.TestKit;

/// <summary>
/// A qemu-nbd or nbdkit process in the foreground, listening on a unix socket or a loopback TCP port.
/// Ready once a probe connection gets the NBD greeting; killed and cleaned up on dispose.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();
    private readonly string? _socketPath;

    public NbdUri Uri { get; }

    private NbdServer(Process process, NbdUri uri, string? socketPath)
    {
        _process = process;
        Uri = uri;
        _socketPath = socketPath;
    }

    /// <summary>Starts qemu-nbd read-only and persistent (-t: it would otherwise exit after the first client).</summary>
    public static Task<NbdServer> StartQemuNbdAsync(TempDir dir, string image, string format, string export, bool tcp = false, params string[] bitmaps)
    {
        var args = new List<string> { "--read-only", "--persistent", "--shared=8", $"--format={format}", $"--export-name={export}" };
        foreach (string b in bitmaps) args.Add($"--bitmap={b}");
        return StartAsync("qemu-nbd", args, dir, export, tcp, (a, sock) => a.Add($"--socket={sock}"), (a, port) => a.AddRange(["--bind=127.0.0.1", $"--port={port}"]), image);
    }

    /// <summary>Starts qemu-nbd read-only on a given unix socket (a stable URI across restarts: the source's identity).</summary>
    public static Task<NbdServer> StartQemuNbdOnSocketAsync(TempDir dir, string image, string format, string export, string socketPath)
    {
        var args = new List<string> { "--read-only", "--persistent", "--shared=8", $"--format={format}", $"--export-name={export}" };
        return StartCoreAsync("qemu-nbd", args, dir, export, false, (a, sock) => a.Add($"--socket={sock}"), (_, _) => { }, socketPath, [image]);
    }

    /// <summary>Starts nbdkit in the foreground with the given plugin/filter arguments (after the transport options).</summary>
    public static Task<NbdServer> StartNbdkitAsync(TempDir dir, IEnumerable<string> pluginArgs, bool tcp = false, params string[] options)
    {
        var args = new List<string> { "--foreground", "--readonly" };
        args.AddRange(options);
        return StartAsync("nbdkit", args, dir, "", tcp, (a, sock) => a.AddRange(["--unix", sock]),
            (a, port) => a.AddRange(["--ipaddr", "127.0.0.1", "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture)]),
            [.. pluginArgs]);
    }

    private static Task<NbdServer> StartAsync(string program, List<string> args, TempDir dir, string export, bool tcp,
        Action<List<string>, string> unix, Action<List<string>, int> tcpPort, params string[] tail) =>
        StartCoreAsync(program, args, dir, export, tcp, unix, tcpPort, null, tail);

    private static async Task<NbdServer> StartCoreAsync(string program, List<string> args, TempDir dir, string export, bool tcp,
        Action<List<string>, string> unix, Action<List<string>, int> tcpPort, string? socketPath, string[] tail)
    {
        // nbdkit has, rarely, ended before its socket answered, silently, with status 0 or 143 (SIGTERM), from a
        // signal nothing in the tests sends (cause not found; it is not what any test checks). Such a start is
        // retried with a fresh socket, at most twice; any other early exit fails at once with its message.
        for (int attempt = 1; ; attempt++)
        {
            try { return await StartOnceAsync(program, [.. args], dir, export, tcp, unix, tcpPort, socketPath, tail); }
            catch (ServerExitedCleanlyException) when (attempt < 3) { }
        }
    }

    private sealed class ServerExitedCleanlyException(string message) : InvalidOperationException(message);

    private static async Task<NbdServer> StartOnceAsync(string program, List<string> args, TempDir dir, string export, bool tcp,
        Action<List<string>, string> unix, Action<List<string>, int> tcpPort, string? socketPath, string[] tail)
    {
        string? socket = null;
        NbdUri uri;
        if (tcp)
        {
            int port = FreePort();
            tcpPort(args, port);
            uri = NbdUri.Tcp("127.0.0.1", port, export);
        }
        else
        {
            socket = socketPath ?? dir.File($"{program}-{Guid.NewGuid():N}.sock");
            unix(args, socket);
            uri = NbdUri.Unix(socket, export);
        }
        args.AddRange(tail);

        // stdin is a pipe of our own, not the test host's (which under CI may be closed or shared).
        var psi = new ProcessStartInfo(program) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}");
        var server = new NbdServer(process, uri, socket);
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (server._stderr) server._stderr.AppendLine(e.Data); };
        process.OutputDataReceived += (_, e) => { };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        try
        {
            await server.WaitReadyAsync(program, args);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        return server;
    }

    public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

    private async Task WaitReadyAsync(string program, List<string> args)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            if (_process.HasExited)
            {
                string message = $"{program} {string.Join(' ', args)} exited with {_process.ExitCode}: {Stderr}";
                throw Stderr.Trim().Length == 0 && _process.ExitCode is 0 or 143 ? new ServerExitedCleanlyException(message) : new InvalidOperationException(message);
            }
            try
            {
                using var socket = Uri.Transport == NbdTransport.Unix
                    ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                    : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                EndPoint endPoint = Uri.Transport == NbdTransport.Unix
                    ? new UnixDomainSocketEndPoint(Uri.SocketPath)
                    : new IPEndPoint(IPAddress.Loopback, Uri.Port);
                await socket.ConnectAsync(endPoint);
                byte[] greeting = new byte[8];
                await socket.ReceiveAsync(greeting);
                if (Encoding.ASCII.GetString(greeting) == "NBDMAGIC") return;
            }
            catch (SocketException) when (deadline.Elapsed < TimeSpan.FromSeconds(20))
            {
            }
            await Task.Delay(20);
        }
    }

    private static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
        }
        await _process.WaitForExitAsync();
        _process.Dispose();
        if (_socketPath is not null) File.Delete(_socketPath);
    }
}
