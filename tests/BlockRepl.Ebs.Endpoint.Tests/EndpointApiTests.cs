using System.Net;
using System.Text.Json;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>The six operations over raw HTTP: routes, status codes, bodies, headers and validation (ref/ebs.md §2–§10).</summary>
public class EndpointApiTests
{
    private const int Block = TestEndpoint.Block;

    [Fact]
    public async Task Start_put_complete_list_get_round_trip_with_the_LINEAR_vector()
    {
        await using var ep = await TestEndpoint.StartAsync();
        var start = await ep.StartSnapshotAsync("""{"VolumeSize":1,"Description":"d","Tags":[{"Key":"a","Value":"b"}],"Timeout":60}""");
        Assert.Equal(HttpStatusCode.Created, start.Status);
        Assert.Equal("application/json", start.ContentType);
        Assert.NotNull(start.Header("x-amzn-RequestId"));
        var j = start.Json;
        string id = j.GetProperty("SnapshotId").GetString()!;
        Assert.Matches("^snap-[0-9a-f]{17}$", id);
        Assert.Equal("pending", j.GetProperty("Status").GetString());
        Assert.Equal(Block, j.GetProperty("BlockSize").GetInt32());
        Assert.Equal(1, j.GetProperty("VolumeSize").GetInt64());
        Assert.Equal(JsonValueKind.Null, j.GetProperty("ParentSnapshotId").ValueKind);
        Assert.Equal("b", j.GetProperty("Tags")[0].GetProperty("Value").GetString());
        Assert.True(j.GetProperty("StartTime").GetDouble() > 1.5e9);

        var blocks = new[] { 0, 3, 5 }.ToDictionary(i => i, TestEndpoint.VectorBlock);
        foreach (var (i, data) in blocks)
        {
            var put = await ep.PutBlockAsync(id, i, data);
            Assert.Equal(HttpStatusCode.Created, put.Status);
            Assert.Equal(TestEndpoint.Checksum(data), put.Header("x-amz-Checksum"));
            Assert.Equal("SHA256", put.Header("x-amz-Checksum-Algorithm"));
            Assert.Equal("{}", System.Text.Encoding.UTF8.GetString(put.Body));
        }
        Assert.Equal("YdHZxXRb2qT6s5JAZRvCQqUYaxU5P9R1CC/PboT0AKs=", TestEndpoint.Checksum(blocks[0]));
        Assert.Equal("B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=", TestEndpoint.Checksum(blocks[3]));

        // Reads are refused until the snapshot is completed.
        var early = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks");
        Assert.Equal((HttpStatusCode.NotFound, "ResourceNotFoundException"), (early.Status, early.ErrorType));

        // The wrong LINEAR variant (SHA-256 of the base64 strings) is rejected; the right one accepted.
        var wrong = await ep.CompleteAsync(id, 3, "nHVaMBxBlSMN/QMEnS/+mx0VTBz+7kI7sDHrTpqWDWc=");
        Assert.Equal((HttpStatusCode.BadRequest, "ValidationException"), (wrong.Status, wrong.ErrorType));
        var done = await ep.CompleteAsync(id, 3, "3hkXyCDr36rg2eDqBxV5ZdzJOm+UCWAYaDS7rB6bzM8=");
        Assert.Equal(HttpStatusCode.Accepted, done.Status);
        Assert.Equal("""{"Status":"pending"}""", System.Text.Encoding.UTF8.GetString(done.Body));
        await ep.WaitStatusAsync(id, "completed");

        var list = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?maxResults=100");
        Assert.Equal(HttpStatusCode.OK, list.Status);
        var lj = list.Json;
        Assert.Equal([0, 3, 5], lj.GetProperty("Blocks").EnumerateArray().Select(b => b.GetProperty("BlockIndex").GetInt32()));
        Assert.Equal(JsonValueKind.Null, lj.GetProperty("NextToken").ValueKind);
        Assert.Equal(1, lj.GetProperty("VolumeSize").GetInt64());
        string rawExpiry = lj.GetProperty("ExpiryTime").GetRawText();
        Assert.Matches(@"^\d\.\d+E9$", rawExpiry);
        Assert.InRange(lj.GetProperty("ExpiryTime").GetDouble(), DateTimeOffset.UtcNow.AddDays(6.9).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.AddDays(7.1).ToUnixTimeSeconds());

        foreach (var b in lj.GetProperty("Blocks").EnumerateArray())
        {
            int i = b.GetProperty("BlockIndex").GetInt32();
            string token = b.GetProperty("BlockToken").GetString()!;
            Assert.Matches("^[A-Za-z0-9+/=]+$", token);
            Assert.Contains('+', token);
            Assert.Contains('/', token);
            Assert.EndsWith("=", token, StringComparison.Ordinal);
            var get = await ep.GetBlockAsync(id, i, token);
            Assert.Equal(HttpStatusCode.OK, get.Status);
            Assert.Equal("application/octet-stream", get.ContentType);
            Assert.Equal(blocks[i], get.Body);
            Assert.Equal("524288", get.Header("x-amz-Data-Length"));
            Assert.Equal(TestEndpoint.Checksum(blocks[i]), get.Header("x-amz-Checksum"));
            Assert.Equal("SHA256", get.Header("x-amz-Checksum-Algorithm"));
        }

        // A completed snapshot takes no more blocks; a repeated CompleteSnapshot reports its status.
        var late = await ep.PutBlockAsync(id, 9, blocks[0]);
        Assert.Equal((HttpStatusCode.BadRequest, "ValidationException"), (late.Status, late.ErrorType));
        var again = await ep.CompleteAsync(id, 3);
        Assert.Equal("completed", again.Json.GetProperty("Status").GetString());
    }

