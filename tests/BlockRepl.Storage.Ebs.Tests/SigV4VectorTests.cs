using System.Security.Cryptography;
using Amazon;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>
/// The five SigV4 vectors of the EBS reference §12.4 (AWSSDK.Core 4.1.0, cross-checked by an independent Python
/// SigV4), reproduced through the client's own request builders and signing path with a fixed timestamp.
/// </summary>
public sealed class SigV4VectorTests
{
    private static async Task<(string SignedHeaders, string Signature, HttpRequestMessage Request)> SignAsync(EbsClient client, EbsCall call)
    {
        var request = await client.CreateSignedRequestAsync(call, TestVectors.SignedAt, CancellationToken.None);
        string authorization = string.Join(",", request.Headers.GetValues("Authorization"));
        Assert.StartsWith($"AWS4-HMAC-SHA256 Credential={TestVectors.AccessKey}/20200618/us-east-1/ebs/aws4_request", authorization);
        return (Part(authorization, "SignedHeaders="), Part(authorization, "Signature="), request);
    }

    private static string Part(string authorization, string key)
    {
        int start = authorization.IndexOf(key, StringComparison.Ordinal) + key.Length;
        int end = authorization.IndexOf(',', start);
        return (end < 0 ? authorization[start..] : authorization[start..end]).Trim();
    }

    [Fact]
    public async Task A_ListSnapshotBlocks_with_an_escaped_page_token()
    {
        using var client = TestVectors.Client();
        var call = client.BuildListSnapshotBlocks(TestVectors.SnapshotId, startingBlockIndex: null, pageToken: "AAAB+x/y=", maxResults: 100);
        Assert.Equal("https://ebs.us-east-1.amazonaws.com/snapshots/snap-0123456789abcdef0/blocks?maxResults=100&pageToken=AAAB%2Bx%2Fy%3D", call.Uri.AbsoluteUri);
        var (headers, signature, _) = await SignAsync(client, call);
        Assert.Equal("host;x-amz-content-sha256;x-amz-date", headers);
        Assert.Equal("d6ecfa25fa8390f8a259c9cae225964c5c1ac96af52f996dc35f6362affe7894", signature);
    }

    [Fact]
    public async Task B_PutSnapshotBlock_over_https_is_unsigned_payload()
    {
        using var client = TestVectors.Client();
        byte[] block = TestVectors.Mod251Block();
        var call = client.BuildPutSnapshotBlock(TestVectors.SnapshotId, 7, block, SHA256.HashData(block), progressPercent: null);
        var (headers, signature, request) = await SignAsync(client, call);
        Assert.Equal("content-type;host;x-amz-checksum;x-amz-checksum-algorithm;x-amz-content-sha256;x-amz-data-length;x-amz-date", headers);
        Assert.Equal("a0b636eae2836a546c918b527757b9b6d1eb0079ae7161364a95b3aee635984c", signature);
        Assert.Equal("UNSIGNED-PAYLOAD", request.Headers.GetValues("X-Amz-Content-SHA256").Single());
        Assert.Equal(EbsLimits.BlockSize, request.Content!.Headers.ContentLength);
        Assert.Equal("application/octet-stream", request.Content.Headers.ContentType!.ToString());
        Assert.Equal("YdHZxXRb2qT6s5JAZRvCQqUYaxU5P9R1CC/PboT0AKs=", request.Headers.GetValues("x-amz-Checksum").Single());
        Assert.Equal("524288", request.Headers.GetValues("x-amz-Data-Length").Single());
    }

    [Fact]
    public async Task C_StartSnapshot_signs_the_json_body()
    {
        using var client = TestVectors.Client();
        var call = client.BuildStartSnapshot(new StartSnapshotRequest
        {
            VolumeSizeGiB = 8,
            TimeoutMinutes = 60,
            ClientToken = "550e8400-e29b-41d4-a716-446655440000",
        });
        Assert.Equal("""{"VolumeSize":8,"Timeout":60,"ClientToken":"550e8400-e29b-41d4-a716-446655440000"}""", System.Text.Encoding.UTF8.GetString(call.JsonBody!));
        Assert.Equal("8ccdeebf43ddf5acf9cdb0a82c7b6de36461869ef069ce09eeb878e51dff38ee", Convert.ToHexStringLower(SHA256.HashData(call.JsonBody!)));
        var (headers, signature, request) = await SignAsync(client, call);
        Assert.Equal("content-type;host;x-amz-content-sha256;x-amz-date", headers);
        Assert.Equal("9d5594418fc23d782f701a6beef3ce277bd8c3c7a10c3a4a534f686bdc4679df", signature);
        Assert.Equal("application/json", request.Content!.Headers.ContentType!.ToString());
    }

