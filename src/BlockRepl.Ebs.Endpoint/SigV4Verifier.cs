using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>What the verifier needs from a request, independent of the HTTP stack.</summary>
/// <param name="Method">HTTP method, upper case.</param>
/// <param name="RawPath">The request path exactly as sent (still percent-encoded).</param>
/// <param name="RawQuery">The query exactly as sent, without the leading '?'.</param>
/// <param name="GetHeader">All values of a header (case-insensitive name), joined by ',' as HTTP allows; null when absent.</param>
/// <param name="PayloadHash">The payload hash to sign with: the X-Amz-Content-SHA256 value the caller accepted, or the hex SHA-256 of the body.</param>
internal readonly record struct SigV4Request(string Method, string RawPath, string RawQuery, Func<string, string?> GetHeader, string PayloadHash);

/// <summary>
/// AWS Signature Version 4 (header form), verified from the published algorithm
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) and ref/ebs.md §12. It
/// deliberately shares nothing with AWSSDK.Core, which the product's client uses to sign: the two check each other.
/// </summary>
internal sealed class SigV4Verifier
{
    public const string Algorithm = "AWS4-HMAC-SHA256";
    public const string UnsignedPayload = "UNSIGNED-PAYLOAD";
    public const string EmptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    private readonly string _accessKeyId;
    private readonly byte[] _secret;
    private readonly string? _sessionToken;
    private readonly string? _region;
    private readonly string _service;
    private readonly TimeSpan _maxSkew;
    private readonly ConcurrentDictionary<string, byte[]> _signingKeys = new(StringComparer.Ordinal);

    public SigV4Verifier(string accessKeyId, string secretAccessKey, string? sessionToken, string? region, TimeSpan maxSkew, string service = "ebs")
    {
        _accessKeyId = accessKeyId;
        _secret = Encoding.UTF8.GetBytes("AWS4" + secretAccessKey);
        _sessionToken = sessionToken;
        _region = region;
        _service = service;
        _maxSkew = maxSkew;
    }

    /// <summary>Throws <see cref="EbsError"/> (403) unless the request carries a valid signature by the configured key.</summary>
    public void Verify(SigV4Request request, DateTimeOffset now)
    {
        string auth = request.GetHeader("authorization") ?? throw EbsError.MissingAuth("Missing Authentication Token: the request has no Authorization header (SigV4 is required; start the endpoint with --no-auth to accept unsigned requests).");
        var (accessKey, scopeDate, region, service, terminator, signedHeaders, signature) = ParseAuthorization(auth);

        if (!string.Equals(service, _service, StringComparison.Ordinal))
            throw EbsError.BadSignature($"Credential should be scoped to correct service: '{_service}' (the request's scope names '{service}').");
        if (terminator != "aws4_request")
            throw EbsError.BadSignature("Credential should be scoped with a valid terminator: 'aws4_request'.");
        if (_region is not null && !string.Equals(region, _region, StringComparison.Ordinal))
            throw EbsError.BadSignature($"Credential should be scoped to a valid region: '{_region}' (the request's scope names '{region}').");
        if (!string.Equals(accessKey, _accessKeyId, StringComparison.Ordinal))
            throw EbsError.UnknownKey($"The security token included in the request is invalid: access key '{accessKey}' is not the endpoint's key.");

        string amzDate = request.GetHeader("x-amz-date")
            ?? throw EbsError.BadSignature("The request has no X-Amz-Date header (SigV4 needs it, and it must be signed).");
        if (!DateTime.TryParseExact(amzDate, "yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out DateTime signedAt))
            throw EbsError.BadSignature($"X-Amz-Date '{amzDate}' is not in the form yyyyMMddTHHmmssZ.");
        if (!amzDate.StartsWith(scopeDate, StringComparison.Ordinal))
            throw EbsError.BadSignature($"Date in Credential scope ({scopeDate}) does not match X-Amz-Date ({amzDate}).");
        var skew = now.UtcDateTime - signedAt;
        if (skew.Duration() > _maxSkew)
            throw EbsError.BadSignature($"Signature expired: {amzDate} is more than {_maxSkew.TotalMinutes:0} minutes from the endpoint's time {now.UtcDateTime:yyyyMMdd'T'HHmmss'Z'} (check the clock).");
        if (!signedHeaders.Contains("host", StringComparer.Ordinal))
            throw EbsError.BadSignature("'Host' must be a signed header.");
        if (_sessionToken is not null && !string.Equals(request.GetHeader("x-amz-security-token"), _sessionToken, StringComparison.Ordinal))
            throw EbsError.UnknownKey("The security token included in the request is invalid (X-Amz-Security-Token does not match the endpoint's session token).");

        string scope = $"{scopeDate}/{region}/{service}/aws4_request";
        byte[] key = SigningKey(scopeDate, region, service);
        string canonicalHeaders = CanonicalHeaders(request, signedHeaders);
        string canonicalUri = CanonicalUri(request.RawPath);

        // A raw '+' in a query is ambiguous (RFC 3986 says '+', HTML forms say ' '); signers differ, so accept either reading.
        bool matched = Matches(CanonicalQuery(request.RawQuery, plusIsSpace: false));
        if (!matched && request.RawQuery.Contains('+', StringComparison.Ordinal))
            matched = Matches(CanonicalQuery(request.RawQuery, plusIsSpace: true));
        if (!matched)
            throw EbsError.BadSignature("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.");

        bool Matches(string canonicalQuery)
        {
            string canonicalRequest = string.Join('\n', request.Method, canonicalUri, canonicalQuery, canonicalHeaders, string.Join(';', signedHeaders), request.PayloadHash);
            string stringToSign = StringToSign(amzDate, scope, canonicalRequest);
            Span<byte> mac = stackalloc byte[32];
            HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(stringToSign), mac);
            Span<byte> given = stackalloc byte[32];
            return TryHex(signature, given) && CryptographicOperations.FixedTimeEquals(mac, given);
        }
    }

    internal static string StringToSign(string amzDate, string scope, string canonicalRequest)
    {
        Span<byte> h = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(canonicalRequest), h);
        return $"{Algorithm}\n{amzDate}\n{scope}\n{Convert.ToHexStringLower(h)}";
    }