    [Fact]
    public async Task Error_answers_carry_type_header_request_id_and_both_message_casings()
    {
        await using var ep = await TestEndpoint.StartAsync();
        var r = await ep.StartSnapshotAsync("""{"VolumeSize":0}""");
        Assert.Equal(HttpStatusCode.BadRequest, r.Status);
        Assert.Equal("ValidationException", r.ErrorType);
        Assert.NotNull(r.Header("x-amzn-RequestId"));
        Assert.Equal("application/json", r.ContentType);
        var j = r.Json;
        Assert.Equal("ValidationException", j.GetProperty("__type").GetString());
        Assert.Equal(j.GetProperty("message").GetString(), j.GetProperty("Message").GetString());
        Assert.Equal("INVALID_VOLUME_SIZE", j.GetProperty("Reason").GetString());

        var unknown = await ep.SendAsync(HttpMethod.Delete, "snapshots/snap-0123");
        Assert.Equal((HttpStatusCode.NotFound, "UnknownOperationException"), (unknown.Status, unknown.ErrorType));
        var missing = await ep.PutBlockAsync("snap-0123456789abcdef0", 0, new byte[Block]);
        Assert.Equal((HttpStatusCode.NotFound, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND"), (missing.Status, missing.ErrorType, missing.Reason));
        var badId = await ep.PutBlockAsync("vol-123", 0, new byte[Block]);
        Assert.Equal(("ValidationException", "INVALID_SNAPSHOT_ID"), (badId.ErrorType, badId.Reason));
    }

    [Theory]
    [InlineData("""{"Timeout":60}""", null)]
    [InlineData("""{"VolumeSize":65537}""", "INVALID_VOLUME_SIZE")]
    [InlineData("""{"VolumeSize":1,"Timeout":9}""", null)]
    [InlineData("""{"VolumeSize":1,"Timeout":4321}""", null)]
    [InlineData("""{"VolumeSize":1,"KmsKeyArn":"not-an-arn"}""", "INVALID_CUSTOMER_KEY")]
    [InlineData("""{"VolumeSize":1,"ParentSnapshotId":"snap-0123456789abcdef0","Encrypted":true}""", null)]
    [InlineData("""{"VolumeSize":"big"}""", null)]
    [InlineData("""not json""", null)]
    public async Task StartSnapshot_rejects_invalid_parameters_with_ValidationException(string body, string? reason)
    {
        await using var ep = await TestEndpoint.StartAsync();
        var r = await ep.StartSnapshotAsync(body);
        Assert.Equal((HttpStatusCode.BadRequest, "ValidationException"), (r.Status, r.ErrorType));
        if (reason is not null) Assert.Equal(reason, r.Reason);
    }

    [Fact]
    public async Task StartSnapshot_accepts_the_timeout_bounds_and_the_largest_volume()
    {
        await using var ep = await TestEndpoint.StartAsync();
        foreach (string body in new[] { """{"VolumeSize":1,"Timeout":10}""", """{"VolumeSize":1,"Timeout":4320}""", """{"VolumeSize":65536}""" })
            Assert.Equal(HttpStatusCode.Created, (await ep.StartSnapshotAsync(body)).Status);
    }

    [Fact]
    public async Task PutSnapshotBlock_validates_length_checksum_algorithm_index_and_progress()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync(volumeSize: 1);
        var data = TestEndpoint.VectorBlock(7);

        async Task Expect(TestEndpoint.Response r, string? reason = null)
        {
            Assert.True(r.Status == HttpStatusCode.BadRequest && r.ErrorType == "ValidationException", r.ToString());
            if (reason is not null) Assert.Equal(reason, r.Reason);
            await Task.CompletedTask;
        }

        await Expect(await ep.PutBlockAsync(id, 0, data, dataLength: "4096"));
        await Expect(await ep.PutBlockAsync(id, 0, data[..4096], dataLength: "524288"));
        await Expect(await ep.PutBlockAsync(id, 0, data, checksum: TestEndpoint.Checksum(new byte[Block])));
        await Expect(await ep.PutBlockAsync(id, 2048, data), "INVALID_BLOCK"); // 1 GiB = blocks 0..2047
        await Expect(await ep.PutBlockAsync(id, 0, data, extraHeaders: new Dictionary<string, string> { ["x-amz-Progress"] = "101" }));
        var algo = await ep.SendAsync(HttpMethod.Put, $"snapshots/{id}/blocks/0", data, "application/octet-stream",
            new Dictionary<string, string> { ["x-amz-Data-Length"] = "524288", ["x-amz-Checksum"] = TestEndpoint.Checksum(data), ["x-amz-Checksum-Algorithm"] = "MD5" });
        await Expect(algo);
        var noChecksum = await ep.SendAsync(HttpMethod.Put, $"snapshots/{id}/blocks/0", data, "application/octet-stream",
            new Dictionary<string, string> { ["x-amz-Data-Length"] = "524288", ["x-amz-Checksum-Algorithm"] = "SHA256" });
        await Expect(noChecksum);
        var tooLong = await ep.PutBlockAsync(id, 0, [.. data, 1], checksum: TestEndpoint.Checksum(data));
        await Expect(tooLong);
        await Expect(await ep.PutBlockAsync(id, -1, data));

        // The last index of the volume works, an overwrite works, and only distinct blocks count.
        await ep.PutOkAsync(id, 2047, data);
        await ep.PutOkAsync(id, 0, data);
        await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        var c = await ep.CompleteAsync(id, 3);
        Assert.Equal(HttpStatusCode.BadRequest, c.Status);
        Assert.Contains("2 distinct", c.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);
        await ep.CompleteAndWaitAsync(id, 2, TestEndpoint.Linear([TestEndpoint.VectorBlock(0), data]));
        Assert.Equal(1, ep.Server.GetStats().Operations["CompleteSnapshot"].ClientErrors);
    }

    [Fact]
    public async Task CompleteSnapshot_requires_ChangedBlocksCount_and_accepts_a_zero_block_snapshot()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync();
        var missing = await ep.SendAsync(HttpMethod.Post, $"snapshots/completion/{id}");
        Assert.Equal((HttpStatusCode.BadRequest, "ValidationException"), (missing.Status, missing.ErrorType));
        var notInt = await ep.SendAsync(HttpMethod.Post, $"snapshots/completion/{id}", headers: new Dictionary<string, string> { ["x-amz-ChangedBlocksCount"] = "-1" });
        Assert.Equal(HttpStatusCode.BadRequest, notInt.Status);
        Assert.Equal("pending", await ep.DescribeStatusAsync(id));
        await ep.CompleteAndWaitAsync(id, 0);
        var list = await ep.ListAllAsync(id);
        Assert.Empty(list.Blocks);
    }

