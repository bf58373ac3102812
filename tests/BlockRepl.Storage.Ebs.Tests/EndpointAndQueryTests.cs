namespace BlockRepl.Storage.Ebs.Tests;

public sealed class EndpointAndQueryTests
{
    private static Uri Resolve(Uri? option, Dictionary<string, string> env, string region = "us-east-2") =>
        EbsClient.ResolveEndpoint(new EbsClientOptions { Region = region, EndpointUrl = option }, name => env.GetValueOrDefault(name));

    [Fact]
    public void Option_beats_environment()
    {
        var env = new Dictionary<string, string> { ["AWS_ENDPOINT_URL_EBS"] = "http://ebs-env:1", ["AWS_ENDPOINT_URL"] = "http://generic:2" };
        Assert.Equal(new Uri("http://option:9000"), Resolve(new Uri("http://option:9000"), env));
    }

    [Fact]
    public void Service_specific_variable_beats_the_generic_one()
    {
        var env = new Dictionary<string, string> { ["AWS_ENDPOINT_URL_EBS"] = "http://ebs-env:1", ["AWS_ENDPOINT_URL"] = "http://generic:2" };
        Assert.Equal(new Uri("http://ebs-env:1"), Resolve(null, env));
        Assert.Equal(new Uri("http://generic:2"), Resolve(null, new Dictionary<string, string> { ["AWS_ENDPOINT_URL"] = "http://generic:2", ["AWS_ENDPOINT_URL_EBS"] = " " }));
    }

    [Fact]
    public void Default_is_the_regional_endpoint()
    {
        Assert.Equal(new Uri("https://ebs.us-east-2.amazonaws.com"), Resolve(null, []));
        Assert.Equal(new Uri("https://ebs.cn-north-1.amazonaws.com.cn"), Resolve(null, [], "cn-north-1"));
    }

    [Theory]
    [InlineData("ftp://x/")]
    [InlineData("http://user:secret@host/")]
    [InlineData("not a url")]
    public void Bad_endpoints_are_rejected_without_echoing_secrets(string url)
    {
        var e = Assert.Throws<ArgumentException>(() => Resolve(null, new Dictionary<string, string> { ["AWS_ENDPOINT_URL_EBS"] = url }));
        Assert.DoesNotContain("secret", e.Message);
    }

    [Fact]
    public void The_client_reports_the_resolved_endpoint_and_keeps_a_base_path()
    {
        using var client = new EbsClient(new EbsClientOptions { Region = "us-east-1", Credentials = TestVectors.Credentials }, null, null, null,
            name => name == "AWS_ENDPOINT_URL" ? "http://127.0.0.1:4566/prefix/" : null);
        Assert.Equal(new Uri("http://127.0.0.1:4566/prefix/"), client.Endpoint);
        Assert.Equal("/prefix/snapshots", client.BuildStartSnapshot(new StartSnapshotRequest { VolumeSizeGiB = 1, ClientToken = "t" }).Uri.AbsolutePath);
    }

    [Fact]
    public void Tokens_are_percent_encoded_in_queries()
    {
        using var client = TestVectors.Client();
        const string token = "AAUBAcuWqOCnDNuKle11s7IIX6jp6FYcC/q8oT93913HhvLvA+3JRrSybp/0==";
        var get = client.BuildGetSnapshotBlock(TestVectors.SnapshotId, 1, token);
        Assert.Equal("?blockToken=AAUBAcuWqOCnDNuKle11s7IIX6jp6FYcC%2Fq8oT93913HhvLvA%2B3JRrSybp%2F0%3D%3D", get.Uri.Query);
        var changed = client.BuildListChangedBlocks("snap-a", "snap-b", startingBlockIndex: 5, pageToken: "a+b/c=", maxResults: 500);
        Assert.Equal("/snapshots/snap-b/changedblocks?firstSnapshotId=snap-a&maxResults=500&pageToken=a%2Bb%2Fc%3D&startingBlockIndex=5", changed.Uri.PathAndQuery);
        var list = client.BuildListSnapshotBlocks(TestVectors.SnapshotId, startingBlockIndex: 1000, pageToken: null, maxResults: null);
        Assert.Equal("?startingBlockIndex=1000", list.Uri.Query);
    }

    [Fact]
    public void Complete_sends_count_and_linear_checksum_headers()
    {
        using var client = TestVectors.Client();
        var call = client.BuildCompleteSnapshot(TestVectors.SnapshotId, 5, Convert.FromBase64String("6D3nmwi5f2F0wlh7xX8QprrJBFzDX8aacdOcA3KCM3c="));
        Assert.Equal("/snapshots/completion/snap-0123456789abcdef0", call.Uri.AbsolutePath);
        Assert.Equal(HttpMethod.Post, call.Method);
        Assert.Equal(
            ["x-amz-ChangedBlocksCount=5", "x-amz-Checksum=6D3nmwi5f2F0wlh7xX8QprrJBFzDX8aacdOcA3KCM3c=", "x-amz-Checksum-Algorithm=SHA256", "x-amz-Checksum-Aggregation-Method=LINEAR"],
            call.Headers.Select(h => $"{h.Key}={h.Value}"));
        Assert.Single(client.BuildCompleteSnapshot(TestVectors.SnapshotId, 0, null).Headers);
    }

    [Fact]
    public void Put_rejects_a_short_block_or_a_base64_digest()
    {
        using var client = TestVectors.Client();
        Assert.Throws<ArgumentException>(() => client.BuildPutSnapshotBlock(TestVectors.SnapshotId, 0, new byte[4096], new byte[32], null));
        Assert.Throws<ArgumentException>(() => client.BuildPutSnapshotBlock(TestVectors.SnapshotId, 0, new byte[EbsLimits.BlockSize], new byte[44], null));
        Assert.Throws<ArgumentOutOfRangeException>(() => client.BuildPutSnapshotBlock(TestVectors.SnapshotId, -1, new byte[EbsLimits.BlockSize], new byte[32], null));
    }
}
