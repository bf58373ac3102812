using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Amazon;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;

namespace BlockRepl.Storage.S3;

/// <summary>
/// A repository under <c>s3://bucket/prefix</c> on Amazon S3 or an S3-compatible store (Ceph RGW, MinIO…).
/// Credentials and region come from the SDK's default chain, like the AWS CLI (environment, shared
/// config/credentials files, <c>AWS_PROFILE</c>, SSO, instance roles). Uploads spool locally and are
/// sent on commit with a create-only PUT (or multipart for large objects), so nothing is visible
/// before <see cref="IObjectUpload.CommitAsync"/> and a commit can be re-sent after a transient failure.
/// Errors are <see cref="StorageException"/>s with <see cref="StorageException.Transient"/> set for
/// throttling, 5xx, resets and timeouts; retrying is <see cref="RetryingBackend"/>'s job.
/// </summary>
public sealed class S3Backend : IBackend
{
    private readonly IAmazonS3 _s3;
    private readonly S3BackendOptions _options;
    private readonly string _spoolDirectory;

    public S3Backend(string location, S3BackendOptions? options = null)
        : this(S3Location.Parse(location), options ?? new S3BackendOptions())
    {
    }

    public S3Backend(S3Location location, S3BackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(location);
        ArgumentNullException.ThrowIfNull(options);
        if (options.PartSize < 5L << 20) throw new ArgumentException("PartSize must be at least 5 MiB", nameof(options));
        if (options.MultipartThreshold < options.MemorySpoolLimit) throw new ArgumentException("MultipartThreshold must not be below MemorySpoolLimit", nameof(options));
        foreach (var (_, cls) in options.StorageClasses)
            if (!string.IsNullOrWhiteSpace(cls) && !S3StorageClasses.IsKnown(cls))
                throw new ArgumentException($"'{cls}' is not an S3 storage class; use one of {string.Join(", ", S3StorageClasses.Known)}", nameof(options));
        S3Location = location;
        _options = options;
        _spoolDirectory = options.SpoolDirectory ?? Path.GetTempPath();
        Endpoint = ResolveEndpoint(options.EndpointUrl, options.GetEnvironmentVariable);
        var config = CreateConfig(options, Endpoint);
        _s3 = options.Credentials is null ? new AmazonS3Client(config) : new AmazonS3Client(options.Credentials, config);
    }

    public S3Location S3Location { get; }

    /// <summary>The endpoint override in effect (option, then environment), or null for AWS's own endpoints.</summary>
    public string? Endpoint { get; }

    public string Location => S3Location.ToString();
    private string Bucket => S3Location.Bucket;
    private string FullKey(string key)
    {
        if (key.Length == 0 || key.StartsWith('/') || key.Contains("..", StringComparison.Ordinal) || key.Contains('\\'))
            throw new ArgumentException($"invalid object key '{key}'", nameof(key));
        return S3Location.Prefix + key;
    }

    /// <summary><c>--endpoint-url</c>, else <c>AWS_ENDPOINT_URL_S3</c>, else <c>AWS_ENDPOINT_URL</c> (as the AWS CLI does).</summary>
    internal static string? ResolveEndpoint(string? option, Func<string, string?> env)
    {
        string? url = NullIfEmpty(option) ?? NullIfEmpty(env("AWS_ENDPOINT_URL_S3")) ?? NullIfEmpty(env("AWS_ENDPOINT_URL"));
        if (url is null) return null;
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
            throw new StorageException($"endpoint URL '{url}' is not an http:// or https:// URL", transient: false);
        if (!string.IsNullOrEmpty(uri.UserInfo))
            throw new StorageException("endpoint URL must not contain credentials; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile", transient: false);
        return url;
    }

    /// <summary>The region: option, AWS_REGION, AWS_DEFAULT_REGION, the profile; null when none is configured.</summary>
    internal static string? ResolveRegion(S3BackendOptions options)
    {
        string? region = NullIfEmpty(options.Region) ?? NullIfEmpty(options.GetEnvironmentVariable("AWS_REGION"))
            ?? NullIfEmpty(options.GetEnvironmentVariable("AWS_DEFAULT_REGION"));
        if (region is not null) return region;
        try { return FallbackRegionFactory.GetRegionEndpoint()?.SystemName; }
        catch (AmazonClientException) { return null; }
    }

