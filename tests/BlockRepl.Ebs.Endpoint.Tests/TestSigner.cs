using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>
/// A minimal SigV4 signer for the tests, written separately from the endpoint's verifier (it signs what HttpClient
/// will send: host, x-amz-*, content-type). Fixed vectors (ref §12.4) pin the verifier itself; this one only has
/// to agree with it, and the JS SDK and AWS CLI tests pin both against real signers.
/// </summary>
internal static class TestSigner
{
    public static void Sign(HttpRequestMessage request, string payloadHash, string accessKey, string secretKey, string region = "us-east-1", DateTime? at = null, string service = "ebs")
    {
        DateTime now = at ?? DateTime.UtcNow;
        string amzDate = now.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        string date = amzDate[..8];
        request.Headers.Remove("x-amz-date");
        request.Headers.Remove("x-amz-content-sha256");
        request.Headers.TryAddWithoutValidation("x-amz-date", amzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", payloadHash);

        var headers = new SortedDictionary<string, string>(StringComparer.Ordinal) { ["host"] = request.RequestUri!.Authority };
        foreach (var h in request.Headers)
        {
            string name = h.Key.ToLowerInvariant();
            if (name.StartsWith("x-amz-", StringComparison.Ordinal)) headers[name] = string.Join(',', h.Value).Trim();
        }
        if (request.Content?.Headers.ContentType is { } ct) headers["content-type"] = ct.ToString();

        var uri = request.RequestUri!;
        string canonicalUri = string.Join('/', uri.AbsolutePath.Split('/').Select(s => Uri.EscapeDataString(s)));
        string canonicalQuery = string.Join('&', uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.Split('=', 2))
            .Select(kv => (K: Uri.EscapeDataString(Uri.UnescapeDataString(kv[0])), V: Uri.EscapeDataString(Uri.UnescapeDataString(kv.Length > 1 ? kv[1] : ""))))
            .OrderBy(kv => kv.K, StringComparer.Ordinal).ThenBy(kv => kv.V, StringComparer.Ordinal)
            .Select(kv => kv.K + "=" + kv.V));
        string signedHeaders = string.Join(';', headers.Keys);
        string canonical = $"{request.Method.Method}\n{canonicalUri}\n{canonicalQuery}\n{string.Concat(headers.Select(h => h.Key + ":" + h.Value + "\n"))}\n{signedHeaders}\n{payloadHash}";
        string scope = $"{date}/{region}/{service}/aws4_request";
        string toSign = $"AWS4-HMAC-SHA256\n{amzDate}\n{scope}\n{Hex(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))}";
        byte[] k = Hmac(Encoding.UTF8.GetBytes("AWS4" + secretKey), date);
        k = Hmac(k, region);
        k = Hmac(k, service);
        k = Hmac(k, "aws4_request");
        string signature = Hex(Hmac(k, toSign));
        request.Headers.TryAddWithoutValidation("Authorization", $"AWS4-HMAC-SHA256 Credential={accessKey}/{scope}, SignedHeaders={signedHeaders}, Signature={signature}");
    }

    public static string Hex(byte[] b) => Convert.ToHexStringLower(b);
    public static string PayloadHash(ReadOnlySpan<byte> body) => Hex(SHA256.HashData(body));
    private static byte[] Hmac(byte[] key, string data) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(data));
}
