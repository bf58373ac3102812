using System.Net.Http.Headers;
using System.Text.Json;

namespace BlockRepl.Storage.Ebs;

/// <summary>
/// <see cref="EbsException.ErrorType"/> values: the service's own (x-amzn-ErrorType without namespace and
/// suffix) and the client-side ones this client adds for failures that never got a service answer.
/// </summary>
public static class EbsErrorTypes
{
    public const string Validation = "ValidationException";
    public const string ResourceNotFound = "ResourceNotFoundException";
    public const string AccessDenied = "AccessDeniedException";
    public const string Conflict = "ConflictException";
    public const string RequestThrottled = "RequestThrottledException";
    public const string Throttling = "ThrottlingException";
    public const string ConcurrentLimitExceeded = "ConcurrentLimitExceededException";
    public const string ServiceQuotaExceeded = "ServiceQuotaExceededException";
    public const string InternalServer = "InternalServerException";

    /// <summary>Client side: no complete response within <see cref="EbsClientOptions.AttemptTimeout"/>.</summary>
    public const string AttemptTimeout = "AttemptTimeout";
    /// <summary>Client side: connection refused/reset, TLS or other transport failure.</summary>
    public const string Transport = "TransportError";
    /// <summary>Client side: GetSnapshotBlock's data did not match its x-amz-Checksum or length headers.</summary>
    public const string ChecksumMismatch = "ChecksumMismatch";
    /// <summary>Client side: a response that is not what the API documents (bad JSON, missing members).</summary>
    public const string InvalidResponse = "InvalidResponse";
    /// <summary>Client side: <see cref="IEbsClient.WaitForCompletedAsync"/> ran out of time.</summary>
    public const string WaitTimeout = "WaitTimeout";
    /// <summary>Client side: credentials could not be resolved.</summary>
    public const string Credentials = "CredentialsError";
    /// <summary>A service error without any recognisable type.</summary>
    public const string Unknown = "UnknownError";
}

/// <summary>rest-json error parsing and the retry classification (by error type, not status code).</summary>
internal static class EbsErrors
{
    /// <summary>The type, message and reason of an error response.</summary>
    internal readonly record struct ParsedError(string Type, string? Message, string? Reason);

    /// <summary>
    /// Type from x-amzn-ErrorType, else body <c>__type</c>, else <c>code</c>; "ns#Type:http://…" → "Type".
    /// Message from <c>message</c>/<c>Message</c>, reason from <c>Reason</c>, case-insensitively. A body that is
    /// not JSON is tolerated. Without any type, 5xx maps to InternalServerException and 404 to ResourceNotFound.
    /// </summary>
    internal static ParsedError Parse(int statusCode, string? errorTypeHeader, ReadOnlySpan<byte> body)
    {
        string? type = NormalizeType(errorTypeHeader);
        string? bodyType = null, code = null, message = null, reason = null;
        if (!body.IsEmpty)
        {
            try
            {
                var reader = new Utf8JsonReader(body, new JsonReaderOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
                if (reader.Read() && reader.TokenType == JsonTokenType.StartObject)
                {
                    while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                    {
                        string name = reader.GetString()!;
                        reader.Read();
                        if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                        {
                            reader.Skip();
                            continue;
                        }
                        string? value = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                        if (name == "__type") bodyType = value;
                        else if (name.Equals("code", StringComparison.OrdinalIgnoreCase)) code = value;
                        else if (name.Equals("message", StringComparison.OrdinalIgnoreCase)) message ??= value;
                        else if (name.Equals("reason", StringComparison.OrdinalIgnoreCase)) reason = value;
                    }
                }
            }
            catch (JsonException)
            {
                // Not JSON (a proxy's HTML page, a truncated body): the status code has to do.
            }
        }
        type ??= NormalizeType(bodyType) ?? NormalizeType(code);
        type ??= statusCode >= 500 ? EbsErrorTypes.InternalServer
            : statusCode == 404 ? EbsErrorTypes.ResourceNotFound
            : statusCode == 429 ? EbsErrorTypes.Throttling
            : statusCode == 403 ? EbsErrorTypes.AccessDenied
            : EbsErrorTypes.Unknown;
        return new ParsedError(type, string.IsNullOrWhiteSpace(message) ? null : message, string.IsNullOrWhiteSpace(reason) ? null : reason);
    }

    /// <summary>"aws.ebs#RequestThrottledException:http://internal.amazon.com/…" → "RequestThrottledException".</summary>
    internal static string? NormalizeType(string? raw)
    {
        if (string.IsNullOrWhiteSpace(raw)) return null;
        var s = raw.AsSpan().Trim();
        int colon = s.IndexOfAny(':', ',');
        if (colon >= 0) s = s[..colon];
        int hash = s.LastIndexOf('#');
        if (hash >= 0) s = s[(hash + 1)..];
        s = s.Trim();
        return s.IsEmpty ? null : s.ToString();
    }

    internal static string? HeaderValue(HttpResponseHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    internal static bool IsThrottle(string type) =>
        type is EbsErrorTypes.RequestThrottled or EbsErrorTypes.Throttling or EbsErrorTypes.ConcurrentLimitExceeded
            or "TooManyRequestsException" or "SlowDown";

    /// <summary>
    /// Whether a failure may succeed on another attempt, ignoring the not-found grace (the caller decides that,
    /// it needs the snapshot's start time).
    /// </summary>
    internal static bool IsRetryable(EbsException e) =>
        IsThrottle(e.ErrorType)
        || e.ErrorType is EbsErrorTypes.InternalServer or EbsErrorTypes.AttemptTimeout or EbsErrorTypes.Transport or EbsErrorTypes.ChecksumMismatch
        || e.StatusCode >= 500
        || (e.ErrorType == EbsErrorTypes.Validation && IsFailedToReadBlockData(e));

    // Seen from the real service on PutSnapshotBlock and gone on retry (nanovms/ops#1268); the message is the only marker.
    private static bool IsFailedToReadBlockData(EbsException e) =>
        e.ServiceMessage?.Contains("Failed to read block data", StringComparison.OrdinalIgnoreCase) == true;
}
