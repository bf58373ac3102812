using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace BlockRepl.Ebs.Endpoint;

public sealed partial class EbsEndpointServer
{
    private static readonly byte[] s_emptyObject = "{}"u8.ToArray();

    // ---------------------------------------------------------------- POST /snapshots

    private async Task StartSnapshotAsync(HttpContext ctx, SnapshotStore store, byte[] body, int length)
    {
        StartSnapshotBody? b;
        try
        {
            b = length == 0 ? null : JsonSerializer.Deserialize(body.AsSpan(0, length), EndpointJson.Default.StartSnapshotBody);
        }
        catch (JsonException e)
        {
            throw EbsError.Validation($"The StartSnapshot body is not valid JSON for this operation: {e.Message}");
        }
        if (b is null) throw EbsError.Validation("StartSnapshot needs a JSON body with at least VolumeSize.");
        var (s, _) = store.Start(b);
        var m = s.Meta;
        await WriteJsonAsync(ctx, 201, w =>
        {
            w.WriteStartObject();
            w.WriteNumber("BlockSize", BlockSize);
            WriteStringOrNull(w, "Description", m.Description);
            WriteStringOrNull(w, "KmsKeyArn", m.KmsKeyArn);
            w.WriteString("OwnerId", _o.OwnerId);
            WriteStringOrNull(w, "ParentSnapshotId", m.ParentSnapshotId);
            w.WriteString("SnapshotId", m.SnapshotId);
            w.WriteString("SseType", m.KmsKeyArn is not null ? "sse-kms" : m.Encrypted ? "sse-ebs" : "none");
            w.WritePropertyName("StartTime");
            w.WriteRawValue(EpochSeconds(m.StartTime));
            w.WriteString("Status", s.PublicStatus);
            w.WritePropertyName("Tags");
            if (m.Tags is null) w.WriteNullValue();
            else
            {
                w.WriteStartArray();
                foreach (var t in m.Tags)
                {
                    w.WriteStartObject();
                    w.WriteString("Key", t.Key);
                    WriteStringOrNull(w, "Value", t.Value);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteNumber("VolumeSize", m.VolumeSize);
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    private static void WriteStringOrNull(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null) w.WriteNull(name);
        else w.WriteString(name, value);
    }

    // ---------------------------------------------------------------- PUT /snapshots/{id}/blocks/{idx}

    private async Task PutSnapshotBlockAsync(HttpContext ctx, SnapshotStore store, string id, int index, byte[] body, int length, Sha256Digest digest)
    {
        var s = store.Get(id);
        if (!s.PutBucket.TryTake())
            throw EbsError.Throttled($"The request rate for PutSnapshotBlock on {id} is over {_o.PutRatePerSnapshot} per second; retry with backoff.");
        var req = ctx.Request;
        string? dataLength = Header(req, "x-amz-Data-Length");
        if (dataLength is null) throw EbsError.Validation("x-amz-Data-Length is required.");
        if (dataLength != "524288") throw EbsError.Validation($"x-amz-Data-Length is {dataLength}; the only supported value is 524288.");
        string checksum = Header(req, "x-amz-Checksum") ?? throw EbsError.Validation("x-amz-Checksum is required (Base64 SHA-256 of the block).");
        string algorithm = Header(req, "x-amz-Checksum-Algorithm") ?? throw EbsError.Validation("x-amz-Checksum-Algorithm is required (SHA256).");
        if (algorithm != "SHA256") throw EbsError.Validation($"x-amz-Checksum-Algorithm '{algorithm}' is not supported (SHA256 only).");
        if (Header(req, "x-amz-Progress") is { } progress && (!int.TryParse(progress, NumberStyles.None, CultureInfo.InvariantCulture, out int p) || p > 100))
            throw EbsError.Validation($"x-amz-Progress '{progress}' is not an integer in 0..100.");
        if (length != BlockSize)
            throw EbsError.Validation($"Failed to read block data: the body is {length} bytes but x-amz-Data-Length is {BlockSize}.");
        string actual = digest.ToBase64();
        if (actual != checksum)
            throw EbsError.Validation($"The x-amz-Checksum {checksum} does not match the SHA-256 of the block data ({actual}).");
        await store.PutAsync(s, index, body.AsMemory(0, length), digest, CancellationToken.None).ConfigureAwait(false);
        Interlocked.Add(ref _bytesWritten, length);
        ctx.Response.StatusCode = 201;
        ctx.Response.Headers["x-amz-Checksum"] = checksum;
        ctx.Response.Headers["x-amz-Checksum-Algorithm"] = "SHA256";
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = 2;
        await ctx.Response.Body.WriteAsync(s_emptyObject).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- POST /snapshots/completion/{id}

    private static async Task CompleteSnapshotAsync(HttpContext ctx, SnapshotStore store, string id)
    {
        var s = store.Get(id);
        var req = ctx.Request;
        string count = Header(req, "x-amz-ChangedBlocksCount") ?? throw EbsError.Validation("x-amz-ChangedBlocksCount is required.");
        if (!int.TryParse(count, NumberStyles.None, CultureInfo.InvariantCulture, out int n))
            throw EbsError.Validation($"x-amz-ChangedBlocksCount '{count}' is not a non-negative integer.");
        string status = await store.CompleteAsync(s, n, Header(req, "x-amz-Checksum"), Header(req, "x-amz-Checksum-Algorithm"), Header(req, "x-amz-Checksum-Aggregation-Method")).ConfigureAwait(false);
        await WriteJsonAsync(ctx, 202, w =>
        {
            w.WriteStartObject();
            w.WriteString("Status", status);
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- paging

    private (int Start, int MaxResults) PageParameters(HttpRequest req, TokenCodec.Kind kind, string snapshotId, string? otherId)
    {
        int max = 100;
        if (Query(req, "maxResults") is { } m)
        {
            if (!int.TryParse(m, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out max))
                throw EbsError.Validation($"maxResults '{m}' is not an integer.");
            max = Math.Clamp(max, 100, 10000); // "the API will return at least 100 results" (ref/ebs.md §7)
        }
        if (Query(req, "pageToken") is { } token)
        {
            if (!_tokens!.TryRead(token, kind, snapshotId, otherId, DateTimeOffset.UtcNow, out int next, out bool expired))
                throw EbsError.Validation(expired ? "The page token has expired; list again from startingBlockIndex." : "The page token is not valid for this snapshot and operation.", "INVALID_PAGE_TOKEN");
            return (next, max);
        }
        int start = 0;
        if (Query(req, "startingBlockIndex") is { } st && !int.TryParse(st, NumberStyles.None, CultureInfo.InvariantCulture, out start))
            throw EbsError.Validation($"startingBlockIndex '{st}' is not a non-negative integer.");
        return (start, max);
    }

    private static string? Query(HttpRequest req, string name)
    {
        var v = req.Query[name];
        return v.Count == 0 ? null : v[0];
    }

    // ---------------------------------------------------------------- GET /snapshots/{id}/blocks

    private async Task ListSnapshotBlocksAsync(HttpContext ctx, SnapshotStore store, string id)
    {
        var s = SnapshotStore.Readable(store.Get(id));
        var (start, max) = PageParameters(ctx.Request, TokenCodec.Kind.ListPage, s.Id, null);
        var map = s.Effective();
        long windowEnd = Math.Min((long)start + _o.PageScanBlocks, s.VolumeBlocks);
        var now = DateTimeOffset.UtcNow;
        var expiry = now + _o.BlockTokenLifetime;
        var blocks = new List<(int Index, string Token)>();
        int pos = map.LowerBound(start);
        while (pos < map.Indices.Length && map.Indices[pos] < windowEnd && blocks.Count < max)
        {
            int i = map.Indices[pos++];
            blocks.Add((i, _tokens!.Create(TokenCodec.Kind.Block, s.Id, null, i, expiry)));
        }
        long nextStart = blocks.Count == max ? (long)blocks[^1].Index + 1 : windowEnd;
        bool more = pos < map.Indices.Length && map.Indices[pos] < s.VolumeBlocks && nextStart < s.VolumeBlocks;
        string? next = more ? _tokens!.Create(TokenCodec.Kind.ListPage, s.Id, null, (int)nextStart, now + _o.PageTokenLifetime) : null;
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteNumber("BlockSize", BlockSize);
            w.WriteStartArray("Blocks");
            foreach (var (index, token) in blocks)
            {
                w.WriteStartObject();
                w.WriteNumber("BlockIndex", index);
                w.WriteString("BlockToken", token);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WritePropertyName("ExpiryTime");
            w.WriteRawValue(EpochSeconds(expiry));
            WriteStringOrNull(w, "NextToken", next);
            w.WriteNumber("VolumeSize", s.Meta.VolumeSize);
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- GET /snapshots/{id}/changedblocks

    private async Task ListChangedBlocksAsync(HttpContext ctx, SnapshotStore store, string id)
    {
        var second = SnapshotStore.Readable(store.Get(id));
        string firstId = Query(ctx.Request, "firstSnapshotId")
            ?? throw EbsError.Validation("firstSnapshotId is required: ListChangedBlocks compares two snapshots of one lineage.");
        var first = SnapshotStore.Readable(store.Get(firstId));
        if (first.Root() != second.Root())
            throw EbsError.Validation($"{first.Id} and {second.Id} are not related", "UNRELATED_SNAPSHOTS");
        var (start, max) = PageParameters(ctx.Request, TokenCodec.Kind.ChangedPage, second.Id, first.Id);
        var a = first.Effective();
        var b = second.Effective();
        long volumeBlocks = Math.Max(first.VolumeBlocks, second.VolumeBlocks);
        long windowEnd = Math.Min((long)start + _o.PageScanBlocks, volumeBlocks);
        var now = DateTimeOffset.UtcNow;
        var expiry = now + _o.BlockTokenLifetime;
        var changes = new List<(int Index, string? FirstToken, string? SecondToken)>();
        int i = a.LowerBound(start), j = b.LowerBound(start);
        while (changes.Count < max)
        {
            int ai = i < a.Indices.Length ? a.Indices[i] : int.MaxValue;
            int bj = j < b.Indices.Length ? b.Indices[j] : int.MaxValue;
            int index = Math.Min(ai, bj);
            if (index == int.MaxValue || index >= windowEnd) break;
            Snapshot? fa = ai == index ? a.Sources[i++] : null;
            Snapshot? sb = bj == index ? b.Sources[j++] : null;
            if (fa == sb) continue; // both read the same write: unchanged
            changes.Add((index,
                fa is null ? null : _tokens!.Create(TokenCodec.Kind.Block, first.Id, null, index, expiry),
                sb is null ? null : _tokens!.Create(TokenCodec.Kind.Block, second.Id, null, index, expiry)));
        }
        long nextStart = changes.Count == max ? (long)changes[^1].Index + 1 : windowEnd;
        bool more = nextStart < volumeBlocks && ((i < a.Indices.Length && a.Indices[i] >= nextStart) || (j < b.Indices.Length && b.Indices[j] >= nextStart));
        string? next = more ? _tokens!.Create(TokenCodec.Kind.ChangedPage, second.Id, first.Id, (int)nextStart, now + _o.PageTokenLifetime) : null;
        await WriteJsonAsync(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteNumber("BlockSize", BlockSize);
            w.WriteStartArray("ChangedBlocks");
            foreach (var (index, ft, st) in changes)
            {
                w.WriteStartObject();
                w.WriteNumber("BlockIndex", index);
                if (ft is not null) w.WriteString("FirstBlockToken", ft);
                if (st is not null) w.WriteString("SecondBlockToken", st);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WritePropertyName("ExpiryTime");
            w.WriteRawValue(EpochSeconds(expiry));
            WriteStringOrNull(w, "NextToken", next);
            w.WriteNumber("VolumeSize", second.Meta.VolumeSize);
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    // ---------------------------------------------------------------- GET /snapshots/{id}/blocks/{idx}

    private async Task GetSnapshotBlockAsync(HttpContext ctx, SnapshotStore store, string id, int index)
    {
        var s = SnapshotStore.Readable(store.Get(id));
        if (!s.GetBucket.TryTake())
            throw EbsError.Throttled($"The request rate for GetSnapshotBlock on {id} is over {_o.GetRatePerSnapshot} per second; retry with backoff.");
        string token = Query(ctx.Request, "blockToken") ?? throw EbsError.Validation("blockToken is required (from ListSnapshotBlocks or ListChangedBlocks).", "INVALID_BLOCK_TOKEN");
        if (!_tokens!.TryRead(token, TokenCodec.Kind.Block, s.Id, null, DateTimeOffset.UtcNow, out int tokenIndex, out bool expired) || tokenIndex != index)
        {
            throw EbsError.Validation(expired
                ? $"The block token for block {index} of {s.Id} has expired; list the blocks again."
                : $"The block token is not valid for block {index} of {s.Id} (was it percent-encoded? '+', '/' and '=' must be).", "INVALID_BLOCK_TOKEN");
        }
        await WriteBlockAsync(ctx, store, s, index).ConfigureAwait(false);
    }

    /// <summary>Answers one block as a volume created from <paramref name="s"/> would read it (data, zeros, or noise when encrypted).</summary>
    private async Task WriteBlockAsync(HttpContext ctx, SnapshotStore store, Snapshot s, int index)
    {
        byte[] buf = BodyPool.Shared.Rent(BlockSize);
        try
        {
            var source = s.Effective().SourceOf(index);
            var digest = default(Sha256Digest);
            if (source is not null)
            {
                await source.Blocks.ReadAsync(index, buf, ctx.RequestAborted).ConfigureAwait(false);
                lock (source.Gate) digest = source.Own[index];
            }
            else
            {
                store.FillUnwritten(s, index, buf.AsSpan(0, BlockSize));
                SHA256.HashData(buf.AsSpan(0, BlockSize), digest);
            }
            var resp = ctx.Response;
            resp.StatusCode = 200;
            resp.ContentType = "application/octet-stream";
            resp.ContentLength = BlockSize;
            resp.Headers["x-amz-Data-Length"] = "524288";
            resp.Headers["x-amz-Checksum"] = digest.ToBase64();
            resp.Headers["x-amz-Checksum-Algorithm"] = "SHA256";
            await resp.Body.WriteAsync(buf.AsMemory(0, BlockSize), ctx.RequestAborted).ConfigureAwait(false);
            Interlocked.Add(ref _bytesRead, BlockSize);
        }
        finally
        {
            BodyPool.Shared.Return(buf);
        }
    }

    // ---------------------------------------------------------------- /_blockrepl/ (not AWS)

    private async Task HandleInternalAsync(HttpContext ctx, string path)
    {
        try
        {
            var store = _store ?? throw EbsError.Internal("the endpoint is stopping");
            string[] seg = path.Trim('/').Split('/');
            if (ctx.Request.Method != "GET") throw EbsError.UnknownOperation(ctx.Request.Method, path);
            switch (seg.Length)
            {
                case 2 when seg[1] == "health":
                    await WriteJsonAsync(ctx, 200, w => { w.WriteStartObject(); w.WriteString("Status", "ok"); w.WriteEndObject(); }).ConfigureAwait(false);
                    return;
                case 2 when seg[1] == "stats":
                    await WriteBytesAsync(ctx, JsonSerializer.SerializeToUtf8Bytes(GetStats(), EndpointJson.Default.EbsEndpointStats)).ConfigureAwait(false);
                    return;
                case 3 when seg[1] == "snapshots":
                {
                    var s = store.Find(seg[2]) ?? throw EbsError.NotFound(seg[2]);
                    int written;
                    lock (s.Gate) written = s.Own.Count;
                    var d = new SnapshotDescription
                    {
                        SnapshotId = s.Id,
                        Status = s.PublicStatus,
                        VolumeSize = s.Meta.VolumeSize,
                        ParentSnapshotId = s.Meta.ParentSnapshotId,
                        Encrypted = s.Meta.Encrypted,
                        KmsKeyArn = s.Meta.KmsKeyArn,
                        Description = s.Meta.Description,
                        StartTime = s.Meta.StartTime,
                        CompletedTime = s.Meta.CompletedTime,
                        BlocksWritten = written,
                        ErrorMessage = s.Meta.ErrorMessage,
                    };
                    await WriteBytesAsync(ctx, JsonSerializer.SerializeToUtf8Bytes(d, EndpointJson.Default.SnapshotDescription)).ConfigureAwait(false);
                    return;
                }
                case 5 when seg[1] == "snapshots" && seg[3] == "volume":
                {
                    var s = SnapshotStore.Readable(store.Find(seg[2]) ?? throw EbsError.NotFound(seg[2]));
                    int index = ParseIndex(seg[4]);
                    if (index >= s.VolumeBlocks) throw EbsError.Validation($"Block index {index} is beyond the end of the volume.", "INVALID_BLOCK");
                    await WriteBlockAsync(ctx, store, s, index).ConfigureAwait(false);
                    return;
                }
                default:
                    throw EbsError.UnknownOperation(ctx.Request.Method, path);
            }
        }
        catch (EbsError e)
        {
            await WriteErrorAsync(ctx, e).ConfigureAwait(false);
        }
    }

    private static async Task WriteBytesAsync(HttpContext ctx, byte[] json)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = json.Length;
        await ctx.Response.Body.WriteAsync(json).ConfigureAwait(false);
    }
}
