namespace BlockRepl.Storage;

/// <summary>
/// Limits the bytes written into uploads (<see cref="IObjectUpload.Stream"/>) to what an
/// <see cref="IByteRateLimiter"/> allows; reads, listings and commits pass through. One limiter is shared
/// by every upload of a process, so concurrent pack uploads split the rate between them. Writes are paced in
/// slices of <see cref="SliceSize"/>, so one large write does not take the whole burst at once.
/// </summary>
/// <remarks>
/// For a backend that spools an object and sends it on commit (S3), this paces the spooling: the average rate
/// over a pack is capped, the PUT itself still goes at link speed (docs/bandwidth.md).
/// </remarks>
public sealed class ThrottledBackend(IBackend inner, IByteRateLimiter limiter) : IBackend
{
    /// <summary>Largest piece written after one wait.</summary>
    public const int SliceSize = 64 * 1024;

    private readonly IBackend _inner = inner ?? throw new ArgumentNullException(nameof(inner));
    private readonly IByteRateLimiter _limiter = limiter ?? throw new ArgumentNullException(nameof(limiter));

    public IBackend Inner => _inner;
    public string Location => _inner.Location;

    public async ValueTask<IObjectUpload> CreateAsync(string key, CancellationToken ct = default)
    {
        var upload = await _inner.CreateAsync(key, ct).ConfigureAwait(false);
        return new ThrottledUpload(upload, new ThrottledStream(upload.Stream, _limiter, ct));
    }

    public ValueTask<int> ReadAtAsync(string key, long offset, Memory<byte> buffer, CancellationToken ct = default) => _inner.ReadAtAsync(key, offset, buffer, ct);
    public ValueTask<byte[]> ReadAllAsync(string key, CancellationToken ct = default) => _inner.ReadAllAsync(key, ct);
    public ValueTask<ObjectInfo?> StatAsync(string key, CancellationToken ct = default) => _inner.StatAsync(key, ct);
    public IAsyncEnumerable<ObjectInfo> ListAsync(string prefix, CancellationToken ct = default) => _inner.ListAsync(prefix, ct);
    public ValueTask DeleteAsync(string key, CancellationToken ct = default) => _inner.DeleteAsync(key, ct);
    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    private sealed class ThrottledUpload(IObjectUpload inner, Stream stream) : IObjectUpload
    {
        public string Key => inner.Key;
        public Stream Stream => stream;
        public ValueTask CommitAsync(CancellationToken ct = default) => inner.CommitAsync(ct);
        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }

    /// <summary>Write-only pass-through that waits for the limiter before each slice.</summary>
    private sealed class ThrottledStream(Stream inner, IByteRateLimiter limiter, CancellationToken uploadCt) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => inner.CanWrite;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            while (!buffer.IsEmpty)
            {
                int n = Math.Min(buffer.Length, SliceSize);
                // Synchronous writers (the packer thread) block here: it is their own thread.
                var wait = limiter.WaitAsync(n, uploadCt);
                if (wait.IsCompletedSuccessfully) wait.GetAwaiter().GetResult();
                else wait.AsTask().GetAwaiter().GetResult();
                inner.Write(buffer[..n]);
                buffer = buffer[n..];
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void WriteByte(byte value) => Write([value]);

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            while (!buffer.IsEmpty)
            {
                int n = Math.Min(buffer.Length, SliceSize);
                await limiter.WaitAsync(n, cancellationToken).ConfigureAwait(false);
                await inner.WriteAsync(buffer[..n], cancellationToken).ConfigureAwait(false);
                buffer = buffer[n..];
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        // The inner stream belongs to the upload, which disposes it.
    }
}
