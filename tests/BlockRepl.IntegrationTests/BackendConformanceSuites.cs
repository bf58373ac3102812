using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage;
using BlockRepl.Storage.S3;
using BlockRepl.TestKit;

namespace BlockRepl.IntegrationTests;

/// <summary>The conformance suite on <see cref="LocalBackend"/>: a new temp directory per backend.</summary>
public sealed class LocalBackendConformanceTests : BackendConformanceTests
{
    private readonly List<TempDir> _dirs = [];

    protected override Task<IBackend> CreateBackendAsync()
    {
        var dir = new TempDir("br-conformance");
        _dirs.Add(dir);
        return Task.FromResult<IBackend>(new LocalBackend(dir.Path));
    }

    protected override Task CleanupAsync()
    {
        foreach (var d in _dirs) d.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>
/// The conformance suite on <see cref="S3Backend"/> against an <see cref="IS3TestServer"/>: a new
/// bucket per backend, a key prefix (so "relative keys" is tested), explicit credentials and endpoint
/// from the fixture, and <see cref="RetryingBackend"/> around it as in production.
/// </summary>
public abstract class S3BackendConformanceTests(IS3TestServer server) : BackendConformanceTests
{
    protected IS3TestServer Server { get; } = server;

    protected override async Task<IBackend> CreateBackendAsync()
    {
        string bucket = await Server.CreateBucketAsync("conformance");
        var s3 = new S3Backend(S3Location.Parse($"s3://{bucket}/repo/a"), new S3BackendOptions
        {
            EndpointUrl = Server.Endpoint,
            Region = Server.Region,
            Credentials = new BasicAWSCredentials(Server.AccessKey, Server.SecretKey),
        });
        return new RetryingBackend(s3);
    }
}

/// <summary>The conformance suite on S3 against Ceph RGW 16.2.15 (unversioned buckets: If-None-Match is honoured).</summary>
[Collection("rgw")]
public sealed class RgwBackendConformanceTests(RgwServer server) : S3BackendConformanceTests(server);

/// <summary>The conformance suite on S3 against moto_server.</summary>
[Collection("moto")]
public sealed class MotoBackendConformanceTests(MotoServer server) : S3BackendConformanceTests(server);
