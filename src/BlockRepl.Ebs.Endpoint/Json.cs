using System.Text.Json.Serialization;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>StartSnapshot's request body (ref/ebs.md §2); member names are the wire names.</summary>
internal sealed class StartSnapshotBody
{
    public long? VolumeSize { get; set; }
    public string? ParentSnapshotId { get; set; }
    public List<TagBody>? Tags { get; set; }
    public string? Description { get; set; }
    public string? ClientToken { get; set; }
    public bool? Encrypted { get; set; }
    public string? KmsKeyArn { get; set; }
    public int? Timeout { get; set; }
}

internal sealed class TagBody
{
    public string? Key { get; set; }
    public string? Value { get; set; }
}

/// <summary>One snapshot's metadata file (snapshot.json), replaced atomically on every state change.</summary>
internal sealed class SnapshotMeta
{
    public int FormatVersion { get; set; } = 1;
    public required string SnapshotId { get; set; }
    public long VolumeSize { get; set; }
    public string? ParentSnapshotId { get; set; }
    public bool Encrypted { get; set; }
    public string? KmsKeyArn { get; set; }
    public string? Description { get; set; }
    public List<TagBody>? Tags { get; set; }
    public string? ClientToken { get; set; }
    public string Fingerprint { get; set; } = "";
    public int TimeoutMinutes { get; set; }
    /// <summary>pending, completing (CompleteSnapshot accepted; still reported as pending), completed, error.</summary>
    public string State { get; set; } = "pending";
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset? CompletedTime { get; set; }
    public int? ChangedBlocksCount { get; set; }
    public string? ErrorMessage { get; set; }
}

/// <summary>Counters of one operation, as GET /_blockrepl/stats reports them.</summary>
public sealed class EbsOperationStats
{
    /// <summary>Requests routed to the operation (including rejected ones).</summary>
    public long Requests { get; set; }
    /// <summary>Requests answered with a 2xx.</summary>
    public long Succeeded { get; set; }
    /// <summary>Requests answered RequestThrottledException.</summary>
    public long Throttled { get; set; }
    /// <summary>Requests answered with another 4xx (validation, state, auth, not found, conflict, quota).</summary>
    public long ClientErrors { get; set; }
    /// <summary>Requests answered with a 5xx (injected or real).</summary>
    public long ServerErrors { get; set; }
}

/// <summary>What GET /_blockrepl/stats returns.</summary>
public sealed class EbsEndpointStats
{
    /// <summary>Per operation name (StartSnapshot, PutSnapshotBlock, …).</summary>
    public Dictionary<string, EbsOperationStats> Operations { get; set; } = [];
    /// <summary>Bytes of block data accepted by PutSnapshotBlock.</summary>
    public long BytesWritten { get; set; }
    /// <summary>Bytes of block data served by GetSnapshotBlock.</summary>
    public long BytesRead { get; set; }
    /// <summary>Snapshots by state (pending, completed, error).</summary>
    public Dictionary<string, int> Snapshots { get; set; } = [];
}

/// <summary>What GET /_blockrepl/snapshots/{id} returns (an EC2 DescribeSnapshots stand-in).</summary>
internal sealed class SnapshotDescription
{
    public required string SnapshotId { get; set; }
    public required string Status { get; set; }
    public long VolumeSize { get; set; }
    public string? ParentSnapshotId { get; set; }
    public bool Encrypted { get; set; }
    public string? KmsKeyArn { get; set; }
    public string? Description { get; set; }
    public DateTimeOffset StartTime { get; set; }
    public DateTimeOffset? CompletedTime { get; set; }
    public int BlocksWritten { get; set; }
    public string? ErrorMessage { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = false, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(StartSnapshotBody))]
[JsonSerializable(typeof(SnapshotMeta))]
[JsonSerializable(typeof(EbsEndpointStats))]
[JsonSerializable(typeof(SnapshotDescription))]
internal sealed partial class EndpointJson : JsonSerializerContext;