    [Fact]
    public async Task Paging_clamps_maxResults_to_100_and_10000_and_honours_startingBlockIndex()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync(volumeSize: 1);
        var data = TestEndpoint.VectorBlock(9);
        await Parallel.ForEachAsync(Enumerable.Range(0, 250), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, _) => await ep.PutOkAsync(id, i * 2, data));
        await ep.CompleteAndWaitAsync(id, 250);

        var small = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?maxResults=5");
        Assert.Equal(100, small.Json.GetProperty("Blocks").GetArrayLength());
        var all = await ep.ListAllAsync(id, maxResults: 100);
        Assert.Equal(250, all.Blocks.Count);
        Assert.Equal(3, all.Pages);
        Assert.Equal(Enumerable.Range(0, 250).Select(i => i * 2), all.Blocks.Keys);
        var big = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?maxResults=20000");
        Assert.Equal(250, big.Json.GetProperty("Blocks").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, big.Json.GetProperty("NextToken").ValueKind);

        var from = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?startingBlockIndex=401&maxResults=100");
        Assert.Equal(402, from.Json.GetProperty("Blocks")[0].GetProperty("BlockIndex").GetInt32());
        Assert.Equal(49, from.Json.GetProperty("Blocks").GetArrayLength());

        // A page token wins over startingBlockIndex; a mangled or foreign one is INVALID_PAGE_TOKEN.
        var first = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?maxResults=100");
        string token = first.Json.GetProperty("NextToken").GetString()!;
        var second = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?maxResults=100&startingBlockIndex=0&pageToken={Uri.EscapeDataString(token)}");
        Assert.Equal(200, second.Json.GetProperty("Blocks")[0].GetProperty("BlockIndex").GetInt32());
        var bad = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?pageToken={Uri.EscapeDataString(token[..^4] + "AAA=")}");
        Assert.Equal(("ValidationException", "INVALID_PAGE_TOKEN"), (bad.ErrorType, bad.Reason));
        string other = await ep.StartSnapshotIdAsync();
        await ep.CompleteAndWaitAsync(other, 0);
        var foreign = await ep.SendAsync(HttpMethod.Get, $"snapshots/{other}/blocks?pageToken={Uri.EscapeDataString(token)}");
        Assert.Equal("INVALID_PAGE_TOKEN", foreign.Reason);
        // An unencoded token ('+' read as a space) is refused rather than misread.
        var raw = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks?pageToken={token}");
        Assert.Equal("INVALID_PAGE_TOKEN", raw.Reason);
    }

    [Fact]
    public async Task A_sparse_snapshot_yields_empty_pages_with_a_NextToken()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey,
            CompletionDelay = TimeSpan.FromMilliseconds(20), PageScanBlocks = 1000,
        });
        string id = await ep.StartSnapshotIdAsync(volumeSize: 8); // 16384 blocks
        var data = TestEndpoint.VectorBlock(1);
        foreach (int i in new[] { 1, 5000, 16383 }) await ep.PutOkAsync(id, i, data);
        await ep.CompleteAndWaitAsync(id, 3);
        var all = await ep.ListAllAsync(id);
        Assert.Equal([1, 5000, 16383], all.Blocks.Keys);
        Assert.True(all.EmptyPages >= 10, $"expected empty pages, got {all.EmptyPages} of {all.Pages}");
        Assert.Equal(17, all.Pages);
    }

    [Fact]
    public async Task GetSnapshotBlock_rejects_missing_foreign_and_mismatched_tokens()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 1, TestEndpoint.VectorBlock(1));
        await ep.PutOkAsync(id, 2, TestEndpoint.VectorBlock(2));
        await ep.CompleteAndWaitAsync(id, 2);
        var (blocks, _, _) = await ep.ListAllAsync(id);

        var wrongIndex = await ep.GetBlockAsync(id, 2, blocks[1]);
        Assert.Equal(("ValidationException", "INVALID_BLOCK_TOKEN"), (wrongIndex.ErrorType, wrongIndex.Reason));
        var none = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks/1");
        Assert.Equal("INVALID_BLOCK_TOKEN", none.Reason);
        var garbage = await ep.GetBlockAsync(id, 1, "AAAA");
        Assert.Equal("INVALID_BLOCK_TOKEN", garbage.Reason);
        var unencoded = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks/1?blockToken={blocks[1]}");
        Assert.Equal("INVALID_BLOCK_TOKEN", unencoded.Reason);
        Assert.Equal(HttpStatusCode.OK, (await ep.GetBlockAsync(id, 1, blocks[1])).Status);
    }

    [Fact]
    public async Task Block_tokens_expire()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey,
            CompletionDelay = TimeSpan.Zero, BlockTokenLifetime = TimeSpan.FromSeconds(1),
        });
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 1, TestEndpoint.VectorBlock(1));
        await ep.CompleteAndWaitAsync(id, 1);
        var (blocks, _, _) = await ep.ListAllAsync(id);
        await Task.Delay(2100);
        var r = await ep.GetBlockAsync(id, 1, blocks[1]);
        Assert.Equal("INVALID_BLOCK_TOKEN", r.Reason);
        Assert.Contains("expired", r.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);
    }
}
