using System.Security.Cryptography;
using System.Text;
using BlockRepl.Core;
using BlockRepl.Native.Linux;

namespace BlockRepl.Engine.Servers;

/// <summary>
/// Who this server is to its targets: a random id (<c>s-</c> + 16 lower-case hex digits), made once and kept in
/// <c>STATEDIR/server-id</c> (docs/servers.md §1). It is deliberately not derived from the host name or a MAC
/// address: a renamed or re-addressed machine stays the same server, and a cloned state directory is the only
/// way to share an identity.
/// </summary>
public sealed class ServerIdentity
{
    /// <summary>The file name inside the state directory.</summary>
    public const string FileName = "server-id";

    private ServerIdentity(string id, string filePath, bool created)
    {
        Id = id;
        FilePath = filePath;
        Created = created;
    }

    /// <summary><c>s-</c> + 16 lower-case hex digits.</summary>
    public string Id { get; }

    /// <summary>The file the id is kept in.</summary>
    public string FilePath { get; }

    /// <summary>True when this call made the identity (first run on this state directory).</summary>
    public bool Created { get; }

    public override string ToString() => Id;

    /// <summary>True for <c>s-</c> followed by exactly 16 lower-case hex digits.</summary>
    public static bool IsValidId(string? id) =>
        id is { Length: 18 } && id.StartsWith("s-", StringComparison.Ordinal) && id.AsSpan(2).IndexOfAnyExcept("0123456789abcdef") < 0;

    /// <summary>A fresh random id (64 bits from the system CSPRNG).</summary>
    public static string NewId() => "s-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    /// <summary>
    /// Reads <c>STATEDIR/server-id</c>, or creates it (and the directory) with a new random id. The file is written
    /// to a temporary name, fsynced, then published with link(2), which fails when the name exists: of two
    /// processes racing on a new state directory one id wins and both return it. The directory is fsynced after.
    /// </summary>
    /// <exception cref="CorruptDataException">The file exists but does not hold a valid id (the message names the file).</exception>
    /// <exception cref="NativeIoException">The state directory is not writable, or its filesystem has no hard links.</exception>
    /// <exception cref="IOException">The state directory cannot be created or the file read.</exception>
    public static ServerIdentity LoadOrCreate(string stateDir)
    {
        ArgumentException.ThrowIfNullOrEmpty(stateDir);
        string dir = Path.GetFullPath(stateDir);
        string path = Path.Combine(dir, FileName);
        if (TryRead(path) is { } existing) return new ServerIdentity(existing, path, created: false);

        Directory.CreateDirectory(dir);
        string fresh = NewId();
        string tmp = Path.Combine(dir, $".{FileName}.{Environment.ProcessId}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                fs.Write(Encoding.ASCII.GetBytes(fresh + "\n"));
                fs.Flush(flushToDisk: true);
            }
            // link(2), not rename(2): rename would replace an identity another process published meanwhile.
            bool won = LinuxFile.TryLinkNoReplace(tmp, path);
            File.Delete(tmp);
            LinuxFile.FsyncDirectory(dir);
            if (won) return new ServerIdentity(fresh, path, created: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
        return new ServerIdentity(TryRead(path) ?? throw Damaged(path, "it vanished while being created"), path, created: false);
    }

    private static string? TryRead(string path)
    {
        byte[] raw;
        try { raw = File.ReadAllBytes(path); }
        catch (FileNotFoundException) { return null; }
        catch (DirectoryNotFoundException) { return null; }
        if (raw.Length > 64) throw Damaged(path, $"{raw.Length} bytes");
        string text = Encoding.ASCII.GetString(raw).Trim();
        if (!IsValidId(text)) throw Damaged(path, raw.Length == 0 ? "it is empty" : $"'{Printable(text)}'");
        return text;
    }

    private static CorruptDataException Damaged(string path, string found) =>
        new($"server identity file '{path}'", $"expected s- and 16 lower-case hex digits, found {found}; restore it, or delete it to register this machine as a new server");

    private static string Printable(string s)
    {
        var b = new StringBuilder(s.Length);
        foreach (char c in s) b.Append(char.IsControl(c) || c > '~' ? '?' : c);
        return b.ToString();
    }
}
