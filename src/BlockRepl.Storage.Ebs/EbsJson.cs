using System.Text.Json.Serialization;

namespace BlockRepl.Storage.Ebs;

// Wire shapes of the rest-json bodies (member names exactly as in the service model). Every response member is
// nullable: real responses carry explicit nulls ("Tags": null) and members the model lacks ("Progress"), and
// timestamps are epoch seconds as JSON numbers, possibly fractional or in exponent form (1.59298379649E9).

internal sealed class StartSnapshotBody
{
    // VolumeSize, Timeout, ClientToken first: the order of the SigV4 test vector C (any order is valid JSON).
    public long VolumeSize { get; set; }
    public int? Timeout { get; set; }
    public string? ClientToken { get; set; }
    public string? ParentSnapshotId { get; set; }
    public List<TagDto>? Tags { get; set; }
    public string? Description { get; set; }
    public bool? Encrypted { get; set; }
    public string? KmsKeyArn { get; set; }
}

internal sealed class TagDto
{
    public string? Key { get; set; }
    public string? Value { get; set; }
}

internal sealed class StartSnapshotResponseDto
{
    public string? SnapshotId { get; set; }
    public string? OwnerId { get; set; }
    public string? Status { get; set; }
    public double? StartTime { get; set; }
    public long? VolumeSize { get; set; }
    public int? BlockSize { get; set; }
    public string? ParentSnapshotId { get; set; }
    public string? Description { get; set; }
    public string? KmsKeyArn { get; set; }
    public string? SseType { get; set; }
    public List<TagDto?>? Tags { get; set; }
}

internal sealed class CompleteSnapshotResponseDto
{
    public string? Status { get; set; }
}

internal sealed class BlockDto
{
    public int? BlockIndex { get; set; }
    public string? BlockToken { get; set; }
}

internal sealed class ChangedBlockDto
{
    public int? BlockIndex { get; set; }
    public string? FirstBlockToken { get; set; }
    public string? SecondBlockToken { get; set; }
}

internal sealed class ListSnapshotBlocksResponseDto
{
    public List<BlockDto?>? Blocks { get; set; }
    public double? ExpiryTime { get; set; }
    public long? VolumeSize { get; set; }
    public int? BlockSize { get; set; }
    public string? NextToken { get; set; }
}

internal sealed class ListChangedBlocksResponseDto
{
    public List<ChangedBlockDto?>? ChangedBlocks { get; set; }
    public double? ExpiryTime { get; set; }
    public long? VolumeSize { get; set; }
    public int? BlockSize { get; set; }
    public string? NextToken { get; set; }
}

[JsonSourceGenerationOptions(
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    NumberHandling = JsonNumberHandling.AllowReadingFromString,
    PropertyNameCaseInsensitive = true,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip)]
[JsonSerializable(typeof(StartSnapshotBody))]
[JsonSerializable(typeof(StartSnapshotResponseDto))]
[JsonSerializable(typeof(CompleteSnapshotResponseDto))]
[JsonSerializable(typeof(ListSnapshotBlocksResponseDto))]
[JsonSerializable(typeof(ListChangedBlocksResponseDto))]
internal sealed partial class EbsJsonContext : JsonSerializerContext;

internal static class EbsTime
{
    /// <summary>Epoch seconds (fractional allowed) → UTC; null, NaN or out of range → null.</summary>
    internal static DateTimeOffset? FromEpochSeconds(double? seconds)
    {
        if (seconds is not { } s || !double.IsFinite(s)) return null;
        double ms = Math.Round(s * 1000);
        if (ms < DateTimeOffset.MinValue.ToUnixTimeMilliseconds() || ms > DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()) return null;
        return DateTimeOffset.FromUnixTimeMilliseconds((long)ms);
    }
}
