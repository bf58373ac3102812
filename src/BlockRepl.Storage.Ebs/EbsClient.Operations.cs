using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace BlockRepl.Storage.Ebs;

public sealed partial class EbsClient
{
    private const string ChecksumHeader = "x-amz-Checksum";
    private const string ChecksumAlgorithmHeader = "x-amz-Checksum-Algorithm";
    private const string DataLengthHeader = "x-amz-Data-Length";

    public async Task<EbsSnapshotInfo> StartSnapshotAsync(StartSnapshotRequest request, CancellationToken ct = default)
    {
        var call = BuildStartSnapshot(request);
        var dto = await ExecuteAsync(call, (r, t) => ReadJsonAsync(call, r, EbsJsonContext.Default.StartSnapshotResponseDto, t), ct).ConfigureAwait(false);
        if (string.IsNullOrEmpty(dto.SnapshotId))
            throw new EbsException($"EBS StartSnapshot: the response has no SnapshotId (client token {request.ClientToken})", EbsErrorTypes.InvalidResponse, null, 201);
        NoteStarted(dto.SnapshotId);
        return new EbsSnapshotInfo(dto.SnapshotId, dto.Status ?? "pending", dto.VolumeSize ?? request.VolumeSizeGiB,
            dto.BlockSize ?? EbsLimits.BlockSize, dto.ParentSnapshotId, dto.OwnerId);
    }

