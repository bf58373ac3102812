using System.Text.Json;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// An NBD export as the source of `backup` (issue #5, first step): qemu-nbd serving a raw or qcow2 image over a unix
/// socket or TCP; full then incremental; restore byte-compared; base:allocation skips what reads as zeros.
/// </summary>
public sealed class NbdSourceTests : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-nbd-source");
    public void Dispose() => _dir.Dispose();

    private static void Qemu(params string[] args)
    {
        var r = Processes.Run(args[0], string.Join(' ', args[1..].Select(Processes.Quote)), check: false);
        Assert.True(r.ExitCode == 0, $"{string.Join(' ', args)}: {r.Stderr}");
    }

    [Theory]
    [InlineData("raw")]
    [InlineData("qcow2")]
    public async Task Backup_from_an_NBD_export_restores_byte_identical_and_skips_unallocated_ranges(string format)
    {
        string raw = _dir.File("disk.raw");
        long size = 40L << 20;
        DiskImages.Sparse(raw, size, seed: 17, dataOffsets: [0, 9L << 20, 30L << 20], dataLength: 1 << 20);
        string image = raw;
        if (format == "qcow2")
        {
            image = _dir.File("disk.qcow2");
            Qemu("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, image);
        }
        string repo = _dir.File("repo"), state = _dir.File("state"), socket = _dir.File("vol.sock");
        JsonElement full;
        await using (var server = await NbdServer.StartQemuNbdOnSocketAsync(_dir, image, format, "vol", socket))
        {
            full = Cli.Backup(server.Uri.ToString(), repo, state);
            Assert.Equal("FULL", full.Str("mode"));
            Assert.True(full.Long("holeBytes") >= 30L << 20, $"base:allocation skipped only {full.Long("holeBytes")} bytes");
        }
        Cli.Restore(full.Str("id"), repo, _dir.File("r1.img"));
        Assert.True(Files.ContentEquals(raw, _dir.File("r1.img")));

        // Change the image (through qemu-io, so qcow2 stays consistent), back up again through a new server.
        if (format == "qcow2") Qemu("qemu-io", "-f", format, "-c", "write -P 0x5a 12M 64k", "-c", "write -z 0 64k", image);
        Qemu("qemu-io", "-f", "raw", "-c", "write -P 0x5a 12M 64k", "-c", "write -z 0 64k", raw);
        await using (var server = await NbdServer.StartQemuNbdOnSocketAsync(_dir, image, format, "vol", socket))
        {
            var incr = Cli.Backup(server.Uri.ToString(), repo, state);
            Assert.Equal("INCREMENTAL", incr.Str("mode"));
            Assert.Equal(2 * 65536, incr.Long("changedBytes"));
            Cli.Restore(incr.Str("id"), repo, _dir.File("r2.img"));
        }
        Assert.True(Files.ContentEquals(raw, _dir.File("r2.img")));
    }

    [Fact]
    public async Task Read_errors_from_the_server_fail_the_run_cleanly_and_delays_only_slow_it()
    {
        string raw = _dir.File("disk.raw");
        DiskImages.Sparse(raw, 24L << 20, seed: 5, dataOffsets: [0, 8L << 20], dataLength: 1 << 20);
        string repo = _dir.File("repo"), state = _dir.File("state");
        CliRunner.Ok("init", "--repo", repo);

        // nbdkit's error filter fails every read with EIO: one line, exit 3, no recovery point.
        await using (var failing = await NbdServer.StartNbdkitAsync(_dir, ["file", $"file={raw}", "error-pread=EIO", "error-pread-rate=100%"], false, "--filter=error"))
        {
            var r = CliRunner.Run("backup", failing.Uri.ToString(), "--repo", repo, "--state-dir", state, "--no-progress");
            Cli.AssertOneLineError(r, 3, mentions: "EIO");
        }
        Assert.Empty(Cli.Snapshots(repo));

        // The delay filter: every read takes 50 ms longer; the backup is just slower, and exact.
        await using (var slow = await NbdServer.StartNbdkitAsync(_dir, ["file", $"file={raw}", "rdelay=50ms"], false, "--filter=delay"))
        {
            var full = Cli.Backup(slow.Uri.ToString(), repo, state);
            Assert.Equal("FULL", full.Str("mode"));
            Cli.Restore(full.Str("id"), repo, _dir.File("slow.img"));
        }
        Assert.True(Files.ContentEquals(raw, _dir.File("slow.img")));
    }

    [Fact]
    public void An_unreachable_or_malformed_NBD_source_is_a_one_line_source_error()
    {
        var r = CliRunner.Run("backup", $"nbd+unix:///vol?socket={_dir.File("missing.sock")}", "--repo", _dir.File("repo"), "--state-dir", _dir.File("s"), "--no-progress");
        Cli.AssertOneLineError(r, 3);
        r = CliRunner.Run("backup", "nbd://", "--repo", _dir.File("repo"), "--state-dir", _dir.File("s"), "--no-progress");
        Cli.AssertOneLineError(r, 3);
    }
}
