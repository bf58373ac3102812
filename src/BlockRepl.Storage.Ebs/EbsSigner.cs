using Amazon;
using Amazon.Runtime;
using Amazon.Runtime.Signing;

namespace BlockRepl.Storage.Ebs;

/// <summary>How the body enters the SigV4 canonical request.</summary>
internal enum PayloadSigning
{
    /// <summary>Hash the body (or the empty string): JSON and body-less calls.</summary>
    Body,
    /// <summary>UNSIGNED-PAYLOAD (PutSnapshotBlock over HTTPS; AWSSDK.Core refuses it over HTTP).</summary>
    Unsigned,
    /// <summary>A caller-supplied lowercase hex SHA-256 of the body, used verbatim (PutSnapshotBlock over HTTP).</summary>
    PrecomputedHash,
}

/// <summary>
/// SigV4 for service "ebs" through AWSSDK.Core's public <see cref="AWSSigV4Signer"/>. Called once per attempt so
/// every retry carries a fresh X-Amz-Date. Only the headers passed here are signed (plus host, x-amz-date,
/// x-amz-content-sha256 and the session token the signer adds); all of them must be sent unchanged.
/// </summary>
internal static class EbsSigner
{
    public const string Service = "ebs";
    public const string ContentSha256Header = "x-amz-content-sha256";

    /// <returns>Every header the signer wants on the request (Authorization, X-Amz-Date, X-Amz-Content-SHA256, …).</returns>
    public static async Task<IDictionary<string, string>> SignAsync(
        AWSCredentials credentials, RegionEndpoint region, HttpMethod method, Uri uri,
        IEnumerable<KeyValuePair<string, string>> headers, byte[]? body, PayloadSigning payload, string? payloadSha256Hex,
        DateTime? signedAt, CancellationToken ct)
    {
        var request = new AWSSigningRequest { HttpMethod = method, RequestUri = uri };
        foreach (var (name, value) in headers) request.Headers[name] = value;
        switch (payload)
        {
            case PayloadSigning.Body:
                if (body is { Length: > 0 }) request.Content = body;
                break;
            case PayloadSigning.PrecomputedHash:
                if (payloadSha256Hex is not { Length: 64 }) throw new ArgumentException("a precomputed payload hash is 64 hex digits", nameof(payloadSha256Hex));
                request.Headers[ContentSha256Header] = payloadSha256Hex;
                break;
            case PayloadSigning.Unsigned:
                if (uri.Scheme != Uri.UriSchemeHttps) throw new ArgumentException("UNSIGNED-PAYLOAD needs HTTPS", nameof(payload));
                break;
        }
        var parameters = new AWSSigV4Parameters
        {
            Credentials = credentials,
            Region = region,
            Service = Service,
            SignPayload = payload != PayloadSigning.Unsigned,
            SignedAt = signedAt,
        };
        var result = await AWSSigV4Signer.SignAsync(request, parameters, ct).ConfigureAwait(false);
        var all = new Dictionary<string, string>(result.Headers, StringComparer.OrdinalIgnoreCase);
        if (payload == PayloadSigning.PrecomputedHash) all.TryAdd(ContentSha256Header, payloadSha256Hex!);
        return all;
    }
}
