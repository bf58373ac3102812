using BlockRepl.Core.Hashing;
using BlockRepl.Engine;
using BlockRepl.Engine.Ebs;
using BlockRepl.TestKit;

namespace BlockRepl.Core.Tests;

/// <summary>The EBS block map and journal (docs/ebs.md §3–4): seal/validate, torn tails, intent vs ack replay, size limits.</summary>
public sealed class EbsStateTests : IDisposable
{
    private readonly TempDir _dir = new("blockrepl-ebs-state");
    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1L, 1L)]
    [InlineData(1L << 30, 1L)]
    [InlineData((1L << 30) + 1, 2L)]
    [InlineData(65536L << 30, 65536L)]
    public void Volume_size_rounds_up_to_whole_GiB(long bytes, long gib) =>
        Assert.Equal(gib, EbsReplicator.CheckVolumeSize(bytes, "/dev/x"));

    [Fact]
    public void A_source_over_64_TiB_is_refused_with_a_clear_error()
    {
        var e = Assert.Throws<SourceException>(() => EbsReplicator.CheckVolumeSize((65536L << 30) + 1, "/dev/huge"));
        Assert.Contains("64 TiB", e.Message);
        Assert.Contains("/dev/huge", e.Message);
    }

    [Fact]
    public void Sealed_map_opens_only_for_its_snapshot_chain_and_size_and_detects_corruption()
    {
        string path = _dir.File("m.map");
        long bytes = 5L * EbsBlockMap.BlockSize + 7;
        long count = EbsBlockMap.BlockCount(bytes);
        Assert.Equal(6, count);
        using (var h = EbsBlockMap.CreateZero(path + ".new", count))
        {
            var entry = new byte[EbsBlockMap.EntrySize];
            entry.AsSpan().Fill(0x5A);
            RandomAccess.Write(h, entry, EbsBlockMap.EntryOffset(3));
            EbsBlockMap.Seal(h, path + ".new", new EbsBlockMap.Header(bytes, count, "snap-0abc", "chain1"));
        }
        File.Move(path + ".new", path);
        using (var ok = EbsBlockMap.TryOpen(path, bytes, "snap-0abc", "chain1", out string? why)) Assert.True(ok is not null, why);
        Assert.Null(EbsBlockMap.TryOpen(path, bytes, "snap-0abd", "chain1", out string? r1));
        Assert.Contains("another snapshot", r1);
        Assert.Null(EbsBlockMap.TryOpen(path, bytes, "snap-0abc", "chain2", out string? r2));
        Assert.Contains("another chain", r2);
        Assert.Null(EbsBlockMap.TryOpen(path, bytes + EbsBlockMap.BlockSize, "snap-0abc", "chain1", out string? r3));
        Assert.Contains("size changed", r3);
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) { f.Position = EbsBlockMap.EntryOffset(3) + 5; f.WriteByte(0); }
        Assert.Null(EbsBlockMap.TryOpen(path, bytes, "snap-0abc", "chain1", out string? r4));
        Assert.Contains("corrupt", r4);
    }

    [Fact]
    public void Journal_replays_acks_and_intents_stops_at_a_torn_record_and_discards_another_snapshots_journal()
    {
        string path = _dir.File("j.journal");
        var sha = new byte[32];
        sha.AsSpan().Fill(7);
        var hash = BlockHash.Compute("block five"u8);
        using (var j = EbsJournal.Open(path, "snap-01", out var none))
        {
            Assert.Empty(none);
            j.AppendIntent(5);
            j.AppendAck(5, hash, sha);
            j.AppendIntent(9);
            j.Sync();
        }
        using (var j = EbsJournal.Open(path, "snap-01", out var entries))
        {
            Assert.Equal(3, entries.Count);
            Assert.True(entries[1].Acked);
            Assert.Equal(5, entries[1].Index);
            Assert.Equal(hash, entries[1].Hash);
            Assert.Equal(sha, entries[1].Sha256);
            Assert.False(entries[2].Acked);
            Assert.Equal(9, entries[2].Index);
        }
        // Tear the last record: replay stops before it and the file is trimmed to the good part.
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) { f.Position = f.Length - 3; f.WriteByte(0xEE); }
        using (var j = EbsJournal.Open(path, "snap-01", out var entries)) Assert.Equal(2, entries.Count);
        Assert.Equal(64 + 2 * 64, new FileInfo(path).Length);
        using (var j = EbsJournal.Open(path, "snap-02", out var other)) Assert.Empty(other);
        using (var j = EbsJournal.Open(path, "snap-01", out var gone)) Assert.Empty(gone);
    }

    [Fact]
    public async Task Journal_durability_waits_complete_after_an_fsync_round()
    {
        using var j = EbsJournal.Open(_dir.File("d.journal"), "snap-01", out _);
        long seq = j.AppendIntent(1);
        await j.WhenDurableAsync(seq).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(j.WhenDurableAsync(seq).IsCompleted);
    }
}
