using BlockRepl.Engine.Servers;
using BlockRepl.TestKit;

namespace BlockRepl.Core.Tests.Servers;

public sealed class ServerIdentityTests
{
    [Fact]
    public void FirstCall_CreatesTheStateDirectoryAndARandomIdFile_InTheDaemonsFormat()
    {
        using var t = new TempDir("br-identity");
        string stateDir = t.File("state/nested");
        var id = ServerIdentity.LoadOrCreate(stateDir);

        Assert.True(id.Created);
        Assert.True(ServerIdentity.IsValidId(id.Id), id.Id);
        Assert.Equal(Path.Combine(Path.GetFullPath(stateDir), "server-id"), id.FilePath);
        // s- + 16 lower-case hex digits and a newline: what daemons wrote before this class existed.
        Assert.Equal(id.Id + "\n", File.ReadAllText(id.FilePath));
        Assert.Equal(["server-id"], Directory.GetFileSystemEntries(stateDir).Select(Path.GetFileName));
        Assert.NotEqual(id.Id, ServerIdentity.LoadOrCreate(t.File("other")).Id);
    }

    [Fact]
    public void LaterCalls_ReturnTheSameId()
    {
        using var t = new TempDir("br-identity");
        var first = ServerIdentity.LoadOrCreate(t.Path);
        var again = ServerIdentity.LoadOrCreate(t.Path);
        Assert.Equal(first.Id, again.Id);
        Assert.False(again.Created);
    }

    [Fact]
    public void AnIdFileWrittenByAnOlderDaemon_IsKept()
    {
        using var t = new TempDir("br-identity");
        File.WriteAllText(t.File("server-id"), "s-0123456789abcdef\n");
        Assert.Equal("s-0123456789abcdef", ServerIdentity.LoadOrCreate(t.Path).Id);
    }

    [Fact]
    public async Task ConcurrentFirstCalls_AllEndWithOneIdAndExactlyOneCreatesIt()
    {
        for (int round = 0; round < 10; round++)
        {
            using var t = new TempDir("br-identity-race");
            const int n = 8;
            using var start = new Barrier(n);
            var tasks = Enumerable.Range(0, n).Select(_ => Task.Factory.StartNew(() =>
            {
                start.SignalAndWait();
                return ServerIdentity.LoadOrCreate(t.Path);
            }, TaskCreationOptions.LongRunning)).ToArray();
            var ids = await Task.WhenAll(tasks);

            Assert.Single(ids.Select(i => i.Id).Distinct());
            Assert.Single(ids, i => i.Created);
            Assert.Equal(ids[0].Id + "\n", File.ReadAllText(t.File("server-id")));
            // No temporary file is left behind by the losers.
            Assert.Equal(["server-id"], Directory.GetFileSystemEntries(t.Path).Select(Path.GetFileName));
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("s-0123\n")]
    [InlineData("S-0123456789ABCDEF\n")]
    [InlineData("s-0123456789abcdeg\n")]
    [InlineData("garbage\u0001\n")]
    public void ACorruptIdFile_IsAOneLineErrorNamingTheFile_AndIsNotReplaced(string content)
    {
        using var t = new TempDir("br-identity");
        string path = t.File("server-id");
        File.WriteAllText(path, content);
        var e = Assert.Throws<CorruptDataException>(() => ServerIdentity.LoadOrCreate(t.Path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain('\u0001', e.Message);
        Assert.Equal(content, File.ReadAllText(path));
    }

    [Fact]
    public void AHugeIdFile_IsCorrupt()
    {
        using var t = new TempDir("br-identity");
        File.WriteAllBytes(t.File("server-id"), new byte[1 << 20]);
        var e = Assert.Throws<CorruptDataException>(() => ServerIdentity.LoadOrCreate(t.Path));
        Assert.Contains("1048576 bytes", e.Message, StringComparison.Ordinal);
    }
}
