// The public surface of the EBS direct API client. The engine codes against exactly this; the
// implementation lives beside it (EbsClient.*.cs). See ../../docs/ebs.md for the wire protocol.
namespace BlockRepl.Storage.Ebs;

/// <summary>Where and how to reach the EBS direct APIs.</summary>
public sealed class EbsClientOptions
{
    /// <summary>AWS Region (e.g. us-east-1). Also the SigV4 signing region.</summary>
    public required string Region { get; init; }
    /// <summary>Endpoint override; null means AWS_ENDPOINT_URL_EBS, then AWS_ENDPOINT_URL, then https://ebs.{region}.amazonaws.com.</summary>
    public Uri? EndpointUrl { get; init; }
    /// <summary>Named profile from ~/.aws/config; null means AWS_PROFILE or the default chain.</summary>
    public string? Profile { get; init; }
    /// <summary>Explicit credentials (tests); null means the AWS CLI's chain (env, shared files, SSO, instance role).</summary>
    public Amazon.Runtime.AWSCredentials? Credentials { get; init; }
    /// <summary>PEM file of extra trusted root certificates; null means AWS_CA_BUNDLE, else the system store only.</summary>
    public string? CaBundle { get; init; }
    /// <summary>Upper bound on concurrent PutSnapshotBlock/GetSnapshotBlock calls (the adaptive limiter never goes above it).</summary>
    public int MaxConcurrency { get; init; } = 64;
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Per attempt: a request with no complete response within this is abandoned and retried.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>Attempts per call before the error is surfaced.</summary>
    public int MaxAttempts { get; init; } = 8;
    /// <summary>How long "snapshot does not exist" right after StartSnapshot is retried.</summary>
    public TimeSpan NotFoundGrace { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>How long one call keeps retrying throttling answers (which do not count against <see cref="MaxAttempts"/>).</summary>
    public TimeSpan ThrottleBudget { get; init; } = TimeSpan.FromMinutes(5);
    /// <summary>Upper bound for one backoff sleep.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(10);
}

public sealed record EbsTag(string Key, string Value);

public sealed class StartSnapshotRequest
{
    /// <summary>GiB, 1..65536.</summary>
    public required long VolumeSizeGiB { get; init; }
    public string? ParentSnapshotId { get; init; }
    public IReadOnlyList<EbsTag> Tags { get; init; } = [];
    public string? Description { get; init; }
    /// <summary>Idempotency token; the caller persists it so a restarted run gets the same snapshot back.</summary>
    public required string ClientToken { get; init; }
    public bool? Encrypted { get; init; }
    public string? KmsKeyArn { get; init; }
    /// <summary>Minutes, 10..4320 (AWS default 60).</summary>
    public int? TimeoutMinutes { get; init; }
}

/// <summary>StartSnapshot's answer.</summary>
public sealed record EbsSnapshotInfo(string SnapshotId, string Status, long VolumeSizeGiB, int BlockSize, string? ParentSnapshotId, string? OwnerId);

public readonly record struct EbsBlock(int BlockIndex, string BlockToken);
public readonly record struct EbsChangedBlock(int BlockIndex, string? FirstBlockToken, string? SecondBlockToken);

public sealed record EbsBlockPage(IReadOnlyList<EbsBlock> Blocks, string? NextToken, long VolumeSizeGiB, int BlockSize, DateTimeOffset? ExpiryTime);
public sealed record EbsChangedBlockPage(IReadOnlyList<EbsChangedBlock> ChangedBlocks, string? NextToken, long VolumeSizeGiB, int BlockSize, DateTimeOffset? ExpiryTime);

/// <summary>
/// An error the EBS direct APIs returned (after retries where the type is retryable), or a transport failure
/// that kept failing. <see cref="ErrorType"/> is the x-amzn-ErrorType without namespace or suffix.
/// Messages never contain credentials.
/// </summary>
public sealed class EbsException(string message, string errorType, string? reason, int statusCode, Exception? inner = null)
    : StorageException(message, transient: false, inner)
{
    public string ErrorType { get; } = errorType;
    public string? Reason { get; } = reason;
    public int StatusCode { get; } = statusCode;
    public bool IsNotFound => ErrorType == "ResourceNotFoundException";
    public bool IsThrottling => ErrorType is "RequestThrottledException" or "ThrottlingException" or "ConcurrentLimitExceededException";
    /// <summary>The service's own message (its <c>message</c>/<c>Message</c> member), when there was one.</summary>
    public string? ServiceMessage { get; init; }
    /// <summary>How many attempts were made before giving up (1 when the error was not retryable).</summary>
    public int Attempts { get; init; } = 1;
}

/// <summary>Statistics a caller can show (all counters are totals since the client was created).</summary>
public sealed class EbsClientStats
{
    public long Requests;
    public long Retries;
    public long Throttled;
    /// <summary>The adaptive limiter's current concurrency for block transfers.</summary>
    public int CurrentConcurrency;
    /// <summary>The client-side paced rate for block transfers after throttling, requests/s (0 = unpaced).</summary>
    public double RateLimit;
}

/// <summary>The operations BlockRepl uses. Thread-safe; one instance per endpoint.</summary>
public interface IEbsClient : IDisposable
{
    /// <summary>The endpoint in use (no secrets), for messages.</summary>
    Uri Endpoint { get; }
    string Region { get; }
    EbsClientStats Stats { get; }

    Task<EbsSnapshotInfo> StartSnapshotAsync(StartSnapshotRequest request, CancellationToken ct = default);

    /// <summary>
    /// Writes one 524288-byte block. <paramref name="sha256"/> is the raw 32-byte digest of <paramref name="data"/>
    /// (the caller has it already). Waits for a slot of the adaptive limiter; retries throttling, 5xx, timeouts,
    /// resets and "snapshot does not exist" within <see cref="EbsClientOptions.NotFoundGrace"/>.
    /// </summary>
    Task PutSnapshotBlockAsync(string snapshotId, int blockIndex, ReadOnlyMemory<byte> data, ReadOnlyMemory<byte> sha256, int? progressPercent = null, CancellationToken ct = default);

    /// <summary>Seals the snapshot; returns the status the service reported (usually "pending").</summary>
    Task<string> CompleteSnapshotAsync(string snapshotId, int changedBlocksCount, ReadOnlyMemory<byte>? linearSha256 = null, CancellationToken ct = default);

    Task<EbsBlockPage> ListSnapshotBlocksAsync(string snapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default);

    Task<EbsChangedBlockPage> ListChangedBlocksAsync(string firstSnapshotId, string secondSnapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default);

    /// <summary>
    /// Reads one block into <paramref name="destination"/> (≥ 524288 bytes), verifies x-amz-Checksum (SHA-256) and the
    /// length, retrying a mismatch as a transient error; returns the data length.
    /// </summary>
    Task<int> GetSnapshotBlockAsync(string snapshotId, int blockIndex, string blockToken, Memory<byte> destination, CancellationToken ct = default);

    /// <summary>
    /// Waits until the snapshot can be read (completed): polls ListSnapshotBlocks until it stops answering
    /// ResourceNotFound; throws <see cref="EbsException"/> on timeout. <paramref name="onPoll"/> gets the elapsed time.
    /// </summary>
    Task WaitForCompletedAsync(string snapshotId, TimeSpan timeout, Action<TimeSpan>? onPoll = null, CancellationToken ct = default);
}

/// <summary>Known constants of the EBS direct APIs.</summary>
public static class EbsLimits
{
    public const int BlockSize = 524288;
    public const long MaxVolumeSizeGiB = 65536;
    public const int BlocksPerGiB = 2048;
}
