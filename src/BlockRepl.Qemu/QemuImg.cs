using System.Diagnostics;
using System.Globalization;

namespace BlockRepl.Qemu;

/// <summary>The few <c>qemu-img</c> calls the live flow needs.</summary>
public static class QemuImg
{
    /// <summary>
    /// <c>qemu-img create -f qcow2 FILE SIZE</c>: an empty qcow2 with no backing file in its header, e.g. the
    /// scratch file of a fleecing overlay (same virtual size as the node it shadows).
    /// </summary>
    /// <exception cref="InvalidOperationException">qemu-img is missing or failed; the message carries its stderr.</exception>
    public static async Task CreateQcow2Async(string path, long virtualSize, CancellationToken ct = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(virtualSize);
        // An absolute path: a relative name with a ':' before any '/' would be taken as a protocol prefix.
        await RunAsync(["create", "-q", "-f", "qcow2", Path.GetFullPath(path), virtualSize.ToString(CultureInfo.InvariantCulture)], ct).ConfigureAwait(false);
    }

    /// <summary>Runs qemu-img with the arguments and returns its standard output; nonzero exit → <see cref="InvalidOperationException"/>.</summary>
    public static async Task<string> RunAsync(IEnumerable<string> arguments, CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo("qemu-img")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string a in arguments) psi.ArgumentList.Add(a);
        using var process = StartOrExplain(psi);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        try
        {
            await process.WaitForExitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(); }
            catch (InvalidOperationException) { }
            throw;
        }
        string output = await stdout.ConfigureAwait(false);
        string error = (await stderr.ConfigureAwait(false)).Trim();
        if (process.ExitCode != 0)
            throw new InvalidOperationException(QmpException.OneLine($"qemu-img {string.Join(' ', psi.ArgumentList)} exited with code {process.ExitCode}: {error}"));
        return output;
    }

    internal static Process StartOrExplain(ProcessStartInfo psi)
    {
        try
        {
            return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"could not start {psi.FileName}: {e.Message} (is QEMU installed: qemu-utils, qemu-system-common?)", e);
        }
    }
}
