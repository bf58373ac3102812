using System.Net;
using System.Security.Cryptography;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>Limiter gating, credential errors and retry logging of the whole client.</summary>
public sealed class ClientPolicyTests
{
    private sealed class Handler(Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> send) : HttpMessageHandler
    {
        public int Calls;
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            Interlocked.Increment(ref Calls);
            return send(request, ct);
        }
    }

    private sealed class ListSink : ILogEventSink
    {
        public List<LogEvent> Events { get; } = [];
        public void Emit(LogEvent logEvent)
        {
            lock (Events) Events.Add(logEvent);
        }
    }

    private static HttpResponseMessage Created() => new(HttpStatusCode.Created) { Content = new StringContent("{}") };

    [Fact]
    public async Task Block_puts_never_exceed_the_limiter()
    {
        int current = 0, peak = 0;
        var handler = new Handler(async (_, ct) =>
        {
            int now = Interlocked.Increment(ref current);
            int seen;
            while ((seen = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, seen) != seen)
            {
            }
            await Task.Delay(10, ct);
            Interlocked.Decrement(ref current);
            return Created();
        });
        using var client = TestVectors.Client(handler: handler, configure: o => o.MaxConcurrency = 4);
        byte[] block = TestVectors.Filled(7);
        byte[] digest = SHA256.HashData(block);
        await Task.WhenAll(Enumerable.Range(0, 40).Select(i => client.PutSnapshotBlockAsync(TestVectors.SnapshotId, i, block, digest)));
        Assert.Equal(40, handler.Calls);
        Assert.InRange(peak, 1, 4);
        Assert.Equal(4, client.Stats.CurrentConcurrency);
        Assert.Equal(0, client.Limiter.InFlight);
    }

    [Fact]
    public async Task An_unknown_profile_is_a_credentials_error_before_any_request()
    {
        var handler = new Handler((_, _) => Task.FromResult(Created()));
        string profile = "blockrepl-no-such-profile-" + Guid.NewGuid().ToString("N");
        using var client = new EbsClient(new EbsClientOptions { Region = "us-east-1", Profile = profile, EndpointUrl = new Uri("http://127.0.0.1:9") },
            handler, time: null, logger: null, env: _ => null);
        var e = await Assert.ThrowsAsync<EbsException>(() => client.ListSnapshotBlocksAsync(TestVectors.SnapshotId));
        Assert.Equal(EbsErrorTypes.Credentials, e.ErrorType);
        Assert.Contains(profile, e.Message);
        Assert.Equal(0, handler.Calls);
    }

    [Fact]
    public async Task Retries_are_logged_at_warning_with_the_block_and_without_secrets()
    {
        int call = 0;
        var handler = new Handler((_, _) =>
        {
            if (Interlocked.Increment(ref call) > 1) return Task.FromResult(Created());
            var throttled = new HttpResponseMessage(HttpStatusCode.BadRequest) { Content = new StringContent("""{"message":"Rate exceeded"}""") };
            throttled.Headers.TryAddWithoutValidation("x-amzn-ErrorType", "RequestThrottledException");
            return Task.FromResult(throttled);
        });
        var sink = new ListSink();
        using var logger = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        var options = new EbsClientOptionsBuilder { EndpointUrl = new Uri("https://ebs.us-east-1.amazonaws.com") }.Build();
        using var client = new EbsClient(options, handler, time: null, logger, env: _ => null);
        byte[] block = TestVectors.Filled(1);
        await client.PutSnapshotBlockAsync(TestVectors.SnapshotId, 42, block, SHA256.HashData(block));

        var warning = Assert.Single(sink.Events);
        Assert.Equal(LogEventLevel.Warning, warning.Level);
        Assert.Equal("42", warning.Properties["BlockIndex"].ToString());
        Assert.Equal("\"RequestThrottledException\"", warning.Properties["ErrorType"].ToString());
        Assert.True(warning.Properties.ContainsKey("ElapsedMs"));
        string rendered = warning.RenderMessage();
        Assert.DoesNotContain(TestVectors.SecretKey, rendered);
        Assert.DoesNotContain("Signature", rendered);
    }
}
