using Amazon.Runtime;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>The fixed inputs of docs/ebs reference §5 and §12.4.</summary>
internal static class TestVectors
{
    public const string AccessKey = "AKIDEXAMPLE";
    public const string SecretKey = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    public const string SnapshotId = "snap-0123456789abcdef0";
    public static readonly DateTime SignedAt = new(2020, 6, 18, 4, 22, 15, DateTimeKind.Utc);
    public static AWSCredentials Credentials => new BasicAWSCredentials(AccessKey, SecretKey);

    /// <summary>byte k = k mod 251.</summary>
    public static byte[] Mod251Block()
    {
        var block = new byte[EbsLimits.BlockSize];
        for (int k = 0; k < block.Length; k++) block[k] = (byte)(k % 251);
        return block;
    }

    public static byte[] Filled(byte value)
    {
        var block = new byte[EbsLimits.BlockSize];
        Array.Fill(block, value);
        return block;
    }

    public static EbsClient Client(string endpoint = "https://ebs.us-east-1.amazonaws.com", HttpMessageHandler? handler = null,
        Action<EbsClientOptionsBuilder>? configure = null)
    {
        var b = new EbsClientOptionsBuilder { EndpointUrl = new Uri(endpoint) };
        configure?.Invoke(b);
        return new EbsClient(b.Build(), handler, time: null, logger: null, env: _ => null);
    }
}

/// <summary>EbsClientOptions has init-only members; tests tweak a few of them through this.</summary>
internal sealed class EbsClientOptionsBuilder
{
    public Uri? EndpointUrl { get; set; }
    public int MaxAttempts { get; set; } = 4;
    public int MaxConcurrency { get; set; } = 64;
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(20);
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromMilliseconds(5);
    public TimeSpan NotFoundGrace { get; set; } = TimeSpan.FromMinutes(2);

    public EbsClientOptions Build() => new()
    {
        Region = "us-east-1",
        EndpointUrl = EndpointUrl,
        Credentials = TestVectors.Credentials,
        MaxAttempts = MaxAttempts,
        MaxConcurrency = MaxConcurrency,
        AttemptTimeout = AttemptTimeout,
        MaxBackoff = MaxBackoff,
        NotFoundGrace = NotFoundGrace,
    };
}
