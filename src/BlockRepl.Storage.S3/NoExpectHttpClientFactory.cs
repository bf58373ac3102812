using Amazon.Runtime;

namespace BlockRepl.Storage.S3;

/// <summary>
/// HTTP clients that never send <c>Expect: 100-continue</c>. RGW's beast frontend does not discard
/// an unread small body of a request it rejected before reading it, and the next request on that
/// keep-alive connection then fails with 400/405 (../shared/ref/rgw.md §3.2). Waiting for 100-continue
/// buys nothing for objects of tens of MiB that are accepted almost always.
/// </summary>
internal sealed class NoExpectHttpClientFactory(TimeSpan requestTimeout) : HttpClientFactory
{
    public override HttpClient CreateHttpClient(IClientConfig clientConfig)
    {
        var sockets = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 64,
            ConnectTimeout = TimeSpan.FromSeconds(15),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AutomaticDecompression = System.Net.DecompressionMethods.None,
            UseCookies = false,
            AllowAutoRedirect = false,
        };
        return new HttpClient(new NoExpectHandler(sockets)) { Timeout = requestTimeout };
    }

    private sealed class NoExpectHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.ExpectContinue = false;
            return base.SendAsync(request, cancellationToken);
        }
    }
}
