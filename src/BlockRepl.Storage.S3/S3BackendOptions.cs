using Amazon.Runtime;

namespace BlockRepl.Storage.S3;

/// <summary>How <see cref="S3Backend"/> makes writes create-only.</summary>
public enum CreateOnlyMode
{
    /// <summary>
    /// Chosen per bucket at the first write (docs/s3.md, "Create-only writes"): the bucket's versioning is read
    /// once (<c>GetBucketVersioning</c>; Object Lock implies versioning). Unversioned, or versioned on a store
    /// known to honour <c>If-None-Match</c> there (<see cref="S3BackendOptions.VersionedConditionalWrites"/>):
    /// <see cref="Conditional"/>. Otherwise a checked fallback: HeadObject, the conditional PUT, then
    /// <c>ListObjectVersions</c> of the key: when more than one version exists the earliest wins, and ours is a
    /// conflict unless its content is the same.
    /// </summary>
    Auto,

    /// <summary>
    /// <c>If-None-Match: *</c> on PutObject and CompleteMultipartUpload: atomic on AWS S3 and on
    /// RGW's unversioned buckets. RGW ignores it on versioned (and so Object Lock) buckets.
    /// </summary>
    Conditional,

    /// <summary>
    /// HeadObject before the write: for stores that ignore <c>If-None-Match</c>. Racy (two writers can
    /// both see "absent"); see docs/s3.md for why that is acceptable for content-addressed objects.
    /// </summary>
    HeadThenPut,
}

/// <summary>Settings of an <see cref="S3Backend"/>. Credentials and region come from the SDK's default chain.</summary>
public sealed record S3BackendOptions
{
    /// <summary>Endpoint override (<c>--endpoint-url</c>); when null, <c>AWS_ENDPOINT_URL_S3</c>, then <c>AWS_ENDPOINT_URL</c>.</summary>
    public string? EndpointUrl { get; init; }

    /// <summary>Region override; when null, the SDK chain (AWS_REGION, profile), else us-east-1 with an endpoint override.</summary>
    public string? Region { get; init; }

    /// <summary>Explicit credentials (embedding, tests); null means the SDK default chain, as the AWS CLI.</summary>
    public AWSCredentials? Credentials { get; init; }

    /// <summary>Where uploads are spooled before they are sent; null means <see cref="Path.GetTempPath"/>.</summary>
    public string? SpoolDirectory { get; init; }

    /// <summary>How writes are made create-only; <see cref="CreateOnlyMode.Auto"/> decides per bucket.</summary>
    public CreateOnlyMode CreateOnly { get; init; } = CreateOnlyMode.Auto;

    /// <summary>
    /// Whether the store honours <c>If-None-Match: *</c> on versioned (and Object Lock) buckets, for
    /// <see cref="CreateOnlyMode.Auto"/>. Null: only AWS S3 itself (no endpoint override) is trusted; S3-compatible
    /// stores get the checked fallback (Ceph RGW before 2025 ignores the header there and adds a version).
    /// </summary>
    public bool? VersionedConditionalWrites { get; init; }

    /// <summary>Uploads up to this size stay in memory; larger ones spool to a temp file.</summary>
    public int MemorySpoolLimit { get; init; } = 1 << 20;

    /// <summary>Objects larger than this are sent with a multipart upload.</summary>
    public long MultipartThreshold { get; init; } = 64L << 20;

    /// <summary>Part size of multipart uploads (S3 minimum 5 MiB, at most 10 000 parts).</summary>
    public long PartSize { get; init; } = 16L << 20;

    /// <summary>
    /// Retries inside the SDK for each request. Kept small: <see cref="RetryingBackend"/> retries
    /// transient failures with its own backoff, and the two multiply.
    /// </summary>
    public int SdkMaxErrorRetry { get; init; } = 2;

    /// <summary>Time limit of one HTTP request (a 64 MiB part on a slow link needs minutes).</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Storage class per object kind: key prefix (relative to the repository, e.g. <c>data/</c> for
    /// packs) → S3 storage class name (<see cref="S3StorageClasses.Known"/>). The longest matching
    /// prefix wins; keys that match nothing (<c>config</c>, <c>index/</c>, <c>snapshots/</c>, locks)
    /// are sent without a storage class, i.e. STANDARD. Applied on PutObject and multipart initiate.
    /// </summary>
    public IReadOnlyDictionary<string, string> StorageClasses { get; init; } = new Dictionary<string, string>();

    /// <summary>Options with <paramref name="storageClass"/> for packs (<c>data/</c>); null or empty leaves them STANDARD.</summary>
    public S3BackendOptions WithPackStorageClass(string? storageClass) =>
        string.IsNullOrWhiteSpace(storageClass) ? this
            : this with { StorageClasses = new Dictionary<string, string>(StorageClasses) { [S3StorageClasses.PackPrefix] = S3StorageClasses.Normalize(storageClass) } };

    /// <summary>The storage class for <paramref name="key"/> (relative to the prefix), or null for the bucket default (STANDARD).</summary>
    public string? StorageClassFor(string key)
    {
        string? best = null;
        int bestLength = -1;
        foreach (var (prefix, cls) in StorageClasses)
        {
            if (prefix.Length > bestLength && key.StartsWith(prefix, StringComparison.Ordinal))
            {
                best = cls;
                bestLength = prefix.Length;
            }
        }
        return string.IsNullOrWhiteSpace(best) ? null : best.Trim().ToUpperInvariant();
    }

    /// <summary>Reads environment variables; replaceable in tests.</summary>
    public Func<string, string?> GetEnvironmentVariable { get; init; } = Environment.GetEnvironmentVariable;
}

/// <summary>The S3 storage class names BlockRepl accepts (those of the AWS S3 API).</summary>
public static class S3StorageClasses
{
    /// <summary>The key prefix of pack objects.</summary>
    public const string PackPrefix = "data/";

    public static IReadOnlyList<string> Known { get; } =
    [
        "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
        "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE", "OUTPOSTS", "SNOW", "EXPRESS_ONEZONE",
    ];

    public static bool IsKnown(string? name) => name is not null && Known.Contains(name.Trim().ToUpperInvariant());

    /// <summary>Upper-cases and checks a storage class name; <see cref="ArgumentException"/> naming the valid ones otherwise.</summary>
    public static string Normalize(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string upper = name.Trim().ToUpperInvariant();
        if (!Known.Contains(upper))
            throw new ArgumentException($"'{name}' is not an S3 storage class; use one of {string.Join(", ", Known)}", nameof(name));
        return upper;
    }
}