    internal EbsCall BuildStartSnapshot(StartSnapshotRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.VolumeSizeGiB is < 1 or > EbsLimits.MaxVolumeSizeGiB)
            throw new ArgumentOutOfRangeException(nameof(request), request.VolumeSizeGiB, $"VolumeSizeGiB must be 1..{EbsLimits.MaxVolumeSizeGiB}");
        if (string.IsNullOrWhiteSpace(request.ClientToken))
            throw new ArgumentException("ClientToken is required (persist it so a restarted run gets the same snapshot)", nameof(request));
        if (request.TimeoutMinutes is < 10 or > 4320)
            throw new ArgumentOutOfRangeException(nameof(request), request.TimeoutMinutes, "TimeoutMinutes must be 10..4320");
        var body = new StartSnapshotBody
        {
            VolumeSize = request.VolumeSizeGiB,
            Timeout = request.TimeoutMinutes,
            ClientToken = request.ClientToken,
            ParentSnapshotId = request.ParentSnapshotId,
            Tags = request.Tags is { Count: > 0 } tags ? tags.Select(t => new TagDto { Key = t.Key, Value = t.Value }).ToList() : null,
            Description = request.Description,
            Encrypted = request.Encrypted,
            KmsKeyArn = request.KmsKeyArn,
        };
        var call = new EbsCall
        {
            Operation = "StartSnapshot",
            Method = HttpMethod.Post,
            Uri = new Uri(Url("/snapshots")),
            JsonBody = JsonSerializer.SerializeToUtf8Bytes(body, EbsJsonContext.Default.StartSnapshotBody),
            // Safe to repeat: the ClientToken makes it idempotent.
        };
        call.Headers.Add(new("Content-Type", "application/json"));
        return call;
    }

    public Task PutSnapshotBlockAsync(string snapshotId, int blockIndex, ReadOnlyMemory<byte> data, ReadOnlyMemory<byte> sha256,
        int? progressPercent = null, CancellationToken ct = default)
    {
        var call = BuildPutSnapshotBlock(snapshotId, blockIndex, data, sha256.Span, progressPercent);
        string expected = call.Headers.First(h => h.Key == ChecksumHeader).Value;
        return ExecuteAsync(call, async (response, t) =>
        {
            // The service echoes the checksum it computed; a different one means the body was damaged on the way.
            string? echoed = EbsErrors.HeaderValue(response.Headers, ChecksumHeader);
            if (echoed is not null && echoed != expected)
                throw new EbsException($"EBS {call.Describe()}: the service computed checksum {echoed}, expected {expected}",
                    EbsErrorTypes.ChecksumMismatch, null, (int)response.StatusCode);
            await DrainAsync(response, t).ConfigureAwait(false);
            return true;
        }, ct);
    }

    internal EbsCall BuildPutSnapshotBlock(string snapshotId, int blockIndex, ReadOnlyMemory<byte> data, ReadOnlySpan<byte> sha256, int? progressPercent)
    {
        ValidateSnapshotId(snapshotId);
        ArgumentOutOfRangeException.ThrowIfNegative(blockIndex);
        if (data.Length != EbsLimits.BlockSize)
            throw new ArgumentException($"a block is {EbsLimits.BlockSize} bytes (zero-pad the last one), got {data.Length}", nameof(data));
        if (sha256.Length != EbsChecksums.DigestSize)
            throw new ArgumentException($"sha256 must be the raw {EbsChecksums.DigestSize}-byte digest, got {sha256.Length} bytes", nameof(sha256));
        if (progressPercent is < 0 or > 100)
            throw new ArgumentOutOfRangeException(nameof(progressPercent), progressPercent, "progress is 0..100");
        var call = new EbsCall
        {
            Operation = "PutSnapshotBlock",
            Method = HttpMethod.Put,
            Uri = new Uri(Url($"/snapshots/{Uri.EscapeDataString(snapshotId)}/blocks/{Invariant(blockIndex)}")),
            Block = data,
            BlockSha256Hex = Convert.ToHexStringLower(sha256),
            SnapshotId = snapshotId,
            BlockIndex = blockIndex,
            Limited = true,
            NotFoundGrace = true,
        };
        call.Headers.Add(new("Content-Type", "application/octet-stream"));
        call.Headers.Add(new(DataLengthHeader, Invariant(EbsLimits.BlockSize)));
        call.Headers.Add(new(ChecksumHeader, Convert.ToBase64String(sha256)));
        call.Headers.Add(new(ChecksumAlgorithmHeader, "SHA256"));
        if (progressPercent is { } progress) call.Headers.Add(new("x-amz-Progress", Invariant(progress)));
        return call;
    }

    public async Task<string> CompleteSnapshotAsync(string snapshotId, int changedBlocksCount, ReadOnlyMemory<byte>? linearSha256 = null, CancellationToken ct = default)
    {
        var call = BuildCompleteSnapshot(snapshotId, changedBlocksCount, linearSha256);
        var dto = await ExecuteAsync(call, (r, t) => ReadJsonAsync(call, r, EbsJsonContext.Default.CompleteSnapshotResponseDto, t), ct).ConfigureAwait(false);
        return dto.Status ?? throw new EbsException($"EBS {call.Describe()}: the response has no Status", EbsErrorTypes.InvalidResponse, null, 202);
    }

    internal EbsCall BuildCompleteSnapshot(string snapshotId, int changedBlocksCount, ReadOnlyMemory<byte>? linearSha256)
    {
        ValidateSnapshotId(snapshotId);
        ArgumentOutOfRangeException.ThrowIfNegative(changedBlocksCount);
        if (linearSha256 is { Length: not EbsChecksums.DigestSize } bad)
            throw new ArgumentException($"the LINEAR checksum is the raw {EbsChecksums.DigestSize}-byte digest, got {bad.Length} bytes", nameof(linearSha256));
        var call = new EbsCall
        {
            Operation = "CompleteSnapshot",
            Method = HttpMethod.Post,
            Uri = new Uri(Url($"/snapshots/completion/{Uri.EscapeDataString(snapshotId)}")),
            SnapshotId = snapshotId,
            NotFoundGrace = true,
        };
        call.Headers.Add(new("x-amz-ChangedBlocksCount", Invariant(changedBlocksCount)));
        if (linearSha256 is { } linear)
        {
            call.Headers.Add(new(ChecksumHeader, Convert.ToBase64String(linear.Span)));
            call.Headers.Add(new(ChecksumAlgorithmHeader, "SHA256"));
            call.Headers.Add(new("x-amz-Checksum-Aggregation-Method", "LINEAR"));
        }
        return call;
    }

    public Task<EbsBlockPage> ListSnapshotBlocksAsync(string snapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default) =>
        ListSnapshotBlocksCoreAsync(snapshotId, startingBlockIndex, pageToken, maxResults, ct);

    private async Task<EbsBlockPage> ListSnapshotBlocksCoreAsync(string snapshotId, int? startingBlockIndex, string? pageToken, int? maxResults, CancellationToken ct)
    {
        var call = BuildListSnapshotBlocks(snapshotId, startingBlockIndex, pageToken, maxResults);
        var dto = await ExecuteAsync(call, (r, t) => ReadJsonAsync(call, r, EbsJsonContext.Default.ListSnapshotBlocksResponseDto, t), ct).ConfigureAwait(false);
        return ToPage(call, dto);
    }

    internal static EbsBlockPage ToPage(EbsCall call, ListSnapshotBlocksResponseDto dto)
    {
        var blocks = new List<EbsBlock>(dto.Blocks?.Count ?? 0);
        foreach (var b in dto.Blocks ?? [])
        {
            if (b?.BlockIndex is not { } index || string.IsNullOrEmpty(b.BlockToken))
                throw new EbsException($"EBS {call.Describe()}: a listed block has no BlockIndex or BlockToken", EbsErrorTypes.InvalidResponse, null, 200);
            blocks.Add(new EbsBlock(index, b.BlockToken));
        }
        return new EbsBlockPage(blocks, NullIfEmpty(dto.NextToken), dto.VolumeSize ?? 0, dto.BlockSize ?? EbsLimits.BlockSize, EbsTime.FromEpochSeconds(dto.ExpiryTime));
    }

    internal EbsCall BuildListSnapshotBlocks(string snapshotId, int? startingBlockIndex, string? pageToken, int? maxResults)
    {
        ValidateSnapshotId(snapshotId);
        return new EbsCall
        {
            Operation = "ListSnapshotBlocks",
            Method = HttpMethod.Get,
            Uri = new Uri(Url($"/snapshots/{Uri.EscapeDataString(snapshotId)}/blocks") + Query(("maxResults", maxResults?.ToString(CultureInfo.InvariantCulture)),
                ("pageToken", NullIfEmpty(pageToken)), ("startingBlockIndex", startingBlockIndex?.ToString(CultureInfo.InvariantCulture)))),
            SnapshotId = snapshotId,
        };
    }

    public async Task<EbsChangedBlockPage> ListChangedBlocksAsync(string firstSnapshotId, string secondSnapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default)
    {
        var call = BuildListChangedBlocks(firstSnapshotId, secondSnapshotId, startingBlockIndex, pageToken, maxResults);
        var dto = await ExecuteAsync(call, (r, t) => ReadJsonAsync(call, r, EbsJsonContext.Default.ListChangedBlocksResponseDto, t), ct).ConfigureAwait(false);
        return ToPage(call, dto);
    }

    internal static EbsChangedBlockPage ToPage(EbsCall call, ListChangedBlocksResponseDto dto)
    {
        var blocks = new List<EbsChangedBlock>(dto.ChangedBlocks?.Count ?? 0);
        foreach (var b in dto.ChangedBlocks ?? [])
        {
            if (b?.BlockIndex is not { } index)
                throw new EbsException($"EBS {call.Describe()}: a changed block has no BlockIndex", EbsErrorTypes.InvalidResponse, null, 200);
            blocks.Add(new EbsChangedBlock(index, NullIfEmpty(b.FirstBlockToken), NullIfEmpty(b.SecondBlockToken)));
        }
        return new EbsChangedBlockPage(blocks, NullIfEmpty(dto.NextToken), dto.VolumeSize ?? 0, dto.BlockSize ?? EbsLimits.BlockSize, EbsTime.FromEpochSeconds(dto.ExpiryTime));
    }

    internal EbsCall BuildListChangedBlocks(string firstSnapshotId, string secondSnapshotId, int? startingBlockIndex, string? pageToken, int? maxResults)
    {
        ValidateSnapshotId(firstSnapshotId);
        ValidateSnapshotId(secondSnapshotId);
        return new EbsCall
        {
            Operation = "ListChangedBlocks",
            Method = HttpMethod.Get,
            // The second (newer) snapshot is in the path, the first in the query.
            Uri = new Uri(Url($"/snapshots/{Uri.EscapeDataString(secondSnapshotId)}/changedblocks") + Query(("firstSnapshotId", firstSnapshotId),
                ("maxResults", maxResults?.ToString(CultureInfo.InvariantCulture)), ("pageToken", NullIfEmpty(pageToken)),
                ("startingBlockIndex", startingBlockIndex?.ToString(CultureInfo.InvariantCulture)))),
            SnapshotId = secondSnapshotId,
        };
    }

    public Task<int> GetSnapshotBlockAsync(string snapshotId, int blockIndex, string blockToken, Memory<byte> destination, CancellationToken ct = default)
    {
        var call = BuildGetSnapshotBlock(snapshotId, blockIndex, blockToken);
        return ExecuteAsync(call, (response, t) => ReadBlockAsync(call, response, destination, t), ct);
    }

    internal EbsCall BuildGetSnapshotBlock(string snapshotId, int blockIndex, string blockToken)
    {
        ValidateSnapshotId(snapshotId);
        ArgumentOutOfRangeException.ThrowIfNegative(blockIndex);
        ArgumentException.ThrowIfNullOrEmpty(blockToken);
        return new EbsCall
        {
            Operation = "GetSnapshotBlock",
            Method = HttpMethod.Get,
            Uri = new Uri(Url($"/snapshots/{Uri.EscapeDataString(snapshotId)}/blocks/{Invariant(blockIndex)}") + Query(("blockToken", blockToken))),
            SnapshotId = snapshotId,
            BlockIndex = blockIndex,
            Limited = true,
        };
    }

    /// <summary>
    /// Reads the body straight into <paramref name="destination"/> and checks it against x-amz-Data-Length and
    /// x-amz-Checksum; a damaged or short body is a retryable <see cref="EbsErrorTypes.ChecksumMismatch"/>.
    /// </summary>
    private static async Task<int> ReadBlockAsync(EbsCall call, HttpResponseMessage response, Memory<byte> destination, CancellationToken ct)
    {
        string? algorithm = EbsErrors.HeaderValue(response.Headers, ChecksumAlgorithmHeader);
        string? checksum = EbsErrors.HeaderValue(response.Headers, ChecksumHeader);
        string? lengthText = EbsErrors.HeaderValue(response.Headers, DataLengthHeader);
        if (!string.Equals(algorithm, "SHA256", StringComparison.OrdinalIgnoreCase))
            throw InvalidResponse(call, response, $"{ChecksumAlgorithmHeader} is '{algorithm}', expected SHA256");
        if (string.IsNullOrEmpty(checksum))
            throw InvalidResponse(call, response, $"no {ChecksumHeader} header");
        if (!int.TryParse(lengthText, NumberStyles.None, CultureInfo.InvariantCulture, out int length) || length <= 0)
            throw InvalidResponse(call, response, $"{DataLengthHeader} is '{lengthText}'");
        if (length > destination.Length)
            throw InvalidResponse(call, response, $"{DataLengthHeader} {length} exceeds the {destination.Length}-byte destination");
        if (response.Content.Headers.ContentLength is { } contentLength && contentLength != length)
            throw new EbsException($"EBS {call.Describe()}: Content-Length {contentLength} differs from {DataLengthHeader} {length}",
                EbsErrorTypes.ChecksumMismatch, null, (int)response.StatusCode);

        await using var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        int read = await stream.ReadAtLeastAsync(destination[..length], length, throwOnEndOfStream: false, ct).ConfigureAwait(false);
        if (read < length)
            throw new EbsException($"EBS {call.Describe()}: the body ended after {read} of {length} bytes",
                EbsErrorTypes.ChecksumMismatch, null, (int)response.StatusCode);
        if (response.Content.Headers.ContentLength is null && await HasMoreAsync(stream, ct).ConfigureAwait(false))
            throw new EbsException($"EBS {call.Describe()}: the body is longer than {DataLengthHeader} {length}",
                EbsErrorTypes.ChecksumMismatch, null, (int)response.StatusCode);
        if (!ChecksumMatches(destination.Span[..length], checksum))
            throw new EbsException($"EBS {call.Describe()}: the data does not match {ChecksumHeader} {checksum}",
                EbsErrorTypes.ChecksumMismatch, null, (int)response.StatusCode);
        return length;
    }

    private static async Task<bool> HasMoreAsync(Stream stream, CancellationToken ct)
    {
        byte[] probe = ArrayPool<byte>.Shared.Rent(1);
        try
        {
            return await stream.ReadAsync(probe.AsMemory(0, 1), ct).ConfigureAwait(false) > 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(probe);
        }
    }

    internal static bool ChecksumMatches(ReadOnlySpan<byte> data, string base64Sha256)
    {
        Span<byte> expected = stackalloc byte[EbsChecksums.DigestSize];
        Span<byte> actual = stackalloc byte[EbsChecksums.DigestSize];
        if (!Convert.TryFromBase64String(base64Sha256, expected, out int n) || n != EbsChecksums.DigestSize) return false;
        SHA256.HashData(data, actual);
        return CryptographicOperations.FixedTimeEquals(expected, actual);
    }

    public async Task WaitForCompletedAsync(string snapshotId, TimeSpan timeout, Action<TimeSpan>? onPoll = null, CancellationToken ct = default)
    {
        ValidateSnapshotId(snapshotId);
        long started = _time.GetTimestamp();
        using var deadline = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token);
        var delay = TimeSpan.FromMilliseconds(200);
        try
        {
            while (true)
            {
                try
                {
                    // A snapshot is listable only once completed (EBS FAQ): ResourceNotFound until then.
                    await ListSnapshotBlocksCoreAsync(snapshotId, null, null, 100, linked.Token).ConfigureAwait(false);
                    return;
                }
                catch (EbsException e) when (e.IsNotFound)
                {
                }
                onPoll?.Invoke(_time.GetElapsedTime(started));
                await Task.Delay(delay, _time, linked.Token).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
            }
        }
        catch (OperationCanceledException e) when (deadline.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new EbsException($"EBS snapshot {snapshotId} was not readable (completed) within {timeout.TotalSeconds:0.#} s; check its state with 'aws ec2 describe-snapshots --snapshot-ids {snapshotId}'",
                EbsErrorTypes.WaitTimeout, null, 0, e);
        }
    }

    private static void ValidateSnapshotId(string snapshotId, [System.Runtime.CompilerServices.CallerArgumentExpression(nameof(snapshotId))] string? name = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(snapshotId, name);
        if (snapshotId.Length > 64) throw new ArgumentException($"'{snapshotId}' is not a snapshot id (snap-…, at most 64 characters)", name);
    }

    private static string? NullIfEmpty(string? s) => string.IsNullOrEmpty(s) ? null : s;

    /// <summary>"?a=1&amp;b=…" with every value through Uri.EscapeDataString (tokens contain + / =), nulls skipped.</summary>
    internal static string Query(params ReadOnlySpan<(string Name, string? Value)> parameters)
    {
        var sb = new StringBuilder();
        foreach (var (name, value) in parameters)
        {
            if (value is null) continue;
            sb.Append(sb.Length == 0 ? '?' : '&').Append(name).Append('=').Append(Uri.EscapeDataString(value));
        }
        return sb.ToString();
    }
}
