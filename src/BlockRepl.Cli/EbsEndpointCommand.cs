using System.Globalization;
using System.Net;
using BlockRepl.Ebs.Endpoint;
using BlockRepl.Engine;
using Serilog;

namespace BlockRepl.Cli;

/// <summary>
/// <c>blockrepl ebs-endpoint</c>: runs the local EBS direct API server (docs/ebs-endpoint.md) until SIGINT/SIGTERM.
/// Prints exactly one line on stdout, <c>listening on http://HOST:PORT</c>, once requests are accepted.
/// </summary>
internal static class EbsEndpointCommand
{
    public const string UsageLine =
        "blockrepl ebs-endpoint --data DIR [--listen 127.0.0.1:PORT] [--no-auth] [--region R] [--minute 60s] [--completion-delay 500ms] [--put-rate N] [--get-rate N] [--max-pending N] [--fail-rate F] [--reset-rate F] [--hang-rate F] [--not-found-after-start 3s] [--page-scan-blocks N] [--no-fsync] [--tls-cert-out FILE]";

    private static readonly HashSet<string> ValueOptions =
    [
        "--listen", "--data", "--region", "--minute", "--completion-delay", "--put-rate", "--get-rate", "--max-pending",
        "--fail-rate", "--reset-rate", "--hang-rate", "--not-found-after-start", "--page-scan-blocks", "--block-token-ttl", "--page-token-ttl",
        "--tls-cert-out",
    ];

    private static readonly HashSet<string> Flags = ["--no-auth", "--no-fsync", "--verbose"];

