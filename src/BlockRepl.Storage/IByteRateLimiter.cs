namespace BlockRepl.Storage;

/// <summary>
/// Paces bytes sent over a link. Storage decorators (<see cref="ThrottledBackend"/>, the EBS client's) call it
/// before every piece they send; the implementation (a token bucket over a time-of-day schedule) lives in the
/// engine, so this assembly stays free of policy.
/// </summary>
public interface IByteRateLimiter
{
    /// <summary>
    /// Returns once <paramref name="bytes"/> may be sent. Completes synchronously (without allocating) while the
    /// rate allows; a request larger than the burst is allowed and repaid by later callers.
    /// </summary>
    ValueTask WaitAsync(int bytes, CancellationToken ct = default);
}
