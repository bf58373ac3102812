using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>
/// Retry, timeout and verification policy, driven through a scripted HttpMessageHandler (canned responses per
/// attempt, not an EBS emulator: the real endpoint's tests come with src/BlockRepl.Ebs.Endpoint).
/// </summary>
public sealed class ClientRetryTests
{
    private const string Snap = TestVectors.SnapshotId;

    private sealed class ScriptedHandler(Func<HttpRequestMessage, int, CancellationToken, Task<HttpResponseMessage>> script) : HttpMessageHandler
    {
        private int _calls;
        public List<(HttpRequestMessage Request, string? Authorization, long BodyLength)> Seen { get; } = [];
        public int Calls => Volatile.Read(ref _calls);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            int call = Interlocked.Increment(ref _calls);
            long length = request.Content is null ? 0 : (await request.Content.ReadAsByteArrayAsync(ct)).Length;
            lock (Seen) Seen.Add((request, request.Headers.TryGetValues("Authorization", out var a) ? a.Single() : null, length));
            return await script(request, call, ct);
        }
    }

    private static HttpResponseMessage Error(HttpStatusCode status, string type, string message = "m", string? reason = null)
    {
        var response = new HttpResponseMessage(status)
        {
            Content = new StringContent($$"""{"__type":"{{type}}","message":"{{message}}"{{(reason is null ? "" : $",\"Reason\":\"{reason}\"")}}}""", Encoding.UTF8, "application/json"),
        };
        response.Headers.TryAddWithoutValidation("x-amzn-ErrorType", type);
        return response;
    }

    private static HttpResponseMessage Json(HttpStatusCode status, string json) =>
        new(status) { Content = new StringContent(json, Encoding.UTF8, "application/json") };

    private static HttpResponseMessage Block(byte[] data, string checksum, int? dataLength = null)
    {
        var response = new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(data) };
        response.Headers.TryAddWithoutValidation("x-amz-Data-Length", (dataLength ?? data.Length).ToString(System.Globalization.CultureInfo.InvariantCulture));
        response.Headers.TryAddWithoutValidation("x-amz-Checksum", checksum);
        response.Headers.TryAddWithoutValidation("x-amz-Checksum-Algorithm", "SHA256");
        return response;
    }

    private static EbsClient Client(ScriptedHandler handler, Action<EbsClientOptionsBuilder>? configure = null) =>
        TestVectors.Client("https://ebs.us-east-1.amazonaws.com", handler, configure);

    private static (byte[] Data, byte[] Digest) SomeBlock()
    {
        byte[] data = TestVectors.Mod251Block();
        return (data, SHA256.HashData(data));
    }

    [Fact]
    public async Task Throttling_at_400_is_retried_resigned_and_halves_the_limiter()
    {
        var handler = new ScriptedHandler((_, call, _) => Task.FromResult(call == 1
            ? Error(HttpStatusCode.BadRequest, "RequestThrottledException", "Rate exceeded", "ACCOUNT_THROTTLED")
            : Json(HttpStatusCode.Created, "{}")));
        using var client = Client(handler);
        var (data, digest) = SomeBlock();
        await client.PutSnapshotBlockAsync(Snap, 7, data, digest);

        Assert.Equal(2, handler.Calls);
        Assert.NotSame(handler.Seen[0].Request, handler.Seen[1].Request);
        Assert.All(handler.Seen, s => Assert.StartsWith("AWS4-HMAC-SHA256 ", s.Authorization));
        Assert.All(handler.Seen, s => Assert.Equal(EbsLimits.BlockSize, s.BodyLength)); // the full buffer is re-sent
        Assert.Equal(2, client.Stats.Requests);
        Assert.Equal(1, client.Stats.Retries);
        Assert.Equal(1, client.Stats.Throttled);
        Assert.Equal(EbsClient.InitialConcurrency / 2, client.Stats.CurrentConcurrency);
    }

    [Fact]
    public async Task A_validation_error_is_not_retried_and_carries_type_reason_and_status()
    {
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Error(HttpStatusCode.BadRequest, "ValidationException", "The block token is invalid", "INVALID_BLOCK_TOKEN")));
        using var client = Client(handler);
        var e = await Assert.ThrowsAsync<EbsException>(() => client.GetSnapshotBlockAsync(Snap, 1, "tok", new byte[EbsLimits.BlockSize]));
        Assert.Equal(1, handler.Calls);
        Assert.Equal("ValidationException", e.ErrorType);
        Assert.Equal("INVALID_BLOCK_TOKEN", e.Reason);
        Assert.Equal(400, e.StatusCode);
        Assert.Equal(1, e.Attempts);
        Assert.Contains("GetSnapshotBlock snap-0123456789abcdef0 block 1", e.Message);
        Assert.DoesNotContain(TestVectors.SecretKey, e.Message);
    }

    [Fact]
    public async Task Failed_to_read_block_data_is_retried()
    {
        var handler = new ScriptedHandler((_, call, _) => Task.FromResult(call < 3
            ? Error(HttpStatusCode.BadRequest, "ValidationException", "Failed to read block data", "INVALID_PARAMETER_VALUE")
            : Json(HttpStatusCode.Created, "{}")));
        using var client = Client(handler);
        var (data, digest) = SomeBlock();
        await client.PutSnapshotBlockAsync(Snap, 0, data, digest);
        Assert.Equal(3, handler.Calls);
    }

    [Fact]
    public async Task Server_errors_give_up_after_MaxAttempts()
    {
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Error(HttpStatusCode.InternalServerError, "InternalServerException")));
        using var client = Client(handler, o => o.MaxAttempts = 3);
        var e = await Assert.ThrowsAsync<EbsException>(() => client.CompleteSnapshotAsync(Snap, 1));
        Assert.Equal(3, handler.Calls);
        Assert.Equal(3, e.Attempts);
        Assert.Equal("InternalServerException", e.ErrorType);
        Assert.Contains("gave up after 3 attempts", e.Message);
    }

    [Fact]
    public async Task A_hung_response_is_abandoned_after_AttemptTimeout_and_retried()
    {
        var handler = new ScriptedHandler(async (_, call, ct) =>
        {
            if (call == 1) await Task.Delay(Timeout.Infinite, ct);
            return Json(HttpStatusCode.OK, """{"Blocks":[],"BlockSize":524288}""");
        });
        using var client = Client(handler, o => o.AttemptTimeout = TimeSpan.FromMilliseconds(200));
        var page = await client.ListSnapshotBlocksAsync(Snap).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Empty(page.Blocks);
        Assert.Equal(2, handler.Calls);
    }

    [Fact]
    public async Task Connection_failures_are_retried()
    {
        var handler = new ScriptedHandler((_, call, _) => call == 1
            ? throw new HttpRequestException("Connection reset by peer", new IOException("reset"))
            : Task.FromResult(Json(HttpStatusCode.Accepted, """{"Status":"pending"}""")));
        using var client = Client(handler);
        Assert.Equal("pending", await client.CompleteSnapshotAsync(Snap, 3, new byte[32]));
        Assert.Equal(2, handler.Calls);
    }

    [Fact]
    public async Task Caller_cancellation_is_not_turned_into_an_EbsException()
    {
        var handler = new ScriptedHandler(async (_, _, ct) =>
        {
            await Task.Delay(Timeout.Infinite, ct);
            return Json(HttpStatusCode.OK, "{}");
        });
        using var client = Client(handler);
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.ListSnapshotBlocksAsync(Snap, ct: cts.Token));
        Assert.Equal(1, handler.Calls);
    }

    [Fact]
    public async Task Does_not_exist_right_after_StartSnapshot_is_retried_beyond_MaxAttempts_within_the_grace()
    {
        var handler = new ScriptedHandler((request, call, _) => Task.FromResult(
            request.Method == HttpMethod.Post
                ? Json(HttpStatusCode.Created, $$"""{"SnapshotId":"{{Snap}}","Status":"pending","VolumeSize":1,"BlockSize":524288,"Progress":null}""")
                : call <= 7 ? Error(HttpStatusCode.NotFound, "ResourceNotFoundException", $"The snapshot '{Snap}' does not exist.", "SNAPSHOT_NOT_FOUND")
                : Json(HttpStatusCode.Created, "{}")));
        using var client = Client(handler, o => o.MaxAttempts = 3);
        var info = await client.StartSnapshotAsync(new StartSnapshotRequest { VolumeSizeGiB = 1, ClientToken = "t-1" });
        Assert.Equal(Snap, info.SnapshotId);
        var (data, digest) = SomeBlock();
        await client.PutSnapshotBlockAsync(Snap, 0, data, digest);
        Assert.Equal(8, handler.Calls);
    }

    [Fact]
    public async Task Reads_of_a_just_started_snapshot_get_no_not_found_grace()
    {
        var handler = new ScriptedHandler((request, _, _) => Task.FromResult(request.Method == HttpMethod.Post
            ? Json(HttpStatusCode.Created, $$"""{"SnapshotId":"{{Snap}}","Status":"pending"}""")
            : Error(HttpStatusCode.NotFound, "ResourceNotFoundException")));
        using var client = Client(handler);
        await client.StartSnapshotAsync(new StartSnapshotRequest { VolumeSizeGiB = 1, ClientToken = "t-2" });
        var e = await Assert.ThrowsAsync<EbsException>(() => client.ListSnapshotBlocksAsync(Snap));
        Assert.True(e.IsNotFound);
        Assert.Equal(2, handler.Calls);
    }

    [Fact]
    public async Task Does_not_exist_for_a_snapshot_this_client_did_not_start_fails_at_once()
    {
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Error(HttpStatusCode.NotFound, "ResourceNotFoundException")));
        using var client = Client(handler);
        var (data, digest) = SomeBlock();
        var e = await Assert.ThrowsAsync<EbsException>(() => client.PutSnapshotBlockAsync("snap-other", 0, data, digest));
        Assert.True(e.IsNotFound);
        Assert.Equal(1, handler.Calls);
    }

    [Fact]
    public async Task GetSnapshotBlock_reads_into_the_destination_and_verifies()
    {
        var (data, digest) = SomeBlock();
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Block(data, Convert.ToBase64String(digest))));
        using var client = Client(handler);
        byte[] destination = new byte[EbsLimits.BlockSize];
        Assert.Equal(EbsLimits.BlockSize, await client.GetSnapshotBlockAsync(Snap, 3, "AAUB+abc/d=", destination));
        Assert.Equal(data, destination);
        Assert.Equal("?blockToken=AAUB%2Babc%2Fd%3D", handler.Seen[0].Request.RequestUri!.Query);
    }

    [Fact]
    public async Task GetSnapshotBlock_retries_a_checksum_mismatch_then_gives_up()
    {
        var (data, digest) = SomeBlock();
        byte[] damaged = (byte[])data.Clone();
        damaged[12345] ^= 1;
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Block(damaged, Convert.ToBase64String(digest))));
        using var client = Client(handler, o => o.MaxAttempts = 3);
        var e = await Assert.ThrowsAsync<EbsException>(() => client.GetSnapshotBlockAsync(Snap, 3, "t", new byte[EbsLimits.BlockSize]));
        Assert.Equal(EbsErrorTypes.ChecksumMismatch, e.ErrorType);
        Assert.Equal(3, handler.Calls);
    }

    [Fact]
    public async Task GetSnapshotBlock_recovers_when_a_retry_brings_good_data()
    {
        var (data, digest) = SomeBlock();
        var handler = new ScriptedHandler((_, call, _) => Task.FromResult(call == 1
            ? Block(data.AsSpan(0, 1000).ToArray(), Convert.ToBase64String(digest), dataLength: EbsLimits.BlockSize) // short body
            : Block(data, Convert.ToBase64String(digest))));
        using var client = Client(handler);
        byte[] destination = new byte[EbsLimits.BlockSize];
        Assert.Equal(EbsLimits.BlockSize, await client.GetSnapshotBlockAsync(Snap, 3, "t", destination));
        Assert.Equal(data, destination);
        Assert.Equal(2, handler.Calls);
    }

    [Fact]
    public async Task GetSnapshotBlock_rejects_a_length_beyond_the_destination_and_a_foreign_algorithm()
    {
        var (data, digest) = SomeBlock();
        var handler = new ScriptedHandler((_, call, _) =>
        {
            var response = Block(data, Convert.ToBase64String(digest));
            if (call == 2)
            {
                response.Headers.Remove("x-amz-Checksum-Algorithm");
                response.Headers.TryAddWithoutValidation("x-amz-Checksum-Algorithm", "CRC32");
            }
            return Task.FromResult(response);
        });
        using var client = Client(handler);
        var tooSmall = await Assert.ThrowsAsync<EbsException>(() => client.GetSnapshotBlockAsync(Snap, 3, "t", new byte[4096]));
        Assert.Equal(EbsErrorTypes.InvalidResponse, tooSmall.ErrorType);
        var algorithm = await Assert.ThrowsAsync<EbsException>(() => client.GetSnapshotBlockAsync(Snap, 3, "t", new byte[EbsLimits.BlockSize]));
        Assert.Contains("CRC32", algorithm.Message);
        Assert.Equal(2, handler.Calls);
    }

    [Fact]
    public async Task WaitForCompleted_polls_until_the_snapshot_is_listable()
    {
        var handler = new ScriptedHandler((request, call, _) => Task.FromResult(call <= 2
            ? Error(HttpStatusCode.NotFound, "ResourceNotFoundException")
            : Json(HttpStatusCode.OK, """{"Blocks":[],"ExpiryTime":1.59298379649E9}""")));
        using var client = Client(handler);
        var polls = new List<TimeSpan>();
        await client.WaitForCompletedAsync(Snap, TimeSpan.FromSeconds(30), polls.Add);
        Assert.Equal(2, polls.Count);
        Assert.Equal(3, handler.Calls);
        Assert.Contains("maxResults=100", handler.Seen[0].Request.RequestUri!.Query);
    }

    [Fact]
    public async Task WaitForCompleted_times_out_with_an_EbsException()
    {
        var handler = new ScriptedHandler((_, _, _) => Task.FromResult(Error(HttpStatusCode.NotFound, "ResourceNotFoundException")));
        using var client = Client(handler);
        var e = await Assert.ThrowsAsync<EbsException>(() => client.WaitForCompletedAsync(Snap, TimeSpan.FromMilliseconds(700)));
        Assert.Equal(EbsErrorTypes.WaitTimeout, e.ErrorType);
        Assert.InRange(handler.Calls, 2, 6);
    }

    [Fact]
    public void Backoff_is_full_jitter_capped_by_MaxBackoff()
    {
        var random = new Random(1);
        for (int attempt = 1; attempt < 40; attempt++)
        {
            var delay = EbsClient.Backoff(attempt, TimeSpan.FromSeconds(10), random);
            Assert.InRange(delay, TimeSpan.Zero, TimeSpan.FromMilliseconds(Math.Min(10_000, 200 * Math.Pow(2, attempt - 1))));
        }
    }
}
