using BlockRepl.Native.Linux;

namespace BlockRepl.Native.Linux.Tests;

public class NativeIoExceptionTests
{
    [Fact]
    public void MessageNamesOperationPathStrerrorAndSymbol()
    {
        var ex = new NativeIoException(13, "open", "/dev/x");

        Assert.Equal("open '/dev/x': Permission denied (EACCES)", ex.Message);
        Assert.Equal(13, ex.Errno);
        Assert.Equal(13, ex.HResult);
        Assert.Equal("open", ex.Operation);
        Assert.Equal("/dev/x", ex.Path);
        Assert.IsAssignableFrom<IOException>(ex);
    }

    [Fact]
    public void MessageWithoutPathOrKnownSymbolStillReadsWell()
    {
        Assert.Equal("fsync: Input/output error (EIO)", new NativeIoException(5, "fsync", null).Message);
        Assert.EndsWith("(errno 4095)", new NativeIoException(4095, "ioctl", null).Message);
    }
}
