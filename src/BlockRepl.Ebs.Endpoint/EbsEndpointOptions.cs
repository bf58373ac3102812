using System.Net;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// Everything an <see cref="EbsEndpointServer"/> can be told. Defaults mirror AWS (ref/ebs.md §11.1, §15)
/// except where a test needs time to pass faster (<see cref="MinuteLength"/>, <see cref="CompletionDelay"/>).
/// </summary>
public sealed class EbsEndpointOptions
{
    /// <summary>Address to listen on. Loopback by default: the endpoint speaks plain HTTP.</summary>
    public IPAddress ListenAddress { get; init; } = IPAddress.Loopback;

    /// <summary>TCP port; 0 picks a free one (read it from the Uri <see cref="EbsEndpointServer.StartAsync"/> returns).</summary>
    public int Port { get; init; }

    /// <summary>
    /// Serve HTTPS with this certificate (with its private key) instead of plain HTTP, so clients sign PutSnapshotBlock
    /// with UNSIGNED-PAYLOAD as they do against AWS. See <see cref="EbsEndpointTls.CreateSelfSigned"/>.
    /// </summary>
    public System.Security.Cryptography.X509Certificates.X509Certificate2? Certificate { get; init; }

    /// <summary>Directory holding snapshots (created if missing). Layout: docs/ebs-endpoint.md.</summary>
    public required string DataDirectory { get; init; }

    /// <summary>Verify SigV4 on every AWS route (default). When false every request is accepted unsigned.</summary>
    public bool RequireAuth { get; init; } = true;

    /// <summary>Accepted access key id; null means the endpoint's own AWS_ACCESS_KEY_ID.</summary>
    public string? AccessKeyId { get; init; }

    /// <summary>Secret for <see cref="AccessKeyId"/>; null means the endpoint's own AWS_SECRET_ACCESS_KEY.</summary>
    public string? SecretAccessKey { get; init; }

    /// <summary>When set, requests must carry this X-Amz-Security-Token (null: AWS_SESSION_TOKEN when the keys also come from the environment, else not checked).</summary>
    public string? SessionToken { get; init; }

    /// <summary>When set, the SigV4 credential scope must name this region; null accepts any region.</summary>
    public string? Region { get; init; }

    /// <summary>Largest accepted distance between X-Amz-Date and the endpoint's clock (AWS: 15 minutes).</summary>
    public TimeSpan MaxClockSkew { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>The length of one "minute" of StartSnapshot's Timeout, so tests can expire a 10-minute timeout in 10 s.</summary>
    public TimeSpan MinuteLength { get; init; } = TimeSpan.FromMinutes(1);

    /// <summary>Time from an accepted CompleteSnapshot to the snapshot being <c>completed</c>.</summary>
    public TimeSpan CompletionDelay { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>PutSnapshotBlock requests per second per snapshot before RequestThrottledException (AWS: 1000). 0 disables.</summary>
    public int PutRatePerSnapshot { get; init; } = 1000;

    /// <summary>GetSnapshotBlock requests per second per snapshot before RequestThrottledException (AWS: 1000). 0 disables.</summary>
    public int GetRatePerSnapshot { get; init; } = 1000;

    /// <summary>Pending snapshots allowed at once; StartSnapshot beyond it gets 402 ServiceQuotaExceededException (AWS: 100).</summary>
    public int MaxPendingSnapshots { get; init; } = 100;

    /// <summary>Fault injection: fraction (0..1) of AWS requests answered 500 InternalServerException before doing anything.</summary>
    public double InternalErrorRate { get; init; }

    /// <summary>Fault injection: fraction (0..1) of AWS requests that are read and then never answered (a hung response, ref §10.3): clients need read timeouts.</summary>
    public double HangRate { get; init; }

    /// <summary>Fault injection: fraction (0..1) of AWS requests whose connection is reset without an answer.</summary>
    public double ResetRate { get; init; }

    /// <summary>Fault injection: for this long after StartSnapshot, every call naming the snapshot gets "does not exist" (404), as EBS does (ref §1.1-6).</summary>
    public TimeSpan NotFoundAfterStart { get; init; }

    /// <summary>
    /// How many block indices one List page scans. A page ends at <c>maxResults</c> entries or at the end of this
    /// window, whichever comes first, so a sparse snapshot yields empty pages with a NextToken, as AWS does.
    /// </summary>
    public int PageScanBlocks { get; init; } = 65536;

    /// <summary>Lifetime of block tokens (AWS: 7 days).</summary>
    public TimeSpan BlockTokenLifetime { get; init; } = TimeSpan.FromDays(7);

    /// <summary>Lifetime of page tokens (AWS: 60 minutes).</summary>
    public TimeSpan PageTokenLifetime { get; init; } = TimeSpan.FromMinutes(60);

    /// <summary>fsync block data, the hash log and metadata before acknowledging (default). False is faster and survives a process crash but not a power cut.</summary>
    public bool Durable { get; init; } = true;

    /// <summary>The OwnerId reported for every snapshot.</summary>
    public string OwnerId { get; init; } = "123456789012";

    /// <summary>Receives one line per notable event (start, expiry, recovery, internal errors). Null: silent.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Seed for fault injection decisions; null uses a random seed.</summary>
    public int? FaultSeed { get; init; }

    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(DataDirectory)) throw new ArgumentException("DataDirectory is required", nameof(DataDirectory));
        if (Port is < 0 or > 65535) throw new ArgumentOutOfRangeException(nameof(Port), Port, "port must be 0..65535");
        if (MinuteLength <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(MinuteLength), "must be positive");
        if (CompletionDelay < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(CompletionDelay), "must not be negative");
        if (PutRatePerSnapshot < 0 || GetRatePerSnapshot < 0) throw new ArgumentOutOfRangeException(nameof(PutRatePerSnapshot), "rates must not be negative");
        if (MaxPendingSnapshots < 1) throw new ArgumentOutOfRangeException(nameof(MaxPendingSnapshots), "must be at least 1");
        if (InternalErrorRate is < 0 or > 1 || double.IsNaN(InternalErrorRate)) throw new ArgumentOutOfRangeException(nameof(InternalErrorRate), "must be 0..1");
        if (HangRate is < 0 or > 1 || double.IsNaN(HangRate)) throw new ArgumentOutOfRangeException(nameof(HangRate), "must be 0..1");
        if (ResetRate is < 0 or > 1 || double.IsNaN(ResetRate)) throw new ArgumentOutOfRangeException(nameof(ResetRate), "must be 0..1");
        if (NotFoundAfterStart < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(NotFoundAfterStart), "must not be negative");
        if (PageScanBlocks < 1) throw new ArgumentOutOfRangeException(nameof(PageScanBlocks), "must be at least 1");
        if (BlockTokenLifetime <= TimeSpan.Zero || PageTokenLifetime <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(BlockTokenLifetime), "token lifetimes must be positive");
    }
}
