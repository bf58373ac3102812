using System.Net;
using System.Security.Cryptography;

namespace BlockRepl.Ebs.Endpoint.Tests;

/// <summary>Lineage, idempotency, limits, faults, timeouts, encryption and persistence (ref/ebs.md §1.1, §6, §11, §15).</summary>
public class EndpointSemanticsTests
{
    private const int Block = TestEndpoint.Block;

    [Fact]
    public async Task A_child_inherits_parent_blocks_and_ListChangedBlocks_reports_only_its_writes()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string parent = await ep.StartSnapshotIdAsync(volumeSize: 1);
        foreach (int i in new[] { 0, 1, 2, 10 }) await ep.PutOkAsync(parent, i, TestEndpoint.VectorBlock(100 + i));
        await ep.CompleteAndWaitAsync(parent, 4);

        // Reading a pending child is refused, and a pending snapshot cannot be a parent.
        string child = await ep.StartSnapshotIdAsync(volumeSize: 2, parent: parent);
        var pendingParent = await ep.StartSnapshotAsync($$"""{"VolumeSize":2,"ParentSnapshotId":"{{child}}"}""");
        Assert.Equal(HttpStatusCode.BadRequest, pendingParent.Status);
        await ep.PutOkAsync(child, 1, new byte[Block]);              // changed to zeros: must be written
        await ep.PutOkAsync(child, 3000, TestEndpoint.VectorBlock(7)); // beyond the parent's 1 GiB
        await ep.CompleteAndWaitAsync(child, 2, TestEndpoint.Linear([new byte[Block], TestEndpoint.VectorBlock(7)]));

        var (blocks, _, _) = await ep.ListAllAsync(child);
        Assert.Equal([0, 1, 2, 10, 3000], blocks.Keys);
        Assert.Equal(TestEndpoint.VectorBlock(100), (await ep.GetBlockAsync(child, 0, blocks[0])).Body);
        Assert.Equal(new byte[Block], (await ep.GetBlockAsync(child, 1, blocks[1])).Body);

        var changed = await ep.SendAsync(HttpMethod.Get, $"snapshots/{child}/changedblocks?firstSnapshotId={parent}&maxResults=100");
        Assert.Equal(HttpStatusCode.OK, changed.Status);
        var list = changed.Json.GetProperty("ChangedBlocks").EnumerateArray().ToList();
        Assert.Equal([1, 3000], list.Select(b => b.GetProperty("BlockIndex").GetInt32()));
        Assert.True(list[0].TryGetProperty("FirstBlockToken", out var ft) && list[0].TryGetProperty("SecondBlockToken", out _));
        Assert.False(list[1].TryGetProperty("FirstBlockToken", out _));
        Assert.Equal(2, changed.Json.GetProperty("VolumeSize").GetInt64());
        // The FirstBlockToken reads the parent's version from the parent.
        Assert.Equal(TestEndpoint.VectorBlock(101), (await ep.GetBlockAsync(parent, 1, ft.GetString()!)).Body);

        // Reversed order: the same indices, tokens swapped.
        var reversed = await ep.SendAsync(HttpMethod.Get, $"snapshots/{parent}/changedblocks?firstSnapshotId={child}");
        Assert.Equal([1, 3000], reversed.Json.GetProperty("ChangedBlocks").EnumerateArray().Select(b => b.GetProperty("BlockIndex").GetInt32()));

        // Grandchild of the same lineage vs. the root: related; an independent snapshot: not.
        string grandchild = await ep.StartSnapshotIdAsync(volumeSize: 2, parent: child);
        await ep.PutOkAsync(grandchild, 2, TestEndpoint.VectorBlock(55));
        await ep.CompleteAndWaitAsync(grandchild, 1);
        var (g, _, _) = await ep.ListAllAsync(grandchild, changedFrom: parent);
        Assert.Equal([1, 2, 3000], g.Keys);
        string loner = await ep.StartSnapshotIdAsync(volumeSize: 2);
        await ep.CompleteAndWaitAsync(loner, 0);
        var unrelated = await ep.SendAsync(HttpMethod.Get, $"snapshots/{grandchild}/changedblocks?firstSnapshotId={loner}");
        Assert.Equal((HttpStatusCode.BadRequest, "ValidationException", "UNRELATED_SNAPSHOTS"), (unrelated.Status, unrelated.ErrorType, unrelated.Reason));
        Assert.Contains("not related", unrelated.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);
        var noFirst = await ep.SendAsync(HttpMethod.Get, $"snapshots/{grandchild}/changedblocks");
        Assert.Equal("ValidationException", noFirst.ErrorType);

