using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.TestKit;

/// <summary>Comparing and hashing files or block devices.</summary>
public static class Files
{
    private const int BufferSize = 1 << 20;

    /// <summary>Byte-for-byte comparison with 1 MiB reads; false when the lengths differ.</summary>
    public static bool ContentEquals(string a, string b)
    {
        using SafeFileHandle ha = OpenRead(a);
        using SafeFileHandle hb = OpenRead(b);
        long length = Length(ha, a);
        if (length != Length(hb, b))
        {
            return false;
        }

        byte[] bufA = new byte[BufferSize];
        byte[] bufB = new byte[BufferSize];
        for (long offset = 0; offset < length;)
        {
            int want = (int)Math.Min(BufferSize, length - offset);
            ReadExactly(ha, bufA.AsSpan(0, want), offset, a);
            ReadExactly(hb, bufB.AsSpan(0, want), offset, b);
            if (!bufA.AsSpan(0, want).SequenceEqual(bufB.AsSpan(0, want)))
            {
                return false;
            }

            offset += want;
        }

        return true;
    }

    /// <summary>Lower-case hex SHA-256 of the whole file.</summary>
    public static string Sha256Hex(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, BufferSize, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    internal static SafeFileHandle OpenRead(string path) =>
        File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);

    /// <summary>
    /// Length of a regular file or block device. For a block device the runtime may report 0, so the
    /// size is taken from sysfs (<c>/sys/class/block/NAME/size</c>, always in 512-byte sectors).
    /// </summary>
    internal static long Length(SafeFileHandle handle, string path)
    {
        long length = RandomAccess.GetLength(handle);
        if (length == 0 && path.StartsWith("/dev/", StringComparison.Ordinal))
        {
            string resolved = new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? path;
            string sysfs = $"/sys/class/block/{System.IO.Path.GetFileName(resolved)}/size";
            if (File.Exists(sysfs) && long.TryParse(File.ReadAllText(sysfs).Trim(), out long sectors))
            {
                length = sectors * 512;
            }
        }

        return length;
    }

    internal static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (!buffer.IsEmpty)
        {
            int n = RandomAccess.Read(handle, buffer, offset);
            if (n == 0)
            {
                throw new EndOfStreamException($"{path}: unexpected end of file at offset {offset}.");
            }

            buffer = buffer[n..];
            offset += n;
        }
    }
}
