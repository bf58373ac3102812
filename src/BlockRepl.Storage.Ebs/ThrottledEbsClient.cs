namespace BlockRepl.Storage.Ebs;

/// <summary>
/// Paces the block bodies sent by PutSnapshotBlock through an <see cref="IByteRateLimiter"/> shared with the
/// rest of the process; every other call passes through. Disposing disposes the inner client.
/// </summary>
public sealed class ThrottledEbsClient(IEbsClient inner, IByteRateLimiter limiter) : IEbsClient
{
    private readonly IEbsClient _inner = inner ?? throw new ArgumentNullException(nameof(inner));
    private readonly IByteRateLimiter _limiter = limiter ?? throw new ArgumentNullException(nameof(limiter));

    public IEbsClient Inner => _inner;
    public Uri Endpoint => _inner.Endpoint;
    public string Region => _inner.Region;
    public EbsClientStats Stats => _inner.Stats;

    public Task<EbsSnapshotInfo> StartSnapshotAsync(StartSnapshotRequest request, CancellationToken ct = default) => _inner.StartSnapshotAsync(request, ct);

    public async Task PutSnapshotBlockAsync(string snapshotId, int blockIndex, ReadOnlyMemory<byte> data, ReadOnlyMemory<byte> sha256, int? progressPercent = null, CancellationToken ct = default)
    {
        // Paid once per block: a retry of the same body inside the client is not charged again.
        await _limiter.WaitAsync(data.Length, ct).ConfigureAwait(false);
        await _inner.PutSnapshotBlockAsync(snapshotId, blockIndex, data, sha256, progressPercent, ct).ConfigureAwait(false);
    }

    public Task<string> CompleteSnapshotAsync(string snapshotId, int changedBlocksCount, ReadOnlyMemory<byte>? linearSha256 = null, CancellationToken ct = default) =>
        _inner.CompleteSnapshotAsync(snapshotId, changedBlocksCount, linearSha256, ct);

    public Task<EbsBlockPage> ListSnapshotBlocksAsync(string snapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default) =>
        _inner.ListSnapshotBlocksAsync(snapshotId, startingBlockIndex, pageToken, maxResults, ct);

    public Task<EbsChangedBlockPage> ListChangedBlocksAsync(string firstSnapshotId, string secondSnapshotId, int? startingBlockIndex = null, string? pageToken = null, int? maxResults = null, CancellationToken ct = default) =>
        _inner.ListChangedBlocksAsync(firstSnapshotId, secondSnapshotId, startingBlockIndex, pageToken, maxResults, ct);

    public Task<int> GetSnapshotBlockAsync(string snapshotId, int blockIndex, string blockToken, Memory<byte> destination, CancellationToken ct = default) =>
        _inner.GetSnapshotBlockAsync(snapshotId, blockIndex, blockToken, destination, ct);

    public Task WaitForCompletedAsync(string snapshotId, TimeSpan timeout, Action<TimeSpan>? onPoll = null, CancellationToken ct = default) =>
        _inner.WaitForCompletedAsync(snapshotId, timeout, onPoll, ct);

    public void Dispose() => _inner.Dispose();
}
