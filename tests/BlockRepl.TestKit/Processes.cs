using System.Diagnostics;
using System.Text;

namespace BlockRepl.TestKit;

/// <summary>Runs external programs (mkfs, losetup, the CLI under test) with captured output.</summary>
public static class Processes
{
    /// <summary>
    /// Directories searched after <c>PATH</c>: admin tools such as <c>mkfs.ext4</c> and <c>losetup</c>
    /// live in sbin, which is not on a non-root user's <c>PATH</c> on Debian.
    /// </summary>
    private static readonly string[] s_extraDirs = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

    /// <summary>
    /// Runs <paramref name="file"/> with <paramref name="args"/> (a command line, split with the usual
    /// double-quote rules), captures both streams and waits for it to exit. Standard input is closed.
    /// </summary>
    /// <param name="file">Program name (looked up in PATH, then sbin) or path.</param>
    /// <param name="args">Arguments; quote paths with <see cref="Quote"/>.</param>
    /// <param name="check">Throw <see cref="InvalidOperationException"/> on a nonzero exit code.</param>
    /// <param name="timeout">Default 5 minutes; on expiry the process tree is killed and <see cref="TimeoutException"/> thrown.</param>
    /// <param name="workingDir">Working directory, default the current one.</param>
    /// <param name="env">Variables added to (or overriding) the inherited environment.</param>
    public static (int ExitCode, string Stdout, string Stderr) Run(
        string file,
        string args,
        bool check = true,
        TimeSpan? timeout = null,
        string? workingDir = null,
        IDictionary<string, string>? env = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        TimeSpan limit = timeout ?? TimeSpan.FromMinutes(5);

        var psi = new ProcessStartInfo(FindCommand(file) ?? file, args ?? string.Empty)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        if (workingDir is not null)
        {
            psi.WorkingDirectory = workingDir;
        }

        if (env is not null)
        {
            foreach ((string key, string value) in env)
            {
                psi.Environment[key] = value;
            }
        }

        using var process = new Process { StartInfo = psi };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.Append(e.Data).Append('\n'); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.Append(e.Data).Append('\n'); } } };

        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"Could not start '{file}': {ex.Message}. Is it installed and on PATH?", ex);
        }

        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        if (!process.WaitForExit(limit))
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Exited between the timeout and the kill.
            }

            process.WaitForExit();
            throw new TimeoutException($"'{file} {args}' did not finish within {limit.TotalSeconds:0} s and was killed. stderr: {Tail(stderr)}");
        }

        // The parameterless overload waits for the asynchronous readers to reach end of stream.
        process.WaitForExit();
        string outText, errText;
        lock (stdout)
        {
            outText = stdout.ToString();
        }

        lock (stderr)
        {
            errText = stderr.ToString();
        }

        if (check && process.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"'{file} {args}' exited with code {process.ExitCode}. stderr: {Tail(errText)}{(errText.Length == 0 ? "stdout: " + Tail(outText) : string.Empty)}");
        }

        return (process.ExitCode, outText, errText);
    }

    /// <summary>True when <paramref name="name"/> is an executable file on PATH or in an sbin directory (or, if it contains '/', at that path).</summary>
    public static bool HasCommand(string name) => FindCommand(name) is not null;

    /// <summary>Quotes one argument for the command-line string of <see cref="Run"/>.</summary>
    public static string Quote(string arg)
    {
        ArgumentNullException.ThrowIfNull(arg);
        if (arg.Length > 0 && arg.AsSpan().IndexOfAny(" \t\n\"\\'") < 0)
        {
            return arg;
        }

        // ProcessStartInfo splits Arguments with the MSVCRT rules on every OS: backslashes are literal
        // unless they precede a quote, in which case they must be doubled.
        var sb = new StringBuilder("\"");
        int backslashes = 0;
        foreach (char c in arg)
        {
            if (c == '\\')
            {
                backslashes++;
                continue;
            }

            if (c == '"')
            {
                sb.Append('\\', (backslashes * 2) + 1);
            }
            else
            {
                sb.Append('\\', backslashes);
            }

            backslashes = 0;
            sb.Append(c);
        }

        sb.Append('\\', backslashes * 2).Append('"');
        return sb.ToString();
    }

    /// <summary>Full path of an executable, or null.</summary>
    internal static string? FindCommand(string name)
    {
        if (string.IsNullOrEmpty(name))
        {
            return null;
        }

        if (name.Contains('/'))
        {
            return IsExecutable(name) ? name : null;
        }

        string[] pathDirs = (Environment.GetEnvironmentVariable("PATH") ?? string.Empty)
            .Split(':', StringSplitOptions.RemoveEmptyEntries);
        foreach (string dir in pathDirs.Concat(s_extraDirs))
        {
            string candidate = System.IO.Path.Combine(dir, name);
            if (IsExecutable(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    private static bool IsExecutable(string path)
    {
        if (!File.Exists(path))
        {
            return false;
        }

        if (OperatingSystem.IsWindows())
        {
            return true;
        }

        const UnixFileMode anyExecute = UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
        return (File.GetUnixFileMode(path) & anyExecute) != 0;
    }

    private static string Tail(StringBuilder sb)
    {
        lock (sb)
        {
            return Tail(sb.ToString());
        }
    }

    private static string Tail(string text)
    {
        const int max = 2000;
        text = text.Trim();
        return text.Length <= max ? text : "…" + text[^max..];
    }
}