        // A child may not be smaller than its parent.
        var smaller = await ep.StartSnapshotAsync($$"""{"VolumeSize":1,"ParentSnapshotId":"{{child}}"}""");
        Assert.Equal(("ValidationException", "INVALID_VOLUME_SIZE"), (smaller.ErrorType, smaller.Reason));
        var unknownParent = await ep.StartSnapshotAsync("""{"VolumeSize":1,"ParentSnapshotId":"snap-0000000000000000f"}""");
        Assert.Equal("ResourceNotFoundException", unknownParent.ErrorType);
    }

    [Fact]
    public async Task ClientToken_returns_the_same_snapshot_for_the_same_parameters_and_409_for_different_ones()
    {
        await using var ep = await TestEndpoint.StartAsync();
        const string body = """{"VolumeSize":4,"ClientToken":"550e8400-e29b-41d4-a716-446655440000","Description":"x"}""";
        var a = await ep.StartSnapshotAsync(body);
        var b = await ep.StartSnapshotAsync(body);
        Assert.Equal(HttpStatusCode.Created, b.Status);
        Assert.Equal(a.Json.GetProperty("SnapshotId").GetString(), b.Json.GetProperty("SnapshotId").GetString());
        var c = await ep.StartSnapshotAsync("""{"VolumeSize":5,"ClientToken":"550e8400-e29b-41d4-a716-446655440000","Description":"x"}""");
        Assert.Equal((HttpStatusCode.Conflict, "ConflictException"), (c.Status, c.ErrorType));
        var d = await ep.StartSnapshotAsync("""{"VolumeSize":4,"ClientToken":"other","Description":"x"}""");
        Assert.NotEqual(a.Json.GetProperty("SnapshotId").GetString(), d.Json.GetProperty("SnapshotId").GetString());

        // Idempotency survives a restart (a daemon that restarts persists its token).
        await ep.RestartAsync();
        var e = await ep.StartSnapshotAsync(body);
        Assert.Equal(a.Json.GetProperty("SnapshotId").GetString(), e.Json.GetProperty("SnapshotId").GetString());
    }

    [Fact]
    public async Task Puts_over_the_per_snapshot_rate_get_RequestThrottledException_400()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, PutRatePerSnapshot = 5, Durable = false,
        });
        string id = await ep.StartSnapshotIdAsync();
        var data = TestEndpoint.VectorBlock(3);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(i => ep.PutBlockAsync(id, i, data)));
        sw.Stop();
        var throttled = results.Where(r => r.ErrorType == "RequestThrottledException").ToList();
        // A burst of 5, then 5 per second: what got through is bounded by the time the 20 requests took
        // (generous on a loaded machine), and on any sane machine most of them were refused.
        Assert.InRange(20 - throttled.Count, 1, 5 + (int)Math.Ceiling(sw.Elapsed.TotalSeconds * 5) + 1);
        if (sw.Elapsed < TimeSpan.FromSeconds(2)) Assert.True(throttled.Count >= 5, $"{throttled.Count} throttled in {sw.Elapsed}");
        Assert.All(throttled, r => Assert.Equal(HttpStatusCode.BadRequest, r.Status));
        Assert.All(throttled, r => Assert.Equal("RESOURCE_LEVEL_THROTTLE", r.Reason));
        var stats = ep.Server.GetStats().Operations["PutSnapshotBlock"];
        Assert.Equal((20, throttled.Count, 20 - throttled.Count), (stats.Requests, stats.Throttled, stats.Succeeded));
        // The bucket refills: a second later a put succeeds again.
        await Task.Delay(1100);
        Assert.Equal(HttpStatusCode.Created, (await ep.PutBlockAsync(id, 100, data)).Status);
    }

    [Fact]
    public async Task Gets_over_the_per_snapshot_rate_are_throttled_too()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, GetRatePerSnapshot = 3, CompletionDelay = TimeSpan.Zero,
        });
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        await ep.CompleteAndWaitAsync(id, 1);
        var (blocks, _, _) = await ep.ListAllAsync(id);
        var results = await Task.WhenAll(Enumerable.Range(0, 40).Select(_ => ep.GetBlockAsync(id, 0, blocks[0])));
        Assert.Contains(results, r => r.Status == HttpStatusCode.OK);
        Assert.Contains(results, r => r.ErrorType == "RequestThrottledException" && r.Status == HttpStatusCode.BadRequest);
        Assert.Equal(results.Count(r => r.ErrorType == "RequestThrottledException"), ep.Server.GetStats().Operations["GetSnapshotBlock"].Throttled);
    }

    [Fact]
    public async Task An_idle_snapshot_times_out_into_the_error_state()
    {
        // 1 "minute" = 200 ms, so Timeout 10 expires after 2 s without puts.
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, MinuteLength = TimeSpan.FromMilliseconds(200),
        });
        string id = await ep.StartSnapshotIdAsync(extra: "\"Timeout\":10");
        for (int i = 0; i < 4; i++)
        {
            await Task.Delay(700); // puts keep it alive past the 2 s timeout
            await ep.PutOkAsync(id, i, TestEndpoint.VectorBlock(i));
        }
        Assert.Equal("pending", await ep.DescribeStatusAsync(id));
        await ep.WaitStatusAsync(id, "error", seconds: 15);
        var put = await ep.PutBlockAsync(id, 9, TestEndpoint.VectorBlock(9));
        Assert.Equal(("ValidationException", "WRITE_REQUEST_TIMEOUT"), (put.ErrorType, put.Reason));
        var complete = await ep.CompleteAsync(id, 4);
        Assert.Equal("error", complete.Json.GetProperty("Status").GetString());
        var list = await ep.SendAsync(HttpMethod.Get, $"snapshots/{id}/blocks");
        Assert.Equal("ResourceNotFoundException", list.ErrorType);
        await ep.RestartAsync();
        Assert.Equal("error", await ep.DescribeStatusAsync(id));
    }

    [Fact]
    public async Task Encrypted_snapshots_read_unwritten_blocks_as_deterministic_noise_and_plain_ones_as_zeros()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string enc = await ep.StartSnapshotIdAsync(extra: "\"Encrypted\":true");
        string kms = await ep.StartSnapshotIdAsync(extra: "\"KmsKeyArn\":\"arn:aws:kms:us-east-1:123456789012:key/abcd\"");
        string plain = await ep.StartSnapshotIdAsync();
        foreach (string id in new[] { enc, kms, plain })
        {
            await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
            await ep.CompleteAndWaitAsync(id, 1);
        }
        var start = await ep.StartSnapshotAsync("""{"VolumeSize":1,"KmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/abcd","ClientToken":"k"}""");
        Assert.Equal("sse-kms", start.Json.GetProperty("SseType").GetString());

        async Task<byte[]> Volume(string id, int index)
        {
            var r = await ep.SendAsync(HttpMethod.Get, $"_blockrepl/snapshots/{id}/volume/{index}", sign: false);
            Assert.Equal(HttpStatusCode.OK, r.Status);
            Assert.Equal(Convert.ToBase64String(SHA256.HashData(r.Body)), r.Header("x-amz-Checksum"));
            return r.Body;
        }

        Assert.Equal(TestEndpoint.VectorBlock(0), await Volume(enc, 0));
        byte[] noise = await Volume(enc, 7);
        Assert.Equal(Block, noise.Length);
        Assert.True(noise.Count(b => b == 0) < Block / 100, "unwritten encrypted block must not read as zeros");
        Assert.Equal(noise, await Volume(enc, 7));              // deterministic
        Assert.NotEqual(noise, await Volume(enc, 8));           // per block
        Assert.NotEqual(noise, await Volume(kms, 7));           // per snapshot
        Assert.Equal(new byte[Block], await Volume(plain, 7));

        // A child of an encrypted parent is encrypted too, and inherits the parent's data.
        string child = await ep.StartSnapshotIdAsync(parent: enc);
        await ep.CompleteAndWaitAsync(child, 0);
        Assert.Equal(TestEndpoint.VectorBlock(0), await Volume(child, 0));
        Assert.True((await Volume(child, 9)).Count(b => b == 0) < Block / 100);
        var describe = await ep.SendAsync(HttpMethod.Get, $"_blockrepl/snapshots/{child}", sign: false);
        Assert.True(describe.Json.GetProperty("Encrypted").GetBoolean());

        // Noise is stable across a restart (it derives from the persisted endpoint key).
        await ep.RestartAsync();
        Assert.Equal(noise, await Volume(enc, 7));
    }

    [Fact]
    public async Task Snapshots_blocks_and_states_survive_a_restart()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string done = await ep.StartSnapshotIdAsync();
        var blocks = Enumerable.Range(0, 6).ToDictionary(i => i * 7, i => TestEndpoint.VectorBlock(200 + i));
        foreach (var (i, d) in blocks) await ep.PutOkAsync(done, i, d);
        await ep.CompleteAndWaitAsync(done, blocks.Count, TestEndpoint.Linear(blocks.OrderBy(kv => kv.Key).Select(kv => kv.Value)));
        string pending = await ep.StartSnapshotIdAsync(parent: done);
        await ep.PutOkAsync(pending, 1, TestEndpoint.VectorBlock(1));

        await ep.RestartAsync();

        var (listed, _, _) = await ep.ListAllAsync(done);
        Assert.Equal(blocks.Keys.Order(), listed.Keys);
        foreach (var (i, token) in listed) Assert.Equal(blocks[i], (await ep.GetBlockAsync(done, i, token)).Body);
        // The pending child resumes: one more put, then its count and LINEAR checksum cover both writes.
        Assert.Equal("pending", await ep.DescribeStatusAsync(pending));
        await ep.PutOkAsync(pending, 2, TestEndpoint.VectorBlock(2));
        await ep.CompleteAndWaitAsync(pending, 2, TestEndpoint.Linear([TestEndpoint.VectorBlock(1), TestEndpoint.VectorBlock(2)]));
        var (child, _, _) = await ep.ListAllAsync(pending);
        Assert.Equal(blocks.Keys.Append(1).Append(2).Order(), child.Keys);
    }

    [Fact]
    public async Task A_snapshot_completing_when_the_endpoint_stops_is_completed_after_the_restart()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, CompletionDelay = TimeSpan.FromHours(1),
        });
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        Assert.Equal(HttpStatusCode.Accepted, (await ep.CompleteAsync(id, 1)).Status);
        Assert.Equal("pending", await ep.DescribeStatusAsync(id));
        Assert.Equal("ValidationException", (await ep.PutBlockAsync(id, 1, TestEndpoint.VectorBlock(1))).ErrorType);
        await ep.RestartAsync();
        await ep.WaitStatusAsync(id, "completed");
    }

    [Fact]
    public async Task A_torn_log_tail_is_cut_off_on_restart()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        await ep.PutOkAsync(id, 1, TestEndpoint.VectorBlock(1));
        await ep.Server.StopAsync();
        string log = Path.Combine(ep.Dir.Path, "snapshots", id, "blocks.log");
        Assert.Equal(80, new FileInfo(log).Length);
        await using (var f = new FileStream(log, FileMode.Append)) f.Write(new byte[17]); // a record torn mid-append
        await ep.RestartAsync();
        Assert.Equal(80, new FileInfo(log).Length);
        await ep.CompleteAndWaitAsync(id, 2);
    }

    [Fact]
    public async Task A_pending_block_whose_data_no_longer_matches_its_digest_is_forgotten_on_restart()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync();
        await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        await ep.PutOkAsync(id, 1, TestEndpoint.VectorBlock(1));
        await ep.Server.StopAsync();
        // What a crash in the middle of an un-acknowledged overwrite of block 1 leaves behind.
        await using (var f = new FileStream(Path.Combine(ep.Dir.Path, "snapshots", id, "blocks.dat"), FileMode.Open))
        {
            f.Position = Block + 4096;
            f.Write(new byte[4096]);
        }
        await ep.RestartAsync();
        Assert.Equal(HttpStatusCode.BadRequest, (await ep.CompleteAsync(id, 2)).Status);
        await ep.PutOkAsync(id, 1, TestEndpoint.VectorBlock(1));
        await ep.CompleteAndWaitAsync(id, 2, TestEndpoint.Linear([TestEndpoint.VectorBlock(0), TestEndpoint.VectorBlock(1)]));
    }

    [Fact]
    public async Task A_second_endpoint_on_the_same_data_directory_is_refused()
    {
        await using var ep = await TestEndpoint.StartAsync();
        var second = new EbsEndpointServer(TestEndpoint.Defaults(ep.Dir.Path));
        var e = await Assert.ThrowsAsync<IOException>(() => second.StartAsync());
        Assert.Contains("in use", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task More_than_MaxPendingSnapshots_gives_ServiceQuotaExceededException_402()
    {
        await using var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, MaxPendingSnapshots = 2, CompletionDelay = TimeSpan.Zero,
        });
        string a = await ep.StartSnapshotIdAsync();
        await ep.StartSnapshotIdAsync();
        var third = await ep.StartSnapshotAsync("""{"VolumeSize":1}""");
        Assert.Equal(((HttpStatusCode)402, "ServiceQuotaExceededException"), (third.Status, third.ErrorType));
        await ep.CompleteAndWaitAsync(a, 0);
        Assert.Equal(HttpStatusCode.Created, (await ep.StartSnapshotAsync("""{"VolumeSize":1}""")).Status);
    }

    [Fact]
    public async Task Injected_faults_not_found_after_start_and_internal_errors()
    {
        await using (var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, NotFoundAfterStart = TimeSpan.FromSeconds(3),
        }))
        {
            string id = await ep.StartSnapshotIdAsync();
            var early = await ep.PutBlockAsync(id, 0, TestEndpoint.VectorBlock(0));
            Assert.Equal((HttpStatusCode.NotFound, "ResourceNotFoundException"), (early.Status, early.ErrorType));
            Assert.Contains("does not exist", early.Json.GetProperty("Message").GetString(), StringComparison.Ordinal);
            await Task.Delay(3100);
            await ep.PutOkAsync(id, 0, TestEndpoint.VectorBlock(0));
        }
        await using (var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, InternalErrorRate = 0.5, FaultSeed = 42,
        }))
        {
            var results = new List<TestEndpoint.Response>();
            for (int i = 0; i < 40; i++) results.Add(await ep.StartSnapshotAsync("""{"VolumeSize":1}"""));
            int failed = results.Count(r => r.Status == HttpStatusCode.InternalServerError);
            Assert.InRange(failed, 8, 32);
            Assert.All(results.Where(r => r.Status == HttpStatusCode.InternalServerError), r => Assert.Equal("InternalServerException", r.ErrorType));
            Assert.Equal(failed, ep.Server.GetStats().Operations["StartSnapshot"].ServerErrors);
        }
    }

    [Fact]
    public async Task Injected_resets_and_hangs_reach_the_client_as_transport_failures()
    {
        await using (var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, ResetRate = 1,
        }))
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => ep.StartSnapshotAsync("""{"VolumeSize":1}"""));
            Assert.Equal(1, ep.Server.GetStats().Operations["StartSnapshot"].ServerErrors);
        }
        await using (var ep = await TestEndpoint.StartAsync(d => new EbsEndpointOptions
        {
            DataDirectory = d, AccessKeyId = TestEndpoint.AccessKey, SecretAccessKey = TestEndpoint.SecretKey, HangRate = 1,
        }))
        {
            var hung = ep.StartSnapshotAsync("""{"VolumeSize":1}""");
            await Assert.ThrowsAsync<TimeoutException>(() => hung.WaitAsync(TimeSpan.FromSeconds(1)));
            // Stopping releases requests that would otherwise hang forever.
            var sw = System.Diagnostics.Stopwatch.StartNew();
            await ep.Server.StopAsync();
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(4), $"stop took {sw.Elapsed}");
            await Assert.ThrowsAnyAsync<Exception>(() => hung);
        }
    }

    [Fact]
    public async Task Stats_route_counts_requests_per_operation()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync();
        for (int i = 0; i < 3; i++) await ep.PutOkAsync(id, i, TestEndpoint.VectorBlock(i));
        await ep.PutBlockAsync(id, 5000, TestEndpoint.VectorBlock(1));
        var r = await ep.SendAsync(HttpMethod.Get, "_blockrepl/stats", sign: false);
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var put = r.Json.GetProperty("Operations").GetProperty("PutSnapshotBlock");
        Assert.Equal(4, put.GetProperty("Requests").GetInt64());
        Assert.Equal(3, put.GetProperty("Succeeded").GetInt64());
        Assert.Equal(1, put.GetProperty("ClientErrors").GetInt64());
        Assert.Equal(3L * Block, r.Json.GetProperty("BytesWritten").GetInt64());
        Assert.Equal(1, r.Json.GetProperty("Snapshots").GetProperty("pending").GetInt32());
    }

    [Fact]
    public async Task Sixty_four_concurrent_puts_all_land_and_complete()
    {
        await using var ep = await TestEndpoint.StartAsync();
        string id = await ep.StartSnapshotIdAsync(volumeSize: 1);
        var blocks = Enumerable.Range(0, 256).Select(i => TestEndpoint.VectorBlock(1000 + i)).ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, 256), new ParallelOptions { MaxDegreeOfParallelism = 64 }, async (i, _) => await ep.PutOkAsync(id, i, blocks[i]));
        sw.Stop();
        await ep.CompleteAndWaitAsync(id, 256, TestEndpoint.Linear(blocks));
        var (listed, _, _) = await ep.ListAllAsync(id, maxResults: 1000);
        Assert.Equal(256, listed.Count);
        Assert.Equal(blocks[200], (await ep.GetBlockAsync(id, 200, listed[200])).Body);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"256 puts took {sw.Elapsed}");
    }
}
