using System.Text;
using BlockRepl.Core.Formats;

namespace BlockRepl.Core.Tests;

public class ManifestTests
{
    private static Manifest Sample() => new()
    {
        Id = "0123456789abcdef0123456789abcdef",
        Time = new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.FromHours(1)),
        Host = "host-1",
        Source = "/dev/nvme1n1",
        SourceKey = "dev:259:1",
        Size = 10L << 30,
        ChunkSize = 65536,
        LeafFanout = ChunkGeometry.LeafFanout,
        NodeFanout = ChunkGeometry.NodeFanout,
        TreeLevels = 3,
        Root = TestData.Id(1).ToString(),
        Parent = "fedcba9876543210fedcba9876543210",
        Mode = "INCREMENTAL",
        Tags = ["nightly", "db"],
        Stats = new ManifestStats
        {
            ScannedBytes = 1, ZeroBytes = 2, ChangedBytes = 3, NewBytes = 4, StoredBytes = 5, MetadataBytes = 6,
            ChangedChunks = 7, NewChunks = 8, ChangedBlocks = 9, Seconds = 1.25,
        },
    };

    private static RepoConfig SampleConfig() => new()
    {
        RepoId = "00112233445566778899aabbccddeeff",
        ChunkSize = 65536,
        PackTargetSize = ChunkGeometry.DefaultPackTargetSize,
        Created = new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero),
    };

    private static byte[] ManifestFile(string json) => Envelope.Wrap(Manifest.Magic, Manifest.Version, Encoding.UTF8.GetBytes(json));
    private static byte[] ConfigFile(string json) => Envelope.Wrap(RepoConfig.Magic, RepoConfig.Version, Encoding.UTF8.GetBytes(json));
    private static string Json(byte[] file) => Encoding.UTF8.GetString(file.AsSpan(Envelope.HeaderSize, file.Length - Envelope.HeaderSize - Envelope.TrailerSize));

    [Fact]
    public void ManifestRoundTrips()
    {
        var m = Sample();
        var back = Manifest.Deserialize(m.Serialize(), "manifest m");
        Assert.Equal(m.Id, back.Id);
        Assert.Equal(m.Time, back.Time);
        Assert.Equal(m.Time.Offset, back.Time.Offset);
        Assert.Equal(m.Host, back.Host);
        Assert.Equal(m.Source, back.Source);
        Assert.Equal(m.SourceKey, back.SourceKey);
        Assert.Equal(m.Size, back.Size);
        Assert.Equal(m.ChunkSize, back.ChunkSize);
        Assert.Equal(m.LeafFanout, back.LeafFanout);
        Assert.Equal(m.NodeFanout, back.NodeFanout);
        Assert.Equal(m.TreeLevels, back.TreeLevels);
        Assert.Equal(m.Root, back.Root);
        Assert.Equal(m.Parent, back.Parent);
        Assert.Equal(m.Mode, back.Mode);
        Assert.Equal(m.Tags, back.Tags);
        Assert.Equivalent(m.Stats, back.Stats, strict: true);
    }

    [Fact]
    public void ManifestWithoutParentOrTagsRoundTrips()
    {
        var m = Sample();
        m.Parent = null;
        m.Tags = [];
        var back = Manifest.Deserialize(m.Serialize(), "manifest m");
        Assert.Null(back.Parent);
        Assert.Empty(back.Tags);
    }

    [Fact]
    public void ManifestJsonUsesCamelCaseNames()
    {
        string json = Json(Sample().Serialize());
        Assert.Contains("\"id\":", json, StringComparison.Ordinal);
        Assert.Contains("\"treeLevels\":3", json, StringComparison.Ordinal);
        Assert.Contains("\"changedBytes\":3", json, StringComparison.Ordinal);
    }

    [Fact]
    public void EveryBitFlipInAManifestIsDetected()
    {
        var file = Sample().Serialize();
        for (int bit = 0; bit < file.Length * 8; bit += 3)
        {
            var copy = (byte[])file.Clone();
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => Manifest.Deserialize(copy, "manifest m"));
            Assert.True(ex is CorruptDataException, $"flip in byte {bit / 8}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("")]
    [InlineData("null")]
    [InlineData("[]")]
    [InlineData("{\"id\":\"x\"}")]
    public void MalformedManifestJsonIsCorrupt(string json)
    {
        var ex = Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(ManifestFile(json), "manifest m"));
        Assert.Equal("manifest m", ex.What);
    }

    [Fact]
    public void TruncatedJsonInsideAValidEnvelopeIsCorrupt()
    {
        string json = Json(Sample().Serialize());
        Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(ManifestFile(json[..^1]), "manifest m"));
    }

    [Theory]
    [InlineData("\"size\":10737418240", "\"size\":-1")]
    [InlineData("\"chunkSize\":65536", "\"chunkSize\":0")]
    [InlineData("\"treeLevels\":3", "\"treeLevels\":0")]
    [InlineData("\"leafFanout\":64", "\"leafFanout\":0")]
    [InlineData("\"nodeFanout\":256", "\"nodeFanout\":-256")]
    [InlineData("\"size\":10737418240", "\"size\":\"big\"")]
    public void InvalidManifestFieldsAreRejected(string field, string replacement)
    {
        string json = Json(Sample().Serialize());
        Assert.Contains(field, json, StringComparison.Ordinal);
        var file = ManifestFile(json.Replace(field, replacement, StringComparison.Ordinal));
        Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(file, "manifest m"));
    }

    [Theory]
    [InlineData("\"root\":\"")]
    [InlineData("\"id\":\"")]
    [InlineData("\"host\":\"")]
    public void NullRequiredStringIsCorruptNotANullReferenceLater(string field)
    {
        // Regression: without RespectNullableAnnotations, "root":null deserialized and crashed the restore walk.
        string json = Json(Sample().Serialize());
        int start = json.IndexOf(field, StringComparison.Ordinal) + field.Length - 1;
        int end = json.IndexOf('"', start + 1);
        string broken = json[..start] + "null" + json[(end + 1)..];
        Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(ManifestFile(broken), "manifest m"));
    }

    [Theory]
    [InlineData("\"tags\":[\"nightly\",\"db\"]", "\"tags\":null")]
    [InlineData("\"stats\":{", "\"stats\":null,\"x\":{")]
    public void NullCollectionsAreCorrupt(string field, string replacement)
    {
        string json = Json(Sample().Serialize());
        Assert.Contains(field, json, StringComparison.Ordinal);
        var file = ManifestFile(json.Replace(field, replacement, StringComparison.Ordinal));
        Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(file, "manifest m"));
    }

    [Fact]
    public void NullRepoIdIsCorrupt()
    {
        string json = Json(SampleConfig().Serialize()).Replace("\"00112233445566778899aabbccddeeff\"", "null", StringComparison.Ordinal);
        Assert.Throws<CorruptDataException>(() => RepoConfig.Deserialize(ConfigFile(json), "config"));
    }

    [Fact]
    public void NewerManifestVersionIsUnsupported()
    {
        var file = Envelope.Wrap(Manifest.Magic, Manifest.Version + 1, Encoding.UTF8.GetBytes(Json(Sample().Serialize())));
        Assert.Throws<UnsupportedFormatException>(() => Manifest.Deserialize(file, "manifest m"));
    }

    [Fact]
    public void ConfigIsNotAManifestAndViceVersa()
    {
        Assert.Throws<CorruptDataException>(() => Manifest.Deserialize(SampleConfig().Serialize(), "manifest m"));
        Assert.Throws<CorruptDataException>(() => RepoConfig.Deserialize(Sample().Serialize(), "config"));
    }

    [Fact]
    public void RepoConfigRoundTrips()
    {
        var c = SampleConfig();
        var back = RepoConfig.Deserialize(c.Serialize(), "config");
        Assert.Equal(c.RepoId, back.RepoId);
        Assert.Equal(c.ChunkSize, back.ChunkSize);
        Assert.Equal(c.PackTargetSize, back.PackTargetSize);
        Assert.Equal(c.Created, back.Created);
    }

    [Fact]
    public void RepoConfigJsonMatchesTheSpec()
    {
        string json = Json(SampleConfig().Serialize());
        Assert.Equal("{\"repoId\":\"00112233445566778899aabbccddeeff\",\"chunkSize\":65536,\"packTargetSize\":33554432,\"created\":\"2026-11-25T12:00:00+00:00\"}", json);
    }

    [Fact]
    public void EveryBitFlipInAConfigIsDetected()
    {
        var file = SampleConfig().Serialize();
        for (int bit = 0; bit < file.Length * 8; bit++)
        {
            var copy = (byte[])file.Clone();
            copy[bit / 8] ^= (byte)(1 << (bit % 8));
            var ex = Record.Exception(() => RepoConfig.Deserialize(copy, "config"));
            Assert.True(ex is CorruptDataException, $"flip of bit {bit % 8} in byte {bit / 8}: {ex?.GetType().Name ?? "not detected"}");
        }
    }

    [Theory]
    [InlineData("{oops")]
    [InlineData("{}")]
    [InlineData("null")]
    public void MalformedConfigJsonIsCorrupt(string json)
    {
        Assert.Throws<CorruptDataException>(() => RepoConfig.Deserialize(ConfigFile(json), "config"));
    }

    [Theory]
    [InlineData("\"chunkSize\":65536", "\"chunkSize\":65535")]
    [InlineData("\"chunkSize\":65536", "\"chunkSize\":2048")]
    [InlineData("\"chunkSize\":65536", "\"chunkSize\":1048576")]
    [InlineData("\"packTargetSize\":33554432", "\"packTargetSize\":1000")]
    [InlineData("\"packTargetSize\":33554432", "\"packTargetSize\":-1")]
    public void InvalidConfigFieldsAreRejected(string field, string replacement)
    {
        string json = Json(SampleConfig().Serialize());
        var file = ConfigFile(json.Replace(field, replacement, StringComparison.Ordinal));
        Assert.Throws<CorruptDataException>(() => RepoConfig.Deserialize(file, "config"));
    }

    [Fact]
    public void NewerConfigVersionIsUnsupported()
    {
        var file = Envelope.Wrap(RepoConfig.Magic, RepoConfig.Version + 1, Encoding.UTF8.GetBytes(Json(SampleConfig().Serialize())));
        Assert.Throws<UnsupportedFormatException>(() => RepoConfig.Deserialize(file, "config"));
    }
}
