using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace BlockRepl.Nbd;

/// <summary>How an <see cref="NbdUri"/> reaches its server.</summary>
public enum NbdTransport
{
    Tcp,
    Unix,
}

/// <summary>
/// An NBD server address in the URI form of NetworkBlockDevice/nbd doc/uri.md, without TLS:
/// <c>nbd://HOST[:PORT]/EXPORT</c> (port 10809 by default) and <c>nbd+unix:///EXPORT?socket=PATH</c>.
/// The export name is the percent-decoded path after the first '/'; an empty path is the default export "".
/// </summary>
public sealed record NbdUri
{
    public const int DefaultPort = 10809;

    public NbdTransport Transport { get; }
    public string Host { get; } = "";
    public int Port { get; }
    public string SocketPath { get; } = "";
    public string ExportName { get; }

    private NbdUri(NbdTransport transport, string host, int port, string socketPath, string exportName)
    {
        Transport = transport;
        Host = host;
        Port = port;
        SocketPath = socketPath;
        ExportName = exportName;
    }

    public static NbdUri Tcp(string host, int port, string exportName)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return new(NbdTransport.Tcp, host, port, "", exportName);
    }

    public static NbdUri Unix(string socketPath, string exportName)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        return new(NbdTransport.Unix, "", 0, socketPath, exportName);
    }

    /// <summary>Parses <paramref name="text"/>; throws <see cref="FormatException"/> saying what is wrong.</summary>
    public static NbdUri Parse(string text) =>
        TryParse(text, out var uri, out var error) ? uri : throw new FormatException($"invalid NBD URI '{text}': {error}");

    public static bool TryParse(string? text, [NotNullWhen(true)] out NbdUri? uri) => TryParse(text, out uri, out _);

    private static bool TryParse(string? text, [NotNullWhen(true)] out NbdUri? uri, out string error)
    {
        uri = null;
        error = "";
        if (string.IsNullOrEmpty(text)) { error = "empty"; return false; }
        int schemeEnd = text.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0) { error = "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH"; return false; }
        string scheme = text[..schemeEnd].ToLowerInvariant();
        string rest = text[(schemeEnd + 3)..];

        string query = "";
        int q = rest.IndexOf('?');
        if (q >= 0) { query = rest[(q + 1)..]; rest = rest[..q]; }
        int slash = rest.IndexOf('/');
        string authority = slash < 0 ? rest : rest[..slash];
        string export;
        try
        {
            export = slash < 0 ? "" : Uri.UnescapeDataString(rest[(slash + 1)..]);
        }
        catch (UriFormatException e) { error = e.Message; return false; }

        switch (scheme)
        {
            case "nbd":
            {
                if (query.Length > 0) { error = "nbd:// takes no query parameters"; return false; }
                if (!TrySplitHostPort(authority, out string host, out int port, out error)) return false;
                uri = new NbdUri(NbdTransport.Tcp, host, port, "", export);
                return true;
            }
            case "nbd+unix":
            {
                if (authority.Length > 0) { error = "nbd+unix:// takes no host (use three slashes: nbd+unix:///EXPORT?socket=PATH)"; return false; }
                string? socket = null;
                foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
                {
                    int eq = pair.IndexOf('=');
                    string key = eq < 0 ? pair : pair[..eq];
                    string value = eq < 0 ? "" : Uri.UnescapeDataString(pair[(eq + 1)..]);
                    if (key == "socket") socket = value;
                    else { error = $"unsupported query parameter '{key}'"; return false; }
                }
                if (string.IsNullOrEmpty(socket)) { error = "missing ?socket=PATH"; return false; }
                uri = new NbdUri(NbdTransport.Unix, "", 0, socket, export);
                return true;
            }
            case "nbds" or "nbds+unix":
                error = "TLS (nbds) is not supported";
                return false;
            default:
                error = $"unsupported scheme '{scheme}'";
                return false;
        }
    }

    private static bool TrySplitHostPort(string authority, out string host, out int port, out string error)
    {
        host = "";
        port = DefaultPort;
        error = "";
        string portText = "";
        if (authority.StartsWith('['))
        {
            int close = authority.IndexOf(']');
            if (close < 0) { error = "unterminated IPv6 address"; return false; }
            host = authority[1..close];
            string after = authority[(close + 1)..];
            if (after.Length > 0)
            {
                if (after[0] != ':') { error = "garbage after IPv6 address"; return false; }
                portText = after[1..];
            }
        }
        else
        {
            int colon = authority.LastIndexOf(':');
            host = colon < 0 ? authority : authority[..colon];
            if (colon >= 0) portText = authority[(colon + 1)..];
        }
        if (host.Length == 0) { error = "missing host"; return false; }
        if (portText.Length > 0
            && (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535))
        {
            error = $"invalid port '{portText}'";
            return false;
        }
        return true;
    }

    /// <summary>The canonical URI text.</summary>
    public override string ToString()
    {
        string export = Uri.EscapeDataString(ExportName);
        if (Transport == NbdTransport.Unix) return $"nbd+unix:///{export}?socket={SocketPath}";
        string host = Host.Contains(':') ? $"[{Host}]" : Host;
        return Port == DefaultPort ? $"nbd://{host}/{export}" : $"nbd://{host}:{Port}/{export}";
    }
}
