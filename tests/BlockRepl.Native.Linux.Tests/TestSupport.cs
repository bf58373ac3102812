using System.Diagnostics;
using BlockRepl.Native.Linux;

namespace BlockRepl.Native.Linux.Tests;

/// <summary>A unique directory under the temp path, removed on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = Directory.CreateTempSubdirectory("blockrepl-native-").FullName;
    }

    public string Path { get; }

    public string Combine(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a leftover temp dir must not turn a passing test red.
        }
    }
}

/// <summary>A [Fact] that is skipped, with the reason shown, unless the process runs as root.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (!LinuxFile.IsRoot)
        {
            Skip = "Requires root (creates a loop device with losetup); run the suite as root to cover block devices.";
        }
    }
}

internal static class Shell
{
    /// <summary>Runs a tool, fails the test with its stderr on a non-zero exit, returns trimmed stdout.</summary>
    public static string Run(string fileName, params string[] arguments)
    {
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {fileName}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{fileName} {string.Join(' ', arguments)} did not finish in 30 s");
        }

        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"{fileName} {string.Join(' ', arguments)} exited {process.ExitCode}: {stderr.Result.Trim()}");
        }

        return stdout.Result.Trim();
    }
}
