using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>The verifier against the five signatures of ref/ebs.md §12.4 (AWSSDK.Core 4.1.0 and an independent Python signer agree on them).</summary>
public class SigV4VerifierTests
{
    private const string Ak = "AKIDEXAMPLE";
    private const string Sk = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    private const string Date = "20200618T042215Z";
    private const string Host = "ebs.us-east-1.amazonaws.com";
    private const string Snap = "/snapshots/snap-0123456789abcdef0";
    private const string BlockB64 = "YdHZxXRb2qT6s5JAZRvCQqUYaxU5P9R1CC/PboT0AKs=";
    private const string BlockHex = "61d1d9c5745bdaa4fab39240651bc242a5186b15393fd475082fcf6e84f400ab";
    private static readonly DateTimeOffset At = new(2020, 6, 18, 4, 22, 15, TimeSpan.Zero);

    private static SigV4Verifier Verifier(TimeSpan? skew = null) => new(Ak, Sk, null, null, skew ?? TimeSpan.FromMinutes(15));

    private static SigV4Request Request(string method, string path, string query, Dictionary<string, string> headers, string signedHeaders, string signature, string payloadHash)
    {
        var all = new Dictionary<string, string>(headers, StringComparer.OrdinalIgnoreCase)
        {
            ["x-amz-date"] = Date,
            ["Authorization"] = $"AWS4-HMAC-SHA256 Credential={Ak}/20200618/us-east-1/ebs/aws4_request, SignedHeaders={signedHeaders}, Signature={signature}",
        };
        return new SigV4Request(method, path, query, n => all.TryGetValue(n, out var v) ? v : null, payloadHash);
    }

    public static TheoryData<string> Cases => ["A", "B", "C", "D", "E"];

