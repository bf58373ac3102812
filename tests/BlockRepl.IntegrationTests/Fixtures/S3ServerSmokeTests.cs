using System.Security.Cryptography;
using BlockRepl.TestKit;
using Xunit.Abstractions;

namespace BlockRepl.IntegrationTests.Fixtures;

/// <summary>Proves the S3 server fixtures: buckets, a put/get round trip through the AWS CLI, auth.</summary>
internal static class S3Smoke
{
    public static async Task PutGetRoundTrip(IS3TestServer server, bool versioning, bool objectLock)
    {
        string bucket = await server.CreateBucketAsync("smoke", versioning, objectLock);
        using var tmp = new TempDir("s3-smoke");
        byte[] data = RandomNumberGenerator.GetBytes(300_000);
        await File.WriteAllBytesAsync(tmp.File("in"), data);

        // Object Lock buckets require Content-MD5 (or a checksum) on PUT, on AWS as on both servers.
        string[] put = ["put-object", "--bucket", bucket, "--key", "dir/obj", "--body", tmp.File("in")];
        if (objectLock)
        {
            put = [.. put, "--content-md5", Convert.ToBase64String(MD5.HashData(data))];
        }

        await S3TestServers.S3ApiAsync(server, put);
        await S3TestServers.S3ApiAsync(server, ["get-object", "--bucket", bucket, "--key", "dir/obj", tmp.File("out")]);
        Assert.Equal(data, await File.ReadAllBytesAsync(tmp.File("out")));

        var versioningState = await S3TestServers.S3ApiAsync(server, ["get-bucket-versioning", "--bucket", bucket]);
        Assert.Equal(versioning || objectLock, versioningState.Stdout.Contains("\"Enabled\"", StringComparison.Ordinal));
        if (objectLock)
        {
            var lockConfig = await S3TestServers.S3ApiAsync(server, ["get-object-lock-configuration", "--bucket", bucket]);
            Assert.Contains("\"ObjectLockEnabled\": \"Enabled\"", lockConfig.Stdout, StringComparison.Ordinal);
        }
    }

    /// <summary>The four ClientEnvironment variables alone are enough for an AWS client (no --endpoint-url).</summary>
    public static async Task ClientEnvironmentSuffices(IS3TestServer server)
    {
        string bucket = await server.CreateBucketAsync("env");
        var env = new Dictionary<string, string>(server.ClientEnvironment)
        {
            ["AWS_CONFIG_FILE"] = "/dev/null",
            ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null",
        };
        var r = await Task.Run(() => Processes.Run("aws", $"s3api list-objects-v2 --bucket {bucket}", check: false, env: env));
        Assert.True(r.ExitCode == 0, $"aws with ClientEnvironment only: exit {r.ExitCode}\n{r.Stderr}");
    }
}

[Collection("rgw")]
public sealed class RgwServerSmokeTests(RgwServer rgw, ITestOutputHelper output)
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public Task PutGetRoundTrip(bool versioning, bool objectLock) => S3Smoke.PutGetRoundTrip(rgw, versioning, objectLock);

    [Fact]
    public Task ClientEnvironmentSuffices()
    {
        output.WriteLine($"RGW at {rgw.Endpoint} (home {rgw.Home}) started in {rgw.StartTime.TotalSeconds:0.00} s");
        return S3Smoke.ClientEnvironmentSuffices(rgw);
    }

    [Fact]
    public async Task PutWithWrongSecretIs403AndWritesNothing()
    {
        string bucket = await rgw.CreateBucketAsync("auth");
        string url = $"{rgw.Endpoint}/{bucket}/obj";
        string payload = Convert.ToHexStringLower(SHA256.HashData("hello"u8));

        string Put(string secret) => Processes.Run(
            "curl",
            string.Join(' ', new[]
            {
                "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-X", "PUT", "--data-binary", "hello",
                "--aws-sigv4", $"aws:amz:{rgw.Region}:s3", "--user", $"{rgw.AccessKey}:{secret}",
                "-H", $"x-amz-content-sha256: {payload}", url,
            }.Select(Processes.Quote))).Stdout.Trim();

        Assert.Equal("403", await Task.Run(() => Put(rgw.SecretKey + "x")));
        var head = await S3TestServers.S3ApiAsync(rgw, ["head-object", "--bucket", bucket, "--key", "obj"], check: false);
        Assert.NotEqual(0, head.ExitCode);

        // the same request with the right secret succeeds, so the 403 was the secret's doing
        Assert.Equal("200", await Task.Run(() => Put(rgw.SecretKey)));
        await S3TestServers.S3ApiAsync(rgw, ["head-object", "--bucket", bucket, "--key", "obj"]);

        // The AWS CLI is refused too. (aws-cli 1.45 then prints "argument of type 'NoneType' is not
        // iterable" instead of the error code: its s3errormsg hook chokes on RGW's error body without
        // <Message>, so only the exit code is checked here; curl above proves the 403.)
        var viaCli = await S3TestServers.S3ApiAsync(
            rgw, ["put-object", "--bucket", bucket, "--key", "obj2", "--body", "/dev/null"], check: false, secretKey: "wrong-secret");
        Assert.NotEqual(0, viaCli.ExitCode);
    }
}

[Collection("moto")]
public sealed class MotoServerSmokeTests(MotoServer moto, ITestOutputHelper output)
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public Task PutGetRoundTrip(bool versioning, bool objectLock) => S3Smoke.PutGetRoundTrip(moto, versioning, objectLock);

    [Fact]
    public Task ClientEnvironmentSuffices()
    {
        output.WriteLine($"moto_server at {moto.Endpoint} started in {moto.StartTime.TotalSeconds:0.00} s");
        return S3Smoke.ClientEnvironmentSuffices(moto);
    }
}
