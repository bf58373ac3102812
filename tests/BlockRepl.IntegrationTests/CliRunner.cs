using System.Diagnostics;

namespace BlockRepl.IntegrationTests;

/// <summary>Runs the real <c>blockrepl</c> binary (built next to the tests) as a child process.</summary>
public static class CliRunner
{
    public static string DllPath { get; } = Path.Combine(AppContext.BaseDirectory, "blockrepl.dll");

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
    }

    /// <summary>Starts blockrepl with <paramref name="args"/>; --no-progress is not added automatically.</summary>
    public static Process Start(IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(DllPath);
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    public static Result Run(params string[] args) => Run(args, null, TimeSpan.FromMinutes(5));

    public static Result Run(IEnumerable<string> args, IDictionary<string, string>? env, TimeSpan timeout)
    {
        using var p = Start(args, env);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"blockrepl {string.Join(' ', args)} did not finish in {timeout}");
        }
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs and asserts exit code 0, returning stdout.</summary>
    public static string Ok(params string[] args)
    {
        var r = Run(args);
        if (r.ExitCode != 0) throw new Xunit.Sdk.XunitException($"blockrepl {string.Join(' ', args)} failed: {r}");
        return r.Stdout;
    }
}
