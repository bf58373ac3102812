using System.Net;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>SigV4 as the endpoint enforces it end to end (the verifier's own vectors are in <see cref="SigV4VerifierTests"/>).</summary>
public class EndpointAuthTests
{
    [Fact]
    public async Task Signed_requests_pass_and_unsigned_wrong_or_stale_ones_get_403()
    {
        await using var ep = await TestEndpoint.StartAsync();
        const string body = """{"VolumeSize":1}""";
        var bytes = System.Text.Encoding.UTF8.GetBytes(body);

        var unsigned = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", sign: false);
        Assert.Equal((HttpStatusCode.Forbidden, "MissingAuthenticationTokenException"), (unsigned.Status, unsigned.ErrorType));

        var wrongSecret = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", secretKey: "nope");
        Assert.Equal((HttpStatusCode.Forbidden, "InvalidSignatureException"), (wrongSecret.Status, wrongSecret.ErrorType));

        var unknownKey = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", accessKey: "AKIDSOMEONEELSE");
        Assert.Equal((HttpStatusCode.Forbidden, "UnrecognizedClientException"), (unknownKey.Status, unknownKey.ErrorType));

        var stale = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", signedAt: DateTime.UtcNow.AddMinutes(-20));
        Assert.Equal((HttpStatusCode.Forbidden, "InvalidSignatureException"), (stale.Status, stale.ErrorType));

        var wrongService = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", service: "s3");
        Assert.Equal(HttpStatusCode.Forbidden, wrongService.Status);
        Assert.Contains("'ebs'", wrongService.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);

        // The signature covers the body through its hash: a different body with the old hash is refused.
        var lyingHash = await ep.SendAsync(HttpMethod.Post, "snapshots", System.Text.Encoding.UTF8.GetBytes("""{"VolumeSize":2}"""), "application/json",
            payloadHash: TestSigner.PayloadHash(bytes));
        Assert.Equal(HttpStatusCode.Forbidden, lyingHash.Status);
        Assert.Contains("does not match the SHA-256 of the body", lyingHash.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);

        // A header changed after signing breaks the signature.
        var tampered = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json",
            afterSign: r => r.Headers.Add("x-amz-date", "20200101T000000Z"));
        Assert.Equal(HttpStatusCode.Forbidden, tampered.Status);

        // UNSIGNED-PAYLOAD only on PutSnapshotBlock.
        var unsignedStart = await ep.SendAsync(HttpMethod.Post, "snapshots", bytes, "application/json", payloadHash: "UNSIGNED-PAYLOAD");
        Assert.Equal(HttpStatusCode.Forbidden, unsignedStart.Status);
        string id = await ep.StartSnapshotIdAsync();
        var put = await ep.PutBlockAsync(id, 0, TestEndpoint.VectorBlock(0), unsigned: true);
        Assert.Equal(HttpStatusCode.Created, put.Status);
        Assert.Equal(HttpStatusCode.Created, (await ep.PutBlockAsync(id, 1, TestEndpoint.VectorBlock(1))).Status);

        var stats = ep.Server.GetStats().Operations["StartSnapshot"];
        Assert.Equal(1, stats.Succeeded); // only StartSnapshotIdAsync got through
    }

    [Fact]
    public async Task Without_auth_unsigned_requests_are_accepted()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions { DataDirectory = d, RequireAuth = false });
        var r = await ep.SendAsync(HttpMethod.Post, "snapshots", System.Text.Encoding.UTF8.GetBytes("""{"VolumeSize":1}"""), "application/json", sign: false);
        Assert.Equal(HttpStatusCode.Created, r.Status);
        Assert.False(ep.Server.AuthEnabled);
    }

    [Fact]
    public async Task Starting_with_auth_but_no_credentials_fails_with_a_clear_message()
    {
        using var dir = new BlockRepl.TestKit.TempDir();
        if (Environment.GetEnvironmentVariable("AWS_ACCESS_KEY_ID") is not null) return; // the test host has credentials: nothing to check
        await using var server = new EbsEndpointServer(new EbsEndpointOptions { DataDirectory = dir.Path });
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => server.StartAsync());
        Assert.Contains("AWS_ACCESS_KEY_ID", e.Message, StringComparison.Ordinal);
    }
}