    [Fact]
    public async Task D_GetSnapshotBlock_with_an_escaped_block_token()
    {
        using var client = TestVectors.Client();
        var call = client.BuildGetSnapshotBlock(TestVectors.SnapshotId, 3072, "AAUB+abc/d=");
        Assert.Equal("/snapshots/snap-0123456789abcdef0/blocks/3072?blockToken=AAUB%2Babc%2Fd%3D", call.Uri.PathAndQuery);
        var (headers, signature, request) = await SignAsync(client, call);
        Assert.Equal("host;x-amz-content-sha256;x-amz-date", headers);
        Assert.Equal("64853b3201d83574f216092a2cf5a5a30ac11116f2269f31f132d7bfb167d87c", signature);
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", request.Headers.GetValues("X-Amz-Content-SHA256").Single());
    }

    [Fact]
    public async Task E_PutSnapshotBlock_over_http_signs_the_precomputed_hash()
    {
        // The vector was taken without Content-Type, so it goes through the signer with the vector's header set.
        byte[] block = TestVectors.Mod251Block();
        byte[] digest = SHA256.HashData(block);
        var headers = new Dictionary<string, string>
        {
            ["x-amz-Data-Length"] = "524288",
            ["x-amz-Checksum"] = Convert.ToBase64String(digest),
            ["x-amz-Checksum-Algorithm"] = "SHA256",
        };
        var signed = await EbsSigner.SignAsync(TestVectors.Credentials, RegionEndpoint.USEast1, HttpMethod.Put,
            new Uri("http://127.0.0.1:8080/snapshots/snap-0123456789abcdef0/blocks/7"), headers, body: null,
            PayloadSigning.PrecomputedHash, Convert.ToHexStringLower(digest), TestVectors.SignedAt, CancellationToken.None);
        string authorization = signed["Authorization"];
        Assert.Equal("host;x-amz-checksum;x-amz-checksum-algorithm;x-amz-content-sha256;x-amz-data-length;x-amz-date", Part(authorization, "SignedHeaders="));
        Assert.Equal("b03adf3a42c35cb0b48864e3fae7b76171cc9de0df8cdf1c71488e07f740278d", Part(authorization, "Signature="));
        Assert.Equal("61d1d9c5745bdaa4fab39240651bc242a5186b15393fd475082fcf6e84f400ab", signed["x-amz-content-sha256"]);
    }

    [Fact]
    public async Task Put_over_http_through_the_client_sends_the_block_hash_not_unsigned_payload()
    {
        using var client = TestVectors.Client("http://127.0.0.1:8080");
        byte[] block = TestVectors.Mod251Block();
        var call = client.BuildPutSnapshotBlock(TestVectors.SnapshotId, 7, block, SHA256.HashData(block), progressPercent: 42);
        var (headers, _, request) = await SignAsync(client, call);
        Assert.Equal("61d1d9c5745bdaa4fab39240651bc242a5186b15393fd475082fcf6e84f400ab", request.Headers.GetValues("x-amz-content-sha256").Single());
        Assert.Contains("x-amz-progress", headers.Split(';'));
        Assert.Equal("42", request.Headers.GetValues("x-amz-Progress").Single());
        Assert.Equal("127.0.0.1:8080", request.RequestUri!.Authority);
    }

    [Fact]
    public async Task Session_credentials_add_a_signed_security_token()
    {
        var options = new EbsClientOptions { Region = "us-east-1", Credentials = new Amazon.Runtime.SessionAWSCredentials(TestVectors.AccessKey, TestVectors.SecretKey, "TOKEN+/=") };
        using var client = new EbsClient(options, handler: null, time: null, logger: null, env: _ => null);
        var (headers, _, request) = await SignAsync(client, client.BuildGetSnapshotBlock(TestVectors.SnapshotId, 1, "t"));
        Assert.Contains("x-amz-security-token", headers.Split(';'));
        Assert.Equal("TOKEN+/=", request.Headers.GetValues("X-Amz-Security-Token").Single());
    }
}
