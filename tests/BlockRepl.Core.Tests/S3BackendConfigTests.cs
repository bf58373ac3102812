using System.Net;
using Amazon.Runtime;
using Amazon.S3;
using BlockRepl.Engine;
using BlockRepl.Engine.Repository;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;

namespace BlockRepl.Core.Tests;

/// <summary>S3 backend pieces that need no server: location parsing, endpoint/region settings, error mapping.</summary>
public sealed class S3BackendConfigTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Name == name).Value;

    private static S3BackendOptions Options(string? endpoint = null, params (string, string)[] env) =>
        new() { EndpointUrl = endpoint, GetEnvironmentVariable = Env(env), Region = null };

    [Theory]
    [InlineData("s3://bucket", "bucket", "", "s3://bucket")]
    [InlineData("s3://bucket/", "bucket", "", "s3://bucket")]
    [InlineData("s3://my-bucket/a/b", "my-bucket", "a/b/", "s3://my-bucket/a/b")]
    [InlineData("s3://my.bucket/a/b/", "my.bucket", "a/b/", "s3://my.bucket/a/b")]
    public void ParsesBucketAndPrefix(string location, string bucket, string prefix, string display)
    {
        var parsed = S3Location.Parse(location);
        Assert.Equal(bucket, parsed.Bucket);
        Assert.Equal(prefix, parsed.Prefix);
        Assert.Equal(display, parsed.ToString());
    }

    [Theory]
    [InlineData("s3://")]
    [InlineData("s3://ab")]
    [InlineData("s3://bad bucket/x")]
    [InlineData("s3://bucket/a/../b")]
    [InlineData("s3://bucket/a//b")]
    public void RejectsInvalidLocations(string location) =>
        Assert.Throws<ArgumentException>(() => S3Location.Parse(location));

    [Fact]
    public void EndpointOptionBeatsServiceVariableBeatsGlobalVariable()
    {
        var env = Env(("AWS_ENDPOINT_URL_S3", "http://s3only:1"), ("AWS_ENDPOINT_URL", "http://all:2"));
        Assert.Equal("http://opt:3", S3Backend.ResolveEndpoint("http://opt:3", env));
        Assert.Equal("http://s3only:1", S3Backend.ResolveEndpoint(null, env));
        Assert.Equal("http://all:2", S3Backend.ResolveEndpoint(null, Env(("AWS_ENDPOINT_URL", "http://all:2"))));
        Assert.Null(S3Backend.ResolveEndpoint(null, Env()));
    }

    [Fact]
    public void EndpointWithCredentialsIsRejectedWithoutEchoingThem()
    {
        var e = Assert.Throws<StorageException>(() => S3Backend.ResolveEndpoint("http://AKIAX:supersecret@host:1", Env()));
        Assert.DoesNotContain("supersecret", e.Message, StringComparison.Ordinal);
        Assert.False(e.Transient);
    }

    [Fact]
    public void EndpointOverrideUsesPathStyleDefaultRegionAndRequiredChecksumsOnly()
    {
        var config = S3Backend.CreateConfig(Options(env: ("AWS_REGION", "")), "http://127.0.0.1:7480");
        Assert.True(config.ForcePathStyle);
        Assert.StartsWith("http://127.0.0.1:7480", config.ServiceURL, StringComparison.Ordinal);
        Assert.Equal(RequestChecksumCalculation.WHEN_REQUIRED, config.RequestChecksumCalculation);
        Assert.Equal(ResponseChecksumValidation.WHEN_REQUIRED, config.ResponseChecksumValidation);
        Assert.IsType<NoExpectHttpClientFactory>(config.HttpClientFactory);
        if (Environment.GetEnvironmentVariable("AWS_REGION") is null && Environment.GetEnvironmentVariable("AWS_DEFAULT_REGION") is null && Environment.GetEnvironmentVariable("AWS_PROFILE") is null)
            Assert.Equal("us-east-1", config.AuthenticationRegion);
    }

    [Fact]
    public void ConfiguredRegionIsUsedWithAnEndpointOverride()
    {
        var config = S3Backend.CreateConfig(Options(env: ("AWS_REGION", "eu-west-3")), "http://127.0.0.1:7480");
        Assert.Equal("eu-west-3", config.AuthenticationRegion);
    }

    [Fact]
    public void WithoutEndpointTheRegionalAwsEndpointIsUsed()
    {
        var config = S3Backend.CreateConfig(Options(env: ("AWS_REGION", "eu-central-1")), null);
        Assert.Equal("eu-central-1", config.RegionEndpoint?.SystemName);
        Assert.False(config.ForcePathStyle);
    }

    private static S3Backend Backend() =>
        new("s3://bkt/pre", new S3BackendOptions { EndpointUrl = "http://127.0.0.1:9", GetEnvironmentVariable = Env(("AWS_REGION", "us-east-1")) });

    private static AmazonS3Exception S3Error(string code, HttpStatusCode status) =>
        new($"server says {code}", ErrorType.Sender, code, "req-1", status);

    [Fact]
    public async Task ErrorsAreClassifiedIntoNotFoundPermanentAndTransient()
    {
        await using var backend = Backend();
        Assert.IsType<ObjectNotFoundException>(backend.Map(S3Error("NoSuchKey", HttpStatusCode.NotFound), "config"));
        Assert.IsType<ObjectNotFoundException>(backend.Map(S3Error("", HttpStatusCode.NotFound), "config"));

        var bucket = backend.Map(S3Error("NoSuchBucket", HttpStatusCode.NotFound), "config");
        Assert.IsNotType<ObjectNotFoundException>(bucket);
        Assert.False(bucket.Transient);
        Assert.Contains("bucket 'bkt' does not exist", bucket.Message, StringComparison.Ordinal);

        foreach (var code in new[] { "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch" })
        {
            var denied = backend.Map(S3Error(code, HttpStatusCode.Forbidden), "config");
            Assert.False(denied.Transient);
            Assert.Contains("access denied (check credentials", denied.Message, StringComparison.Ordinal);
        }

        Assert.True(backend.Map(S3Error("SlowDown", HttpStatusCode.ServiceUnavailable), "k").Transient);
        Assert.True(backend.Map(S3Error("InternalError", HttpStatusCode.InternalServerError), "k").Transient);
        Assert.True(backend.Map(new HttpRequestException("connection refused"), "k").Transient);
        Assert.True(backend.Map(new IOException("reset"), "k").Transient);
        Assert.True(backend.Map(new TaskCanceledException("timeout", new TimeoutException()), "k").Transient);
        Assert.False(backend.Map(S3Error("InvalidArgument", HttpStatusCode.BadRequest), "k").Transient);
    }

    [Fact]
    public async Task MessagesNameTheObjectWithoutSecrets()
    {
        await using var backend = Backend();
        var e = backend.Map(S3Error("SlowDown", HttpStatusCode.ServiceUnavailable), "data/ab/x.pack");
        Assert.Contains("s3://bkt/pre/data/ab/x.pack", e.Message, StringComparison.Ordinal);
        Assert.Equal("s3://bkt/pre", backend.Location);
    }

    [Fact]
    public async Task LocatorWrapsS3InRetriesAndKeepsLocalDirectories()
    {
        await using var s3 = RepositoryLocator.CreateBackend("s3://bucket/prefix", "http://127.0.0.1:9");
        var retrying = Assert.IsType<RetryingBackend>(s3);
        Assert.IsType<S3Backend>(retrying.Inner);
        Assert.Equal("s3://bucket/prefix", s3.Location);

        Assert.Throws<UsageException>(() => RepositoryLocator.CreateBackend("s3://x"));
        Assert.Throws<UsageException>(() => RepositoryLocator.CreateBackend("gs://bucket/x"));
        Assert.Throws<UsageException>(() => RepositoryLocator.CreateBackend("s3://bucket", "ftp://host"));
        Assert.Throws<UsageException>(() => RepositoryLocator.CreateBackend("/tmp/x", "http://127.0.0.1:9"));
    }

    [Fact]
    public async Task SpoolKeepsSmallUploadsInMemoryAndLargeOnesInADeletedOnCloseFile()
    {
        using var dir = new TempDirectory();
        var spool = new SpoolStream(dir.Path, memoryLimit: 1000);
        await spool.WriteAsync(new byte[600]);
        Assert.Null(spool.FilePath);
        var tail = TestData.Random(900, 5);
        await spool.WriteAsync(tail);
        string? path = spool.FilePath;
        Assert.NotNull(path);
        await spool.FreezeAsync(default);
        Assert.Throws<InvalidOperationException>(() => spool.Write(new byte[1]));

        for (int i = 0; i < 2; i++)   // re-readable for commit retries
        {
            await using var read = spool.OpenRead();
            var all = new byte[1500];
            await read.ReadExactlyAsync(all);
            Assert.Equal(tail, all[600..]);
            Assert.Equal(0, read.ReadByte() + 1);
        }

        await spool.DisposeAsync();
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void StorageClasses_ApplyToPacksOnly_LongestPrefixWins()
    {
        var options = new S3BackendOptions().WithPackStorageClass("standard_ia");
        Assert.Equal("STANDARD_IA", options.StorageClassFor("data/ab/0123.pack"));
        Assert.Null(options.StorageClassFor("index/0123"));
        Assert.Null(options.StorageClassFor("snapshots/2026-x"));
        Assert.Null(options.StorageClassFor("config"));
        Assert.Null(options.StorageClassFor("locks/x"));
        Assert.Null(new S3BackendOptions().StorageClassFor("data/ab/0123.pack"));
        Assert.Same(options, options.WithPackStorageClass(null));

        var custom = options with { StorageClasses = new Dictionary<string, string> { ["data/"] = "GLACIER_IR", ["data/ff/"] = "DEEP_ARCHIVE", ["index/"] = "STANDARD" } };
        Assert.Equal("DEEP_ARCHIVE", custom.StorageClassFor("data/ff/1.pack"));
        Assert.Equal("GLACIER_IR", custom.StorageClassFor("data/fe/1.pack"));
        Assert.Equal("STANDARD", custom.StorageClassFor("index/1"));
    }

    [Fact]
    public void StorageClasses_UnknownNamesAreRefused()
    {
        Assert.True(S3StorageClasses.IsKnown("glacier_ir"));
        Assert.False(S3StorageClasses.IsKnown("COLD"));
        var e = Assert.Throws<ArgumentException>(() => new S3BackendOptions().WithPackStorageClass("COLD"));
        Assert.Contains("STANDARD_IA", e.Message, StringComparison.Ordinal);
        var bad = new S3BackendOptions { EndpointUrl = "http://127.0.0.1:1", Region = "us-east-1", StorageClasses = new Dictionary<string, string> { ["data/"] = "COLD" } };
        Assert.Throws<ArgumentException>(() => new S3Backend("s3://b/p", bad));
        var u = Assert.Throws<UsageException>(() => RepositoryLocator.CreateBackend("/tmp/some-local-repo", null, "STANDARD_IA"));
        Assert.Contains("s3://", u.Message, StringComparison.Ordinal);
    }
}
