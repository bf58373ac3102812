using System.Text.RegularExpressions;
using BlockRepl.Storage.Ebs;

namespace BlockRepl.Engine.Ebs;

/// <summary><c>ebs://REGION</c> targets: parsing and the client for them, shared by the CLI and the daemon.</summary>
public static partial class EbsTargets
{
    public const string Scheme = "ebs://";

    public static bool IsEbs(string location) => location.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase);

    [GeneratedRegex("^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$|^[a-z0-9][a-z0-9-]{0,40}$")]
    private static partial Regex RegionPattern();

    /// <summary><c>ebs://REGION</c> → the region (with a clear error for anything else).</summary>
    public static string Region(string location)
    {
        string rest = location[Scheme.Length..].TrimEnd('/');
        if (rest.Length == 0 || rest.Contains('/') || !RegionPattern().IsMatch(rest))
            throw new UsageException($"'{location}': an EBS target is ebs://REGION, e.g. ebs://us-east-1");
        return rest;
    }

    /// <summary>
    /// A client for <paramref name="region"/>: the endpoint override if given (http or https), else
    /// AWS_ENDPOINT_URL_EBS / AWS_ENDPOINT_URL, else the region's AWS endpoint (an unknown region is refused
    /// before any network call).
    /// </summary>
    public static IEbsClient CreateClient(string region, string? endpointUrl, string? profile)
    {
        Uri? endpoint = null;
        if (endpointUrl is not null && (!Uri.TryCreate(endpointUrl, UriKind.Absolute, out endpoint) || (endpoint.Scheme != "http" && endpoint.Scheme != "https")))
            throw new UsageException($"--endpoint-url '{endpointUrl}': give an http:// or https:// URL");
        bool overridden = endpoint is not null || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("AWS_ENDPOINT_URL_EBS"))
            || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("AWS_ENDPOINT_URL"));
        if (!overridden && !Amazon.RegionEndpoint.EnumerableAllRegions.Any(r => r.SystemName == region))
            throw new UsageException($"ebs://{region}: unknown AWS region; use a region such as us-east-1, or --ebs-endpoint-url for another endpoint");
        return EbsClient.Create(new EbsClientOptions { Region = region, EndpointUrl = endpoint, Profile = profile });
    }
}