    internal static AmazonS3Config CreateConfig(S3BackendOptions options, string? endpoint)
    {
        var config = new AmazonS3Config
        {
            // The SDK defaults (WHEN_SUPPORTED: aws-chunked with trailing checksums) fail on RGW before
            // Ceph 18 with XAmzContentSHA256Mismatch; SigV4 already protects payload integrity.
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            HttpClientFactory = new NoExpectHttpClientFactory(options.RequestTimeout),
            MaxErrorRetry = options.SdkMaxErrorRetry,
            Timeout = options.RequestTimeout,
        };
        string? region = ResolveRegion(options);
        if (endpoint is not null)
        {
            config.ServiceURL = endpoint;
            // S3-compatible stores rarely have wildcard DNS for virtual-hosted buckets.
            config.ForcePathStyle = true;
            config.AuthenticationRegion = region ?? "us-east-1";
        }
        else
        {
            config.RegionEndpoint = RegionEndpoint.GetBySystemName(region ?? "us-east-1");
        }
        return config;
    }

    private static string? NullIfEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();

    public ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default)
    {
        string full = FullKey(key);
        return ValueTask.FromResult<IObjectUpload>(new S3Upload(this, key, full, new SpoolStream(_spoolDirectory, _options.MemorySpoolLimit)));
    }

    public async ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (buffer.Length == 0) return 0;
        string full = FullKey(key);
        try
        {
            var request = new GetObjectRequest { BucketName = Bucket, Key = full, ByteRange = new ByteRange(offset, offset + buffer.Length - 1) };
            using var response = await _s3.GetObjectAsync(request, ct).ConfigureAwait(false);
            await using var body = response.ResponseStream;
            int total = 0;
            while (total < buffer.Length)
            {
                int n = await body.ReadAsync(buffer[total..], ct).ConfigureAwait(false);
                if (n == 0) break;
                total += n;
            }
            return total;
        }
        catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            return 0;   // offset at or past the end
        }
        catch (Exception e) when (IsMappable(e, ct))
        {
            throw Map(e, key);
        }
    }

    public async ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default)
    {
        string full = FullKey(key);
        try
        {
            using var response = await _s3.GetObjectAsync(new GetObjectRequest { BucketName = Bucket, Key = full }, ct).ConfigureAwait(false);
            await using var body = response.ResponseStream;
            long length = response.ContentLength;
            if (length < 0 || length > Array.MaxLength) throw new StorageException($"{Location}/{key}: unexpected object length {length}", transient: false);
            byte[] result = new byte[length];
            int total = 0;
            while (total < result.Length)
            {
                int n = await body.ReadAsync(result.AsMemory(total), ct).ConfigureAwait(false);
                if (n == 0) break;
                total += n;
            }
            if (total != result.Length)
                throw new StorageException($"{Location}/{key}: connection ended after {total} of {result.Length} bytes", transient: true);
            return result;
        }
        catch (Exception e) when (IsMappable(e, ct))
        {
            throw Map(e, key);
        }
    }

    public async ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default)
    {
        string full = FullKey(key);
        try
        {
            var meta = await _s3.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = Bucket, Key = full }, ct).ConfigureAwait(false);
            return new ObjectInfo(key, meta.ContentLength);
        }
        catch (Exception e) when (IsMappable(e, ct))
        {
            var mapped = Map(e, key);
            if (mapped is ObjectNotFoundException) return null;
            throw mapped;
        }
    }

    private async ValueTask<GetObjectMetadataResponse?> HeadAsync(string key, string full, CancellationToken ct)
    {
        try
        {
            return await _s3.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = Bucket, Key = full }, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (IsMappable(e, ct))
        {
            var mapped = Map(e, key);
            if (mapped is ObjectNotFoundException) return null;
            throw mapped;
        }
    }

    // ---- create-only rule (docs/s3.md, "Create-only writes")

    internal enum WriteRule { Conditional, HeadThenPut, Checked }

    private readonly SemaphoreSlim _ruleLock = new(1, 1);
    // -1 until decided; published with Volatile.Write after _sendMd5, so a lock-free reader sees both.
    private int _rule = -1;
    private bool _sendMd5;

    /// <summary>
    /// The bucket's versioning as read at the first write (<c>Off</c>, <c>Enabled</c>, <c>Suspended</c>, or
    /// <c>Unknown</c> when GetBucketVersioning is denied); null before it, and always with a fixed
    /// <see cref="S3BackendOptions.CreateOnly"/> mode.
    /// </summary>
    public string? BucketVersioning { get; private set; }

    /// <summary>How this backend makes writes create-only on this bucket: decided once, at the first write.</summary>
    internal async ValueTask<WriteRule> WriteRuleAsync(CancellationToken ct)
    {
        switch (_options.CreateOnly)
        {
            case CreateOnlyMode.Conditional: return WriteRule.Conditional;
            case CreateOnlyMode.HeadThenPut: return WriteRule.HeadThenPut;
        }
        if (Volatile.Read(ref _rule) is var known and >= 0) return (WriteRule)known;
        await _ruleLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_rule >= 0) return (WriteRule)_rule;
            string status;
            try
            {
                var v = await _s3.GetBucketVersioningAsync(new GetBucketVersioningRequest { BucketName = Bucket }, ct).ConfigureAwait(false);
                status = v.VersioningConfig?.Status?.Value is { Length: > 0 } value ? value : "Off";
            }
            catch (AmazonS3Exception e) when (e.StatusCode is HttpStatusCode.Forbidden or HttpStatusCode.NotImplemented)
            {
                status = "Unknown";   // no s3:GetBucketVersioning: assume the worst
            }
            catch (Exception e) when (IsMappable(e, ct))
            {
                throw Map(e, "(GetBucketVersioning)");
            }
            bool versioned = !string.Equals(status, "Off", StringComparison.OrdinalIgnoreCase);
            bool trusted = _options.VersionedConditionalWrites ?? Endpoint is null;
            // Object Lock buckets (always versioned) refuse PUTs without Content-MD5 on AWS (and moto).
            _sendMd5 = versioned;
            BucketVersioning = status;
            var rule = !versioned || trusted ? WriteRule.Conditional : WriteRule.Checked;
            Volatile.Write(ref _rule, (int)rule);
            return rule;
        }
        finally { _ruleLock.Release(); }
    }

    /// <summary>Every version of exactly <paramref name="full"/> (delete markers left out), newest first as S3 lists them.</summary>
    private async ValueTask<List<S3ObjectVersion>?> VersionsOfAsync(string key, string full, CancellationToken ct)
    {
        var result = new List<S3ObjectVersion>();
        var request = new ListVersionsRequest { BucketName = Bucket, Prefix = full };
        for (int page = 0; page < 100; page++)
        {
            ListVersionsResponse response;
            try { response = await _s3.ListVersionsAsync(request, ct).ConfigureAwait(false); }
            catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.Forbidden) { return null; }
            catch (Exception e) when (IsMappable(e, ct)) { throw Map(e, key); }
            foreach (var v in response.Versions ?? [])
            {
                int order = string.CompareOrdinal(v.Key, full);
                if (order > 0) return result;
                if (order == 0 && v.IsDeleteMarker != true) result.Add(v);
            }
            if (response.IsTruncated != true) break;
            request.KeyMarker = response.NextKeyMarker;
            request.VersionIdMarker = response.NextVersionIdMarker;
        }
        return result;
    }

    public async IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, [EnumeratorCancellation] CancellationToken ct = default)
    {
        var request = new ListObjectsV2Request { BucketName = Bucket, Prefix = S3Location.Prefix + prefix };
        while (true)
        {
            ListObjectsV2Response page;
            try { page = await _s3.ListObjectsV2Async(request, ct).ConfigureAwait(false); }
            catch (Exception e) when (IsMappable(e, ct)) { throw Map(e, prefix.Length == 0 ? "(list)" : prefix + "*"); }
            if (page.S3Objects is { } objects)
            {
                foreach (var o in objects)
                {
                    if (!o.Key.StartsWith(S3Location.Prefix, StringComparison.Ordinal)) continue;
                    string key = o.Key[S3Location.Prefix.Length..];
                    if (key.Length == 0 || key.EndsWith('/')) continue;   // "directory" markers made by other tools
                    yield return new ObjectInfo(key, o.Size ?? 0);
                }
            }
            if (page.IsTruncated != true || string.IsNullOrEmpty(page.NextContinuationToken)) yield break;
            request.ContinuationToken = page.NextContinuationToken;
        }
    }

    public async ValueTask DeleteAsync(string key, CancellationToken ct = default)
    {
        string full = FullKey(key);
        try
        {
            await _s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = Bucket, Key = full }, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (IsMappable(e, ct))
        {
            var mapped = Map(e, key);
            if (mapped is ObjectNotFoundException) return;
            throw mapped;
        }
    }

    public ValueTask DisposeAsync()
    {
        _s3.Dispose();
        _ruleLock.Dispose();
        return ValueTask.CompletedTask;
    }

    // ---- errors

    /// <summary>Everything but the caller's own cancellation is turned into a StorageException.</summary>
    private static bool IsMappable(Exception e, CancellationToken ct) =>
        e is not StorageException && !(e is OperationCanceledException && ct.IsCancellationRequested);

    /// <summary>
    /// Classifies an SDK or network failure. Messages name the bucket/key and the S3 error code, never
    /// credentials (SDK messages do not carry them; request headers are never included).
    /// </summary>
    internal StorageException Map(Exception e, string key)
    {
        string what = $"{Location}/{key}";
        if (e is AmazonS3Exception s3)
        {
            string code = s3.ErrorCode ?? "";
            int status = (int)s3.StatusCode;
            if (code == "NoSuchBucket")
                return new StorageException($"{Location}: bucket '{Bucket}' does not exist{EndpointHint}", transient: false, e);
            if (code is "NoSuchKey" or "NotFound" || status == 404)
                return new ObjectNotFoundException(key);
            if (status == 403 || code is "AccessDenied" or "InvalidAccessKeyId" or "SignatureDoesNotMatch" or "ExpiredToken" or "InvalidToken")
                return new StorageException($"{what}: access denied (check credentials, AWS_PROFILE and the bucket policy){CodeSuffix(code)}", transient: false, e);
            if (status == 301 || code is "PermanentRedirect" or "AuthorizationHeaderMalformed")
                return new StorageException($"{Location}: bucket '{Bucket}' is in another region; set AWS_REGION (or the profile's region){CodeSuffix(code)}", transient: false, e);
            if (status is 429 or 500 or 502 or 503 or 504 || code is "SlowDown" or "RequestTimeout" or "InternalError" or "ServiceUnavailable"
                || code is "ConditionalRequestConflict" or "OperationAborted" or "RequestTimeTooSkewed")
                return new StorageException($"{what}: S3 {code} ({status}), temporary", transient: true, e);
            return new StorageException($"{what}: S3 error {code} ({status}): {s3.Message}", transient: false, e);
        }
        for (Exception? inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is HttpRequestException or IOException or SocketException or TimeoutException or OperationCanceledException)
                return new StorageException($"{what}: cannot reach {Endpoint ?? "S3"}: {inner.Message}", transient: true, e);
        }
        if (e is AmazonServiceException service)
        {
            int status = (int)service.StatusCode;
            bool transient = status is 429 or >= 500;
            return new StorageException($"{what}: S3 error {service.ErrorCode} ({status}): {service.Message}", transient, e);
        }
        if (e is AmazonClientException client)
        {
            if (client.Message.Contains("credential", StringComparison.OrdinalIgnoreCase))
                return new StorageException($"{Location}: no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role)", transient: false, e);
            return new StorageException($"{what}: {client.Message}", transient: false, e);
        }
        return new StorageException($"{what}: {e.Message}", transient: false, e);
    }

    private string EndpointHint => Endpoint is null ? "" : $" at {Endpoint}";
    private static string CodeSuffix(string code) => code.Length == 0 ? "" : $" [{code}]";

    private static bool IsPreconditionFailed(Exception e) =>
        e is AmazonS3Exception s3 && (s3.StatusCode == HttpStatusCode.PreconditionFailed || s3.ErrorCode == "PreconditionFailed");

    // ---- uploads

    private sealed class S3Upload(S3Backend backend, string key, string fullKey, SpoolStream spool) : IObjectUpload
    {
        private bool _committed;
        // A previous commit attempt failed in a way that may have reached the server (timeout, reset):
        // the object we find may be our own, so compare content before reporting a conflict.
        private bool _ambiguous;

        public string Key => key;
        public Stream Stream => spool;

        public async ValueTask CommitAsync(CancellationToken ct = default)
        {
            if (_committed) return;
            await spool.FreezeAsync(ct).ConfigureAwait(false);
            try
            {
                var rule = await backend.WriteRuleAsync(ct).ConfigureAwait(false);
                if (rule is WriteRule.HeadThenPut or WriteRule.Checked)
                {
                    var existing = await backend.HeadAsync(key, fullKey, ct).ConfigureAwait(false);
                    if (existing is not null)
                    {
                        if (_ambiguous && await IsOurContentAsync(existing.ETag, ct).ConfigureAwait(false)) { _committed = true; return; }
                        throw new ObjectExistsException(key);
                    }
                }
                bool conditional = rule is WriteRule.Conditional or WriteRule.Checked;
                var (stored, versionId) = spool.FilePath is not null && spool.Length > backend._options.MultipartThreshold
                    ? await MultipartAsync(spool.FilePath, conditional, ct).ConfigureAwait(false)
                    : await PutAsync(conditional, ct).ConfigureAwait(false);
                if (stored && rule == WriteRule.Checked) await CheckVersionsAsync(versionId, ct).ConfigureAwait(false);
                _committed = true;
            }
            catch (StorageException e) when (e.Transient)
            {
                _ambiguous = true;
                throw;
            }
        }

        /// <summary>
        /// The post-write check of the fallback for stores that ignore <c>If-None-Match</c> on versioned buckets:
        /// when the key has more than one version, the earliest is the object and ours is a conflict, unless it
        /// holds the same bytes (a content-addressed object, or our own earlier attempt). Our version is then
        /// removed (best effort: Object Lock may keep it) so that readers see the earliest again.
        /// </summary>
        private async ValueTask CheckVersionsAsync(string? versionId, CancellationToken ct)
        {
            var versions = await backend.VersionsOfAsync(key, fullKey, ct).ConfigureAwait(false);
            if (versions is null || versions.Count <= 1) return;   // null: ListBucketVersions denied, nothing to check with
            bool known = !string.IsNullOrEmpty(versionId) && versionId != "null";
            var earliest = versions[^1];
            if (known && earliest.VersionId == versionId) return;
            bool same = await IsOurContentAsync(earliest.ETag, ct).ConfigureAwait(false);
            if (known)
            {
                try
                {
                    await backend._s3.DeleteObjectAsync(new DeleteObjectRequest { BucketName = backend.Bucket, Key = fullKey, VersionId = versionId }, ct).ConfigureAwait(false);
                }
                catch (AmazonS3Exception)
                {
                    // Retention or a policy keeps it: a redundant version (same bytes) is harmless; a different one
                    // stays newest and the conflict below is all we can report.
                }
            }
            if (!same) throw new ObjectExistsException(key);
        }

        private async ValueTask<string> Md5Base64Async(long offset, long count, CancellationToken ct) =>
            Convert.ToBase64String(await spool.Md5Async(offset, count, ct).ConfigureAwait(false));

        /// <summary>Returns whether this call stored the object (false: a 412 found our own object) and its version id.</summary>
        private async ValueTask<(bool Stored, string? VersionId)> PutAsync(bool conditional, CancellationToken ct)
        {
            var request = new PutObjectRequest
            {
                BucketName = backend.Bucket,
                Key = fullKey,
                InputStream = spool.OpenRead(),
                AutoCloseStream = true,
                ContentType = "application/octet-stream",
            };
            if (conditional) request.IfNoneMatch = "*";
            if (backend._sendMd5) request.MD5Digest = await Md5Base64Async(0, spool.Length, ct).ConfigureAwait(false);
            if (backend._options.StorageClassFor(key) is { } storageClass) request.StorageClass = S3StorageClass.FindValue(storageClass);
            try
            {
                var response = await backend._s3.PutObjectAsync(request, ct).ConfigureAwait(false);
                return (true, response.VersionId);
            }
            catch (Exception e) when (IsPreconditionFailed(e))
            {
                await ConflictAsync(ct).ConfigureAwait(false);
                return (false, null);
            }
            catch (Exception e) when (IsMappable(e, ct))
            {
                throw backend.Map(e, key);
            }
            finally
            {
                await request.InputStream.DisposeAsync().ConfigureAwait(false);
            }
        }

        private async ValueTask<(bool Stored, string? VersionId)> MultipartAsync(string path, bool conditional, CancellationToken ct)
        {
            string uploadId;
            try
            {
                var initiate = new InitiateMultipartUploadRequest
                {
                    BucketName = backend.Bucket, Key = fullKey, ContentType = "application/octet-stream",
                };
                if (backend._options.StorageClassFor(key) is { } storageClass) initiate.StorageClass = S3StorageClass.FindValue(storageClass);
                var started = await backend._s3.InitiateMultipartUploadAsync(initiate, ct).ConfigureAwait(false);
                uploadId = started.UploadId;
            }
            catch (Exception e) when (IsMappable(e, ct)) { throw backend.Map(e, key); }

            bool completed = false;
            try
            {
                long partSize = backend._options.PartSize;
                var parts = new List<PartETag>();
                int number = 1;
                for (long offset = 0; offset < spool.Length; offset += partSize, number++)
                {
                    long length = Math.Min(partSize, spool.Length - offset);
                    var upload = new UploadPartRequest
                    {
                        BucketName = backend.Bucket, Key = fullKey, UploadId = uploadId, PartNumber = number,
                        FilePath = path, FilePosition = offset, PartSize = length,
                    };
                    if (backend._sendMd5) upload.MD5Digest = await Md5Base64Async(offset, length, ct).ConfigureAwait(false);
                    var part = await backend._s3.UploadPartAsync(upload, ct).ConfigureAwait(false);
                    parts.Add(new PartETag(number, part.ETag));
                }
                var complete = new CompleteMultipartUploadRequest
                {
                    BucketName = backend.Bucket, Key = fullKey, UploadId = uploadId, PartETags = parts,
                };
                // RGW 16 ignores If-None-Match here and overwrites (docs/s3.md); AWS honours it.
                if (conditional) complete.IfNoneMatch = "*";
                try
                {
                    var response = await backend._s3.CompleteMultipartUploadAsync(complete, ct).ConfigureAwait(false);
                    completed = true;
                    return (true, response.VersionId);
                }
                catch (Exception e) when (IsPreconditionFailed(e))
                {
                    await ConflictAsync(ct).ConfigureAwait(false);
                    return (false, null);
                }
            }
            catch (Exception e) when (IsMappable(e, ct))
            {
                throw backend.Map(e, key);
            }
            finally
            {
                if (!completed)
                {
                    // Incomplete multipart uploads cost storage until aborted (or a lifecycle rule expires them).
                    try
                    {
                        await backend._s3.AbortMultipartUploadAsync(new AbortMultipartUploadRequest
                        {
                            BucketName = backend.Bucket, Key = fullKey, UploadId = uploadId,
                        }, CancellationToken.None).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is AmazonServiceException or HttpRequestException or IOException or OperationCanceledException)
                    {
                        // Best effort: the bucket's AbortIncompleteMultipartUpload lifecycle rule is the backstop.
                    }
                }
            }
        }

        /// <summary>
        /// The key exists (412). It may be our own object: the SDK retries a request whose response was lost
        /// (a reset after the store took it) inside a single call, so any 412 can follow our own successful PUT.
        /// Same content means success; anything else is a real conflict.
        /// </summary>
        private async ValueTask ConflictAsync(CancellationToken ct)
        {
            var existing = await backend.HeadAsync(key, fullKey, ct).ConfigureAwait(false);
            if (existing is not null && await IsOurContentAsync(existing.ETag, ct).ConfigureAwait(false)) return;
            throw new ObjectExistsException(key);
        }

        /// <summary>Compares an S3 ETag (MD5, or MD5 of part MD5s + "-N" for multipart) with the spooled content.</summary>
        private async ValueTask<bool> IsOurContentAsync(string? etag, CancellationToken ct)
        {
            if (string.IsNullOrEmpty(etag)) return false;
            etag = etag.Trim('"');
            int dash = etag.IndexOf('-');
            if (dash < 0)
                return string.Equals(etag, Convert.ToHexStringLower(await spool.Md5Async(0, spool.Length, ct).ConfigureAwait(false)), StringComparison.OrdinalIgnoreCase);
            long partSize = backend._options.PartSize;
            var all = new List<byte>();
            int parts = 0;
            for (long offset = 0; offset < spool.Length; offset += partSize, parts++)
                all.AddRange(await spool.Md5Async(offset, Math.Min(partSize, spool.Length - offset), ct).ConfigureAwait(false));
            string expected = $"{Convert.ToHexStringLower(System.Security.Cryptography.MD5.HashData(all.ToArray()))}-{parts}";
            return string.Equals(etag, expected, StringComparison.OrdinalIgnoreCase);
        }

        public async ValueTask DisposeAsync() => await spool.DisposeAsync().ConfigureAwait(false);
    }
}
