using System.Buffers;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Amazon.Runtime;

namespace BlockRepl.Storage.Ebs;

/// <summary>One EBS API call as data: rebuilt into a fresh, freshly signed HttpRequestMessage on every attempt.</summary>
internal sealed class EbsCall
{
    public required string Operation { get; init; }
    public required HttpMethod Method { get; init; }
    public required Uri Uri { get; init; }
    /// <summary>Headers that are signed and sent verbatim (Content-Type goes on the content).</summary>
    public List<KeyValuePair<string, string>> Headers { get; } = [];
    public byte[]? JsonBody { get; init; }
    /// <summary>PutSnapshotBlock's body (the caller's buffer, never copied).</summary>
    public ReadOnlyMemory<byte>? Block { get; init; }
    /// <summary>Lowercase hex SHA-256 of <see cref="Block"/>, signed as the payload hash over plain HTTP.</summary>
    public string? BlockSha256Hex { get; init; }
    public string? SnapshotId { get; init; }
    public int? BlockIndex { get; init; }
    /// <summary>Block transfers go through the adaptive limiter.</summary>
    public bool Limited { get; init; }
    /// <summary>
    /// Retry ResourceNotFound while within NotFoundGrace of this client's StartSnapshot: the write side only
    /// (Put/Complete), where "does not exist" right after the start is eventual consistency. On the read side
    /// it means "not completed yet", which is WaitForCompletedAsync's business.
    /// </summary>
    public bool NotFoundGrace { get; init; }

    public string Describe() =>
        BlockIndex is { } block ? $"{Operation} {SnapshotId} block {block}"
        : SnapshotId is not null ? $"{Operation} {SnapshotId}"
        : Operation;
}

public sealed partial class EbsClient
{
    private const int MaxErrorBody = 64 * 1024;

    private string Url(string pathAndQuery) => _baseUrl + pathAndQuery;

    /// <summary>Signs <paramref name="call"/> (now, or at <paramref name="signedAt"/>) into a request ready to send.</summary>
    internal async Task<HttpRequestMessage> CreateSignedRequestAsync(EbsCall call, DateTime? signedAt, CancellationToken ct)
    {
        var credentials = await GetCredentialsAsync(ct).ConfigureAwait(false);
        PayloadSigning payload = call.Block is null ? PayloadSigning.Body
            : call.Uri.Scheme == Uri.UriSchemeHttps ? PayloadSigning.Unsigned
            : PayloadSigning.PrecomputedHash;
        IDictionary<string, string> signed;
        try
        {
            signed = await EbsSigner.SignAsync(credentials, _region, call.Method, call.Uri, call.Headers, call.JsonBody,
                payload, call.BlockSha256Hex, signedAt, ct).ConfigureAwait(false);
        }
        catch (AmazonClientException e)
        {
            // Refreshing credentials (SSO, assume-role, instance role) failed inside the signer.
            throw new EbsException($"EBS {call.Describe()}: could not sign the request: {e.Message}", EbsErrorTypes.Credentials, null, 0, e);
        }

        var request = new HttpRequestMessage(call.Method, call.Uri) { Version = HttpVersion.Version11 };
        if (call.JsonBody is { } json) request.Content = new ByteArrayContent(json);
        else if (call.Block is { } block) request.Content = new ReadOnlyMemoryContent(block);
        // CompleteSnapshot has no body: send an explicit Content-Length: 0 rather than risk a 411 from a front end.
        else if (call.Method == HttpMethod.Post || call.Method == HttpMethod.Put) request.Content = new ByteArrayContent([]);
        foreach (var (name, value) in call.Headers.Concat(signed))
        {
            if (name.Equals("Host", StringComparison.OrdinalIgnoreCase)) continue; // HttpClient sends the URI's authority, which is what was signed
            if (name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
            {
                request.Content ??= new ByteArrayContent([]);
                request.Content.Headers.TryAddWithoutValidation(name, value);
            }
            else if (!request.Headers.TryAddWithoutValidation(name, value))
            {
                throw new InvalidOperationException($"header {name} cannot be sent");
            }
        }
        return request;
    }

    /// <summary>
    /// The single retry layer: each attempt takes a limiter slot (block calls), is signed afresh, and must produce
    /// a complete response within AttemptTimeout. Retryable failures back off with full jitter.
    /// </summary>
    private async Task<T> ExecuteAsync<T>(EbsCall call, Func<HttpResponseMessage, CancellationToken, Task<T>> read, CancellationToken ct)
    {
        long started = _time.GetTimestamp();
        int counted = 0;
        for (int attempt = 1; ; attempt++)
        {
            EbsException failure;
            if (call.Limited)
            {
                await _pacer.WaitAsync(ct).ConfigureAwait(false);
                await _limiter.AcquireAsync(ct).ConfigureAwait(false);
            }
            var outcome = LimiterOutcome.Other;
            try
            {
                Interlocked.Increment(ref Stats.Requests);
                var result = await AttemptAsync(call, read, ct).ConfigureAwait(false);
                outcome = LimiterOutcome.Success;
                return result;
            }
            catch (EbsException e)
            {
                failure = e;
                if (EbsErrors.IsThrottle(e.ErrorType)) outcome = LimiterOutcome.Throttled;
            }
            finally
            {
                if (call.Limited)
                {
                    _limiter.Release(outcome);
                    _pacer.OnOutcome(outcome);
                    Stats.RateLimit = _pacer.Rate;
                }
            }

            if (outcome == LimiterOutcome.Throttled) Interlocked.Increment(ref Stats.Throttled);
            bool graceRetry = failure.IsNotFound && call.NotFoundGrace && WithinNotFoundGrace(call.SnapshotId);
            // "Does not exist yet" right after StartSnapshot is bounded by NotFoundGrace, not by MaxAttempts; throttling
            // (AWS: "always retry") by ThrottleBudget, while the pacer brings the rate down.
            var elapsed = _time.GetElapsedTime(started);
            bool throttleRetry = outcome == LimiterOutcome.Throttled && elapsed < _options.ThrottleBudget;
            if (!graceRetry && !throttleRetry) counted++;
            if (!graceRetry && !throttleRetry && (!EbsErrors.IsRetryable(failure) || counted >= _options.MaxAttempts))
                throw GaveUp(failure, attempt, elapsed);

            var delay = Backoff(attempt, _options.MaxBackoff);
            Interlocked.Increment(ref Stats.Retries);
            _log?.Warning("EBS {Operation} {SnapshotId} block {BlockIndex}: {ErrorType} on attempt {Attempt} after {ElapsedMs} ms; retrying in {DelayMs} ms",
                call.Operation, call.SnapshotId, call.BlockIndex, failure.ErrorType, attempt, (long)elapsed.TotalMilliseconds, (long)delay.TotalMilliseconds);
            await Task.Delay(delay, _time, ct).ConfigureAwait(false);
        }
    }

    /// <summary>Full jitter: uniform in [0, min(cap, 200 ms · 2^(attempt-1))].</summary>
    internal static TimeSpan Backoff(int failedAttempt, TimeSpan cap, Random? random = null)
    {
        double ceiling = Math.Min(cap.TotalMilliseconds, BaseBackoff.TotalMilliseconds * Math.Pow(2, Math.Min(failedAttempt - 1, 30)));
        return TimeSpan.FromMilliseconds((random ?? Random.Shared).NextDouble() * Math.Max(0, ceiling));
    }

    private static EbsException GaveUp(EbsException last, int attempts, TimeSpan elapsed)
    {
        if (attempts == 1) return last;
        return new EbsException($"{last.Message} (gave up after {attempts} attempts in {elapsed.TotalSeconds:0.0} s)",
            last.ErrorType, last.Reason, last.StatusCode, last)
        { ServiceMessage = last.ServiceMessage, Attempts = attempts };
    }

    private async Task<T> AttemptAsync<T>(EbsCall call, Func<HttpResponseMessage, CancellationToken, Task<T>> read, CancellationToken ct)
    {
        using var timeout = new CancellationTokenSource(_options.AttemptTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        try
        {
            using var request = await CreateSignedRequestAsync(call, FixedSigningTime, linked.Token).ConfigureAwait(false);
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, linked.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode) throw await ReadErrorAsync(call, response, linked.Token).ConfigureAwait(false);
            return await read(response, linked.Token).ConfigureAwait(false);
        }
        // Our attempt timer, or a handler-internal one (ConnectTimeout): either way not the caller's cancellation.
        catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new EbsException($"EBS {call.Describe()}: no complete response within {_options.AttemptTimeout.TotalSeconds:0.#} s from {Endpoint.Authority}",
                EbsErrorTypes.AttemptTimeout, null, 0, e);
        }
        catch (HttpRequestException e) when (!ct.IsCancellationRequested)
        {
            throw new EbsException($"EBS {call.Describe()}: transport failure talking to {Endpoint.Authority}: {e.Message}",
                EbsErrorTypes.Transport, null, 0, e);
        }
        catch (IOException e) when (!ct.IsCancellationRequested)
        {
            throw new EbsException($"EBS {call.Describe()}: connection failed while reading from {Endpoint.Authority}: {e.Message}",
                EbsErrorTypes.Transport, null, 0, e);
        }
    }

