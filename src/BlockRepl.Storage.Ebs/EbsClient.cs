using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using Amazon;
using Amazon.Runtime;
using Amazon.Runtime.CredentialManagement;
using Amazon.Runtime.Credentials;
using Serilog;

namespace BlockRepl.Storage.Ebs;

/// <summary>
/// <see cref="IEbsClient"/> over HttpClient and AWSSDK.Core's public SigV4 signer (AWSSDK.EBS is not used).
/// One retry layer (full-jitter exponential backoff), a per-attempt timeout, and an AIMD concurrency limiter in
/// front of block transfers. See docs/ebs-client.md for the policies and docs/ebs.md for the wire protocol.
/// </summary>
public sealed partial class EbsClient : IEbsClient
{
    /// <summary>The limiter's starting concurrency (never above <see cref="EbsClientOptions.MaxConcurrency"/>).</summary>
    public const int InitialConcurrency = 16;

    private static readonly TimeSpan BaseBackoff = TimeSpan.FromMilliseconds(200);

    private readonly EbsClientOptions _options;
    private readonly HttpClient _http;
    private readonly RegionEndpoint _region;
    private readonly string _baseUrl;
    private readonly TimeProvider _time;
    private readonly ILogger? _log;
    private readonly AdaptiveConcurrencyLimiter _limiter;
    private readonly AdaptiveRatePacer _pacer;
    private readonly ConcurrentDictionary<string, long> _startedAt = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _credentialsLock = new(1, 1);
    private AWSCredentials? _credentials;

    /// <summary>Creates a client; credentials are resolved on the first request, not here.</summary>
    public static EbsClient Create(EbsClientOptions options) => new(options);

    /// <inheritdoc cref="Create(EbsClientOptions)"/>
    /// <param name="options">Endpoint, region, credentials and policy.</param>
    /// <param name="logger">Optional: retries are logged at Warning (operation, snapshot, block, elapsed; never secrets).</param>
    public static EbsClient Create(EbsClientOptions options, ILogger? logger) => new(options, logger);

    public EbsClient(EbsClientOptions options, ILogger? logger = null)
        : this(options, handler: null, time: null, logger, Environment.GetEnvironmentVariable)
    {
    }

    /// <summary>For tests: a custom transport, clock and environment.</summary>
    internal EbsClient(EbsClientOptions options, HttpMessageHandler? handler, TimeProvider? time, ILogger? logger, Func<string, string?> env)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (string.IsNullOrWhiteSpace(options.Region)) throw new ArgumentException("Region is required (e.g. us-east-1)", nameof(options));
        if (options.MaxConcurrency < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxConcurrency, "MaxConcurrency must be at least 1");
        if (options.MaxAttempts < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxAttempts, "MaxAttempts must be at least 1");
        if (options.AttemptTimeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(options), options.AttemptTimeout, "AttemptTimeout must be positive");
        _options = options;
        _time = time ?? TimeProvider.System;
        _log = logger;
        Region = options.Region;
        _region = RegionEndpoint.GetBySystemName(options.Region);
        Endpoint = ResolveEndpoint(options, env);
        _baseUrl = Endpoint.GetLeftPart(UriPartial.Path).TrimEnd('/');
        _pacer = new AdaptiveRatePacer(_time);
        _limiter = new AdaptiveConcurrencyLimiter(InitialConcurrency, options.MaxConcurrency, time: _time,
            onLimitChanged: limit => Volatile.Write(ref Stats.CurrentConcurrency, limit));
        _http = new HttpClient(handler ?? CreateHandler(options), disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
    }

    public Uri Endpoint { get; }
    public string Region { get; }
    public EbsClientStats Stats { get; } = new();

    /// <summary>For test vectors: a fixed SigV4 timestamp instead of the current time.</summary>
    internal DateTime? FixedSigningTime { get; set; }

    /// <summary>The limiter (tests and diagnostics).</summary>
    internal AdaptiveConcurrencyLimiter Limiter => _limiter;

