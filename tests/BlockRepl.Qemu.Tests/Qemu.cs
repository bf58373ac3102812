using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.Qemu.Tests;

/// <summary>A scratch directory with one qcow2 image and a daemon runtime directory; helpers around qemu-img and qemu-io.</summary>
internal sealed class Scratch : IDisposable
{
    public const long Mi = 1024 * 1024;
    public const long ImageSize = 64 * Mi;

    private readonly TempDir _dir = new("blockrepl-qemu");

    public Scratch()
    {
        Image = _dir.File("vm.qcow2");
        Processes.Run("qemu-img", $"create -q -f qcow2 {Processes.Quote(Image)} {ImageSize}");
        Directory.CreateDirectory(Runtime);
    }

    public string Image { get; }

    public string Runtime => _dir.File("run");

    public string File(string name) => _dir.File(name);

    public QemuStorageDaemonOptions Options(string? runtime = null, string? image = null) =>
        new() { ImagePath = image ?? Image, RuntimeDirectory = runtime ?? Runtime, NodeName = "vm" };

    public void Dispose() => _dir.Dispose();

    /// <summary>Writes with qemu-io through an NBD export (the "guest").</summary>
    public static void Write(string nbdSocket, string export, byte pattern, long offset, long length) =>
        QemuIo(nbdSocket, export, false, $"write -P 0x{pattern:x2} {offset} {length}");

    /// <summary>True when the range reads back as <paramref name="pattern"/> through the export (qemu-io exits 1 on a mismatch).</summary>
    public static bool ReadsAs(string nbdSocket, string export, byte pattern, long offset, long length) =>
        QemuIo(nbdSocket, export, true, $"read -P 0x{pattern:x2} {offset} {length}") == 0;

    private static int QemuIo(string nbdSocket, string export, bool readOnly, string command)
    {
        string uri = $"nbd+unix:///{export}?socket={nbdSocket}";
        var (code, stdout, stderr) = Processes.Run("qemu-io", $"{(readOnly ? "-r " : "")}-f raw {Processes.Quote(uri)} -c {Processes.Quote(command)}", check: false);
        if (code != 0 && !stdout.Contains("Pattern verification failed", StringComparison.Ordinal))
            throw new InvalidOperationException($"qemu-io {command} on {uri} failed ({code}): {stderr}{stdout}");
        return code;
    }

    /// <summary>The bitmaps qemu-img sees in the image header: (name, flags). -U: also while a daemon holds the image.</summary>
    public static IReadOnlyList<(string Name, string[] Flags)> ImageBitmaps(string image, bool shared = false)
    {
        string json = Processes.Run("qemu-img", $"info {(shared ? "-U " : "")}--output=json {Processes.Quote(image)}").Stdout;
        using var doc = JsonDocument.Parse(json);
        if (!doc.RootElement.TryGetProperty("format-specific", out var fs) || !fs.GetProperty("data").TryGetProperty("bitmaps", out var bitmaps))
            return [];
        return [.. bitmaps.EnumerateArray().Select(b => (b.GetProperty("name").GetString()!, b.GetProperty("flags").EnumerateArray().Select(f => f.GetString()!).ToArray()))];
    }
}