    private byte[] SigningKey(string date, string region, string service) =>
        _signingKeys.GetOrAdd($"{date}/{region}/{service}", _ =>
        {
            byte[] k = HMACSHA256.HashData(_secret, Encoding.UTF8.GetBytes(date));
            k = HMACSHA256.HashData(k, Encoding.UTF8.GetBytes(region));
            k = HMACSHA256.HashData(k, Encoding.UTF8.GetBytes(service));
            return HMACSHA256.HashData(k, "aws4_request"u8);
        });

    private static (string AccessKey, string Date, string Region, string Service, string Terminator, string[] SignedHeaders, string Signature) ParseAuthorization(string auth)
    {
        auth = auth.Trim();
        if (!auth.StartsWith(Algorithm + " ", StringComparison.Ordinal))
            throw EbsError.BadSignature($"Unsupported Authorization type: only {Algorithm} is accepted.");
        string? credential = null, signedHeaders = null, signature = null;
        foreach (string part in auth[(Algorithm.Length + 1)..].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) throw EbsError.BadSignature($"Authorization header component '{part}' is not name=value.");
            string name = part[..eq], value = part[(eq + 1)..];
            switch (name)
            {
                case "Credential": credential = value; break;
                case "SignedHeaders": signedHeaders = value; break;
                case "Signature": signature = value; break;
                default: throw EbsError.BadSignature($"Authorization header has an unknown component '{name}'.");
            }
        }
        if (credential is null || signedHeaders is null || signature is null)
            throw EbsError.BadSignature("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.");
        string[] scope = credential.Split('/');
        if (scope.Length != 5 || scope.Any(string.IsNullOrEmpty))
            throw EbsError.BadSignature($"Credential '{credential}' is not <AccessKeyId>/<yyyyMMdd>/<region>/<service>/aws4_request.");
        return (scope[0], scope[1], scope[2], scope[3], scope[4], signedHeaders.Split(';'), signature);
    }

    private static string CanonicalHeaders(SigV4Request request, string[] signedHeaders)
    {
        var sb = new StringBuilder(256);
        foreach (string name in signedHeaders)
        {
            if (name.Length == 0 || name.Any(char.IsUpper))
                throw EbsError.BadSignature($"SignedHeaders must be lower-case names separated by ';' (got '{string.Join(';', signedHeaders)}').");
            string value = request.GetHeader(name) ?? throw EbsError.BadSignature($"The signed header '{name}' is not in the request.");
            sb.Append(name).Append(':').Append(CollapseSpaces(value.Trim())).Append('\n');
        }
        return sb.ToString();
    }

    private static string CollapseSpaces(string value)
    {
        if (!value.Contains("  ", StringComparison.Ordinal)) return value;
        var sb = new StringBuilder(value.Length);
        bool space = false;
        foreach (char c in value)
        {
            if (c == ' ') { if (!space) sb.Append(c); space = true; }
            else { sb.Append(c); space = false; }
        }
        return sb.ToString();
    }

    /// <summary>Non-S3 rule: every segment of the path as sent is URI-encoded once more (so an encoded path ends up double-encoded).</summary>
    internal static string CanonicalUri(string rawPath)
    {
        if (rawPath.Length == 0) return "/";
        var sb = new StringBuilder(rawPath.Length + 16);
        string[] segments = rawPath.Split('/');
        for (int i = 0; i < segments.Length; i++)
        {
            if (i > 0) sb.Append('/');
            UriEncode(sb, segments[i]);
        }
        return sb.ToString();
    }

    internal static string CanonicalQuery(string rawQuery, bool plusIsSpace)
    {
        if (rawQuery.Length == 0) return "";
        var pairs = new List<(string Key, string Value)>();
        foreach (string part in rawQuery.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            string k = eq < 0 ? part : part[..eq];
            string v = eq < 0 ? "" : part[(eq + 1)..];
            pairs.Add((Encode(PercentDecode(k, plusIsSpace)), Encode(PercentDecode(v, plusIsSpace))));
        }
        pairs.Sort((a, b) =>
        {
            int c = string.CompareOrdinal(a.Key, b.Key);
            return c != 0 ? c : string.CompareOrdinal(a.Value, b.Value);
        });
        return string.Join('&', pairs.Select(p => p.Key + "=" + p.Value));

        static string Encode(string s)
        {
            var sb = new StringBuilder(s.Length + 8);
            UriEncode(sb, s);
            return sb.ToString();
        }
    }

    /// <summary>RFC 3986 encoding as SigV4 defines it: unreserved characters kept, every other UTF-8 byte as %XX (upper-case hex).</summary>
    internal static void UriEncode(StringBuilder sb, string s)
    {
        Span<byte> utf8 = stackalloc byte[4];
        foreach (Rune r in s.EnumerateRunes())
        {
            if (r.IsAscii && (Rune.IsLetterOrDigit(r) || r.Value is '-' or '_' or '.' or '~'))
            {
                sb.Append((char)r.Value);
                continue;
            }
            int n = r.EncodeToUtf8(utf8);
            for (int i = 0; i < n; i++) sb.Append('%').Append(utf8[i].ToString("X2", CultureInfo.InvariantCulture));
        }
    }

    /// <summary>Percent-decodes to UTF-8 text; malformed escapes are kept literally.</summary>
    internal static string PercentDecode(string s, bool plusIsSpace)
    {
        if (s.IndexOf('%') < 0 && !(plusIsSpace && s.Contains('+', StringComparison.Ordinal))) return s;
        var bytes = new List<byte>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '%' && i + 2 < s.Length && IsHex(s[i + 1]) && IsHex(s[i + 2]))
            {
                bytes.Add((byte)Convert.ToInt32(s.Substring(i + 1, 2), 16));
                i += 2;
            }
            else if (c == '+' && plusIsSpace) bytes.Add((byte)' ');
            else
            {
                int len = char.IsHighSurrogate(c) && i + 1 < s.Length ? 2 : 1;
                bytes.AddRange(Encoding.UTF8.GetBytes(s.Substring(i, len)));
                i += len - 1;
            }
        }
        return Encoding.UTF8.GetString([.. bytes]);

        static bool IsHex(char c) => char.IsAsciiHexDigit(c);
    }

    private static bool TryHex(string hex, Span<byte> into)
    {
        if (hex.Length != into.Length * 2) return false;
        try
        {
            return Convert.FromHexString(hex, into, out _, out int written) == System.Buffers.OperationStatus.Done && written == into.Length;
        }
        catch (FormatException)
        {
            return false;
        }
    }
}