    private static SocketsHttpHandler CreateHandler(EbsClientOptions options)
    {
        var handler = NewHandler(options);
        // AWS_CA_BUNDLE (or the option), as the AWS CLI: extra trusted roots, e.g. a proxy's or a local endpoint's.
        string? bundle = options.CaBundle ?? Environment.GetEnvironmentVariable("AWS_CA_BUNDLE");
        if (!string.IsNullOrEmpty(bundle))
        {
            var roots = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
            try { roots.ImportFromPemFile(bundle); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            { throw new EbsException($"EBS: cannot read the CA bundle '{bundle}': {e.Message}", EbsErrorTypes.Credentials, null, 0, e); }
            if (roots.Count == 0) throw new EbsException($"EBS: the CA bundle '{bundle}' holds no PEM certificate", EbsErrorTypes.Credentials, null, 0);
            handler.SslOptions.CertificateChainPolicy = new System.Security.Cryptography.X509Certificates.X509ChainPolicy
            {
                TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust,
                RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
            };
            handler.SslOptions.CertificateChainPolicy.CustomTrustStore.AddRange(roots);
        }
        return handler;
    }

    private static SocketsHttpHandler NewHandler(EbsClientOptions options) => new()
    {
        // Block calls are gated by the limiter; the spare connections serve List/Complete beside them.
        MaxConnectionsPerServer = options.MaxConcurrency + 8,
        ConnectTimeout = options.ConnectTimeout,
        // A redirect would be replayed below the signer with a stale signature (AWSSDK.Core SigV4SigningHandler remarks).
        AllowAutoRedirect = false,
        // DNS changes of the regional endpoint are picked up; idle sockets do not linger behind NATs.
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(50),
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
    };

    /// <summary>
    /// The option, else AWS_ENDPOINT_URL_EBS, else AWS_ENDPOINT_URL, else https://ebs.{region}.amazonaws.com
    /// (…amazonaws.com.cn in the China regions), as the AWS CLI resolves service endpoints.
    /// </summary>
    internal static Uri ResolveEndpoint(EbsClientOptions options, Func<string, string?> env)
    {
        Uri? uri = options.EndpointUrl;
        string? source = uri is null ? null : "EndpointUrl";
        if (uri is null)
        {
            foreach (string name in (ReadOnlySpan<string>)["AWS_ENDPOINT_URL_EBS", "AWS_ENDPOINT_URL"])
            {
                string? value = env(name);
                if (string.IsNullOrWhiteSpace(value)) continue;
                if (!Uri.TryCreate(value.Trim(), UriKind.Absolute, out uri))
                    throw new ArgumentException($"{name} is not an absolute URL");
                source = name;
                break;
            }
        }
        if (uri is null)
        {
            string suffix = options.Region.StartsWith("cn-", StringComparison.Ordinal) ? "amazonaws.com.cn" : "amazonaws.com";
            return new Uri($"https://ebs.{options.Region}.{suffix}");
        }
        if (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            throw new ArgumentException($"{source}: the EBS endpoint must be an http:// or https:// URL");
        if (!string.IsNullOrEmpty(uri.UserInfo))
            throw new ArgumentException($"{source}: the EBS endpoint must not contain credentials; use a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
        if (!string.IsNullOrEmpty(uri.Query) || !string.IsNullOrEmpty(uri.Fragment))
            throw new ArgumentException($"{source}: the EBS endpoint must not have a query or fragment");
        return uri;
    }

    /// <summary>
    /// Explicit credentials, else the named profile (options, as <c>--profile</c>), else AWSSDK.Core's default chain
    /// (environment keys, AWS_PROFILE or "default" in the shared files incl. SSO/assume-role, container and
    /// instance roles), in the AWS CLI's order. The chain's objects refresh themselves, so one lookup is kept.
    /// </summary>
    private async ValueTask<AWSCredentials> GetCredentialsAsync(CancellationToken ct)
    {
        if (_credentials is { } cached) return cached;
        if (_options.Credentials is { } explicitCredentials) return _credentials = explicitCredentials;
        await _credentialsLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_credentials is { } again) return again;
            AWSCredentials resolved;
            try
            {
                if (!string.IsNullOrWhiteSpace(_options.Profile))
                {
                    if (!new CredentialProfileStoreChain().TryGetAWSCredentials(_options.Profile, out resolved))
                        throw new EbsException(
                            $"AWS profile '{_options.Profile}' was not found or has no credentials (~/.aws/config, ~/.aws/credentials)",
                            EbsErrorTypes.Credentials, reason: null, statusCode: 0);
                }
                else
                {
                    resolved = await DefaultAWSCredentialsIdentityResolver.GetCredentialsAsync(null).ConfigureAwait(false);
                }
            }
            catch (AmazonClientException e)
            {
                throw new EbsException(
                    $"no AWS credentials for EBS at {Endpoint}: {e.Message} (set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on an instance with a role)",
                    EbsErrorTypes.Credentials, reason: null, statusCode: 0, e);
            }
            return _credentials = resolved;
        }
        finally
        {
            _credentialsLock.Release();
        }
    }

    /// <summary>Remembers when this client started a snapshot, for the "does not exist yet" grace.</summary>
    private void NoteStarted(string snapshotId) => _startedAt.TryAdd(snapshotId, _time.GetTimestamp());

    private bool WithinNotFoundGrace(string? snapshotId) =>
        snapshotId is not null && _startedAt.TryGetValue(snapshotId, out long started)
        && _time.GetElapsedTime(started) < _options.NotFoundGrace;

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    public void Dispose()
    {
        _http.Dispose();
        _credentialsLock.Dispose();
    }
}