    private static SigV4Request Vector(string name, string? signatureOverride = null)
    {
        const string empty = SigV4Verifier.EmptyPayloadHash;
        var checksums = new Dictionary<string, string> { ["x-amz-Checksum"] = BlockB64, ["x-amz-Checksum-Algorithm"] = "SHA256", ["x-amz-Data-Length"] = "524288" };
        switch (name)
        {
            case "A":
                return Request("GET", Snap + "/blocks", "maxResults=100&pageToken=AAAB%2Bx%2Fy%3D",
                    new() { ["host"] = Host, ["x-amz-content-sha256"] = empty }, "host;x-amz-content-sha256;x-amz-date",
                    signatureOverride ?? "d6ecfa25fa8390f8a259c9cae225964c5c1ac96af52f996dc35f6362affe7894", empty);
            case "B":
                return Request("PUT", Snap + "/blocks/7", "",
                    new(checksums) { ["host"] = Host, ["Content-Type"] = "application/octet-stream", ["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD" },
                    "content-type;host;x-amz-checksum;x-amz-checksum-algorithm;x-amz-content-sha256;x-amz-data-length;x-amz-date",
                    signatureOverride ?? "a0b636eae2836a546c918b527757b9b6d1eb0079ae7161364a95b3aee635984c", "UNSIGNED-PAYLOAD");
            case "C":
            {
                string body = """{"VolumeSize":8,"Timeout":60,"ClientToken":"550e8400-e29b-41d4-a716-446655440000"}""";
                string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(body)));
                Assert.Equal("8ccdeebf43ddf5acf9cdb0a82c7b6de36461869ef069ce09eeb878e51dff38ee", hash);
                return Request("POST", "/snapshots", "",
                    new() { ["host"] = Host, ["Content-Type"] = "application/json", ["x-amz-content-sha256"] = hash },
                    "content-type;host;x-amz-content-sha256;x-amz-date",
                    signatureOverride ?? "9d5594418fc23d782f701a6beef3ce277bd8c3c7a10c3a4a534f686bdc4679df", hash);
            }
            case "D":
                return Request("GET", Snap + "/blocks/3072", "blockToken=AAUB%2Babc%2Fd%3D",
                    new() { ["host"] = Host, ["x-amz-content-sha256"] = empty }, "host;x-amz-content-sha256;x-amz-date",
                    signatureOverride ?? "64853b3201d83574f216092a2cf5a5a30ac11116f2269f31f132d7bfb167d87c", empty);
            case "E":
                return Request("PUT", Snap + "/blocks/7", "",
                    new(checksums) { ["host"] = "127.0.0.1:8080", ["x-amz-content-sha256"] = BlockHex },
                    "host;x-amz-checksum;x-amz-checksum-algorithm;x-amz-content-sha256;x-amz-data-length;x-amz-date",
                    signatureOverride ?? "b03adf3a42c35cb0b48864e3fae7b76171cc9de0df8cdf1c71488e07f740278d", BlockHex);
            default:
                throw new ArgumentOutOfRangeException(nameof(name));
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Reference_vector_verifies(string name) => Verifier().Verify(Vector(name), At);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Reference_vector_with_one_flipped_signature_digit_is_rejected(string name)
    {
        var good = Vector(name);
        string auth = good.GetHeader("authorization")!;
        char last = auth[^1];
        string bad = auth[..^1] + (last == '0' ? '1' : '0');
        var tampered = good with { GetHeader = n => n == "authorization" ? bad : good.GetHeader(n) };
        var e = Assert.Throws<EbsError>(() => Verifier().Verify(tampered, At));
        Assert.Equal((403, "InvalidSignatureException"), (e.Status, e.Type));
    }

    [Fact]
    public void Vector_D_canonical_query_keeps_the_percent_encoded_token()
    {
        Assert.Equal("blockToken=AAUB%2Babc%2Fd%3D", SigV4Verifier.CanonicalQuery("blockToken=AAUB%2Babc%2Fd%3D", plusIsSpace: false));
        Assert.Equal("maxResults=100&pageToken=AAAB%2Bx%2Fy%3D", SigV4Verifier.CanonicalQuery("pageToken=AAAB%2Bx%2Fy%3D&maxResults=100", plusIsSpace: false));
    }

    [Fact]
    public void A_changed_payload_hash_breaks_the_signature()
    {
        var c = Vector("C");
        Assert.Throws<EbsError>(() => Verifier().Verify(c with { PayloadHash = SigV4Verifier.EmptyPayloadHash }, At));
    }

    [Fact]
    public void Clock_skew_beyond_15_minutes_is_rejected_with_signature_expired()
    {
        var e = Assert.Throws<EbsError>(() => Verifier().Verify(Vector("A"), At.AddMinutes(16)));
        Assert.Equal("InvalidSignatureException", e.Type);
        Assert.Contains("expired", e.Message, StringComparison.OrdinalIgnoreCase);
        Verifier().Verify(Vector("A"), At.AddMinutes(14));
    }

    [Fact]
    public void Unknown_access_key_is_UnrecognizedClientException()
    {
        var v = new SigV4Verifier("AKIDOTHER", Sk, null, null, TimeSpan.FromMinutes(15));
        var e = Assert.Throws<EbsError>(() => v.Verify(Vector("A"), At));
        Assert.Equal((403, "UnrecognizedClientException"), (e.Status, e.Type));
    }

    [Fact]
    public void Wrong_secret_is_InvalidSignatureException()
    {
        var v = new SigV4Verifier(Ak, Sk + "x", null, null, TimeSpan.FromMinutes(15));
        Assert.Equal("InvalidSignatureException", Assert.Throws<EbsError>(() => v.Verify(Vector("B"), At)).Type);
    }

    [Fact]
    public void Region_is_enforced_only_when_configured()
    {
        var v = new SigV4Verifier(Ak, Sk, null, "eu-west-1", TimeSpan.FromMinutes(15));
        Assert.Contains("region", Assert.Throws<EbsError>(() => v.Verify(Vector("A"), At)).Message, StringComparison.Ordinal);
        new SigV4Verifier(Ak, Sk, null, "us-east-1", TimeSpan.FromMinutes(15)).Verify(Vector("A"), At);
    }
}