    public static async Task<int> RunAsync(string[] argv, CancellationToken ct)
    {
        var options = ParseOptions(argv);
        await using var server = new EbsEndpointServer(options);
        Uri uri;
        try
        {
            uri = await server.StartAsync(ct).ConfigureAwait(false);
        }
        catch (IOException e) when (e.Message.StartsWith("cannot listen", StringComparison.Ordinal))
        {
            throw new UsageException($"--listen: {e.Message}");
        }
        catch (InvalidOperationException e)
        {
            throw new UsageException(e.Message);
        }
        if (server.AuthEnabled)
            Log.Information("SigV4 verification on: accepting access key {AccessKeyId} (service ebs, any region unless --region)", server.AccessKeyId);
        else
            Console.Error.WriteLine("WARNING: SigV4 verification is OFF (--no-auth): every request is accepted, signed or not, from anyone who can reach this port.");
        Log.Information("data directory {Dir}; minute = {Minute}; completion delay {Delay}; put/get rate {Put}/{Get} per second per snapshot",
            Path.GetFullPath(options.DataDirectory), options.MinuteLength, options.CompletionDelay, options.PutRatePerSnapshot, options.GetRatePerSnapshot);
        Console.Out.WriteLine($"listening on {uri.GetLeftPart(UriPartial.Authority)}");
        Console.Out.Flush();
        try
        {
            await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        Log.Information("stopping");
        await server.StopAsync(CancellationToken.None).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    internal static EbsEndpointOptions ParseOptions(string[] argv)
    {
        var a = Args.Parse(argv, ValueOptions, Flags);
        if (a.Positionals.Count > 0) throw new UsageException($"ebs-endpoint takes no arguments (got '{a.Positionals[0]}'); usage: {UsageLine}");
        var (address, port) = ParseListen(a.Value("--listen") ?? "127.0.0.1:0");
        var d = new EbsEndpointOptions { DataDirectory = "." };
        // --tls-cert-out FILE: serve HTTPS with a fresh self-signed certificate whose PEM goes to FILE (a client CA bundle).
        System.Security.Cryptography.X509Certificates.X509Certificate2? cert = null;
        if (a.Value("--tls-cert-out") is { } pemPath)
        {
            cert = EbsEndpointTls.CreateSelfSigned();
            try { File.WriteAllText(pemPath, EbsEndpointTls.ExportPem(cert)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new UsageException($"--tls-cert-out {pemPath}: {e.Message}"); }
        }
        return new EbsEndpointOptions
        {
            ListenAddress = address,
            Port = port,
            DataDirectory = a.Required("--data", "DIR (where snapshots are kept)"),
            RequireAuth = !a.Flag("--no-auth"),
            Region = a.Value("--region"),
            MinuteLength = Duration(a, "--minute", d.MinuteLength, allowZero: false),
            CompletionDelay = Duration(a, "--completion-delay", d.CompletionDelay, allowZero: true),
            PutRatePerSnapshot = Integer(a, "--put-rate", d.PutRatePerSnapshot, 0),
            GetRatePerSnapshot = Integer(a, "--get-rate", d.GetRatePerSnapshot, 0),
            MaxPendingSnapshots = Integer(a, "--max-pending", d.MaxPendingSnapshots, 1),
            InternalErrorRate = Fraction(a, "--fail-rate"),
            ResetRate = Fraction(a, "--reset-rate"),
            HangRate = Fraction(a, "--hang-rate"),
            NotFoundAfterStart = Duration(a, "--not-found-after-start", TimeSpan.Zero, allowZero: true),
            PageScanBlocks = Integer(a, "--page-scan-blocks", d.PageScanBlocks, 1),
            BlockTokenLifetime = Duration(a, "--block-token-ttl", d.BlockTokenLifetime, allowZero: false),
            PageTokenLifetime = Duration(a, "--page-token-ttl", d.PageTokenLifetime, allowZero: false),
            Durable = !a.Flag("--no-fsync"),
            Certificate = cert,
            Log = m => Log.Information("{Event}", m),
        };
    }

    private static (IPAddress Address, int Port) ParseListen(string text)
    {
        int colon = text.LastIndexOf(':');
        if (colon <= 0) throw new UsageException($"--listen: '{text}' is not HOST:PORT (e.g. 127.0.0.1:8645; port 0 picks a free one)");
        string host = text[..colon].Trim('[', ']');
        string portText = text[(colon + 1)..];
        IPAddress? address = host == "localhost" ? IPAddress.Loopback : IPAddress.TryParse(host, out var ip) ? ip : null;
        if (address is null) throw new UsageException($"--listen: '{host}' is not an IP address (use 127.0.0.1, ::1, 0.0.0.0 or localhost)");
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
            throw new UsageException($"--listen: '{portText}' is not a port number 0..65535");
        return (address, port);
    }

    private static int Integer(Args a, string option, int fallback, int min)
    {
        string? v = a.Value(option);
        if (v is null) return fallback;
        return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n >= min
            ? n
            : throw new UsageException($"{option}: '{v}' is not a whole number ≥ {min}");
    }

    private static double Fraction(Args a, string option)
    {
        string? v = a.Value(option);
        if (v is null) return 0;
        return double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f is >= 0 and <= 1
            ? f
            : throw new UsageException($"{option}: '{v}' is not a fraction from 0 to 1 (e.g. 0.05 fails 5% of requests)");
    }

    /// <summary>"500ms", "3s", "2m", "1h", "7d", or plain seconds.</summary>
    internal static TimeSpan Duration(Args a, string option, TimeSpan fallback, bool allowZero)
    {
        string? v = a.Value(option);
        if (v is null) return fallback;
        string t = v.Trim();
        (string number, double unitSeconds) = t switch
        {
            _ when t.EndsWith("ms", StringComparison.Ordinal) => (t[..^2], 0.001),
            _ when t.EndsWith('s') => (t[..^1], 1),
            _ when t.EndsWith('m') => (t[..^1], 60),
            _ when t.EndsWith('h') => (t[..^1], 3600),
            _ when t.EndsWith('d') => (t[..^1], 86400),
            _ => (t, 1),
        };
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double n) || n < 0 || double.IsInfinity(n) || (!allowZero && n == 0))
            throw new UsageException($"{option}: cannot read duration '{v}' (e.g. 500ms, 3s, 2m, 1h, 7d)");
        return TimeSpan.FromSeconds(n * unitSeconds);
    }
}