    private static async Task<EbsException> ReadErrorAsync(EbsCall call, HttpResponseMessage response, CancellationToken ct)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxErrorBody);
        try
        {
            int length = 0;
            await using (var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false))
            {
                int n;
                while (length < MaxErrorBody && (n = await stream.ReadAsync(buffer.AsMemory(length, MaxErrorBody - length), ct).ConfigureAwait(false)) > 0)
                    length += n;
            }
            int status = (int)response.StatusCode;
            var error = EbsErrors.Parse(status, EbsErrors.HeaderValue(response.Headers, "x-amzn-ErrorType"), buffer.AsSpan(0, length));
            // "AccessDenied", not "AccessDeniedException": users read this line, not the SDK's type names.
            string kind = error.Type.EndsWith("Exception", StringComparison.Ordinal) ? error.Type[..^"Exception".Length] : error.Type;
            string text = $"EBS {call.Describe()}: {kind}: {error.Message ?? response.ReasonPhrase ?? "no message"} (HTTP {status}"
                + (error.Reason is null ? ")" : $", reason {error.Reason})");
            return new EbsException(text, error.Type, error.Reason, status) { ServiceMessage = error.Message };
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static async Task<T> ReadJsonAsync<T>(EbsCall call, HttpResponseMessage response, JsonTypeInfo<T> typeInfo, CancellationToken ct)
        where T : class
    {
        await using var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        T? value;
        try
        {
            value = await JsonSerializer.DeserializeAsync(stream, typeInfo, ct).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw InvalidResponse(call, response, $"the body is not the documented JSON ({e.Message})", e);
        }
        return value ?? throw InvalidResponse(call, response, "the body is JSON null");
    }

    private static EbsException InvalidResponse(EbsCall call, HttpResponseMessage response, string what, Exception? inner = null) =>
        new($"EBS {call.Describe()}: unexpected response: {what} (HTTP {(int)response.StatusCode})",
            EbsErrorTypes.InvalidResponse, null, (int)response.StatusCode, inner);

    private static async Task DrainAsync(HttpResponseMessage response, CancellationToken ct)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        await stream.CopyToAsync(Stream.Null, ct).ConfigureAwait(false);
    }
}
