namespace BlockRepl.Nbd.Tests;

public sealed class NbdUriTests
{
    [Theory]
    [InlineData("nbd+unix:///disk?socket=/run/q.sock", NbdTransport.Unix, "", 0, "/run/q.sock", "disk")]
    [InlineData("nbd+unix:///?socket=/tmp/a%20b.sock", NbdTransport.Unix, "", 0, "/tmp/a b.sock", "")]
    [InlineData("nbd://127.0.0.1:10810/disk", NbdTransport.Tcp, "127.0.0.1", 10810, "", "disk")]
    [InlineData("nbd://host/", NbdTransport.Tcp, "host", 10809, "", "")]
    [InlineData("nbd://host", NbdTransport.Tcp, "host", 10809, "", "")]
    [InlineData("nbd://[::1]:99/a%2Fb", NbdTransport.Tcp, "::1", 99, "", "a/b")]
    [InlineData("NBD://h:1/x/y", NbdTransport.Tcp, "h", 1, "", "x/y")]
    public void Parse_ValidUris(string text, NbdTransport transport, string host, int port, string socket, string export)
    {
        var uri = NbdUri.Parse(text);
        Assert.Equal((transport, host, port, socket, export), (uri.Transport, uri.Host, uri.Port, uri.SocketPath, uri.ExportName));
        Assert.Equal(uri, NbdUri.Parse(uri.ToString()));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("/dev/nbd0", "expected")]
    [InlineData("nbd+unix:///disk", "socket")]
    [InlineData("nbd+unix://host/disk?socket=/s", "no host")]
    [InlineData("nbd+unix:///disk?socket=/s&tls=on", "tls")]
    [InlineData("nbd://:10809/disk", "missing host")]
    [InlineData("nbd://h:0/disk", "port")]
    [InlineData("nbd://h:x/disk", "port")]
    [InlineData("nbds://h/disk", "TLS")]
    [InlineData("http://h/disk", "scheme")]
    public void Parse_InvalidUris_SayWhy(string text, string reason)
    {
        var e = Assert.Throws<FormatException>(() => NbdUri.Parse(text));
        Assert.Contains(reason, e.Message);
        Assert.False(NbdUri.TryParse(text, out _));
    }

    [Fact]
    public void ToString_IsCanonical()
    {
        Assert.Equal("nbd+unix:///disk?socket=/run/q.sock", NbdUri.Unix("/run/q.sock", "disk").ToString());
        Assert.Equal("nbd://127.0.0.1:10810/my%20disk", NbdUri.Tcp("127.0.0.1", 10810, "my disk").ToString());
        Assert.Equal("nbd://h/", NbdUri.Tcp("h", 10809, "").ToString());
    }
}
