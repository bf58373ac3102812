using BlockRepl.Nbd;

namespace BlockRepl.Engine.Sources;

/// <summary>
/// An NBD export as a volume (<c>nbd+unix:///EXPORT?socket=PATH</c>, <c>nbd://HOST:PORT/EXPORT</c>): reads go through
/// the NBD client (split to the server's maximum), and ranges that base:allocation reports as reading zeros are
/// skipped like the holes of a sparse file. The reader thread waits on the client synchronously: it is a
/// dedicated thread, and the client keeps one connection with its own reply loop.
/// </summary>
public sealed class NbdBlockSource : IBlockSource
{
    private readonly NbdClient _client;
    private readonly bool _allocation;
    // base:allocation answers for a window; NextData walks them without a request per call.
    private IReadOnlyList<NbdExtent> _extents = [];
    private int _extentIndex;
    private const long StatusWindow = 1L << 30;
    private const int ConcurrentPiece = 512 * 1024;

    private NbdBlockSource(string text, NbdClient client)
    {
        Path = text;
        _client = client;
        _allocation = client.MetaContexts.ContainsKey(NbdMetaContexts.BaseAllocation);
    }

    public string Path { get; }
    public string SourceKey => Path;
    public long Size => _client.Size;
    public bool DirectIo => false;
    public bool TryEnableDirectIo() => false;
    /// <summary>The client multiplexes requests on its connection by cookie: reads may overlap.</summary>
    public int MaxConcurrentReads => 8;
    public void DropCache(long offset, long length) { }

    /// <summary>True when <paramref name="text"/> is an NBD URI (then <see cref="Open"/> handles it).</summary>
    public static bool IsNbd(string text) => text.StartsWith("nbd://", StringComparison.Ordinal) || text.StartsWith("nbd+unix://", StringComparison.Ordinal);

    /// <summary>Connects, asking for base:allocation (optional: without it every range is read).</summary>
    public static NbdBlockSource Open(string text, CancellationToken ct = default) => OpenAsync(text, ct).GetAwaiter().GetResult();

    /// <inheritdoc cref="Open"/>
    public static async Task<NbdBlockSource> OpenAsync(string text, CancellationToken ct = default)
    {
        if (!NbdUri.TryParse(text, out var uri))
            throw new SourceException($"source '{text}' is not an NBD URI: use nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT");
        try
        {
            NbdClient client;
            try
            {
                client = await NbdClient.ConnectAsync(uri, new NbdConnectOptions { MetaContexts = [NbdMetaContexts.BaseAllocation] }, ct)
                    .ConfigureAwait(false);
            }
            catch (NbdException e) when (e.Kind is NbdErrorKind.UnsupportedContext)
            {
                // A server without base:allocation: every range is read (and zeros are still found by the zero check).
                client = await NbdClient.ConnectAsync(uri, new NbdConnectOptions(), ct).ConfigureAwait(false);
            }
            return new NbdBlockSource(text, client);
        }
        catch (NbdException e) { throw new SourceException($"cannot read source '{text}': {e.Message}", e); }
        catch (IOException e) { throw new SourceException($"cannot read source '{text}': {e.Message}", e); }
    }

    public long NextData(long offset)
    {
        if (!_allocation || offset >= Size) return Math.Min(offset, Size);
        while (offset < Size)
        {
            // Find the extent holding offset in the cached window, or fetch the next window.
            while (_extentIndex < _extents.Count && _extents[_extentIndex].End <= offset) _extentIndex++;
            if (_extentIndex >= _extents.Count || _extents[_extentIndex].Offset > offset)
            {
                try
                {
                    _extents = _client.BlockStatusAsync(NbdMetaContexts.BaseAllocation, offset, Math.Min(StatusWindow, Size - offset))
                        .GetAwaiter().GetResult();
                }
                catch (NbdException e) { throw new SourceException($"source '{Path}': block status failed: {e.Message}", e); }
                _extentIndex = 0;
                if (_extents.Count == 0) return offset;     // no answer: read it
                continue;
            }
            var x = _extents[_extentIndex];
            if ((x.Flags & NbdMetaContexts.StateZero) == 0) return offset;
            offset = x.End;
        }
        return Size;
    }

    public int ReadBatch(Memory<byte> alignedBuffer, long offset, int length)
    {
        var read = ReadBatchAsync(alignedBuffer, offset, length);
        return read.IsCompletedSuccessfully ? read.Result : read.AsTask().GetAwaiter().GetResult();
    }

    public async ValueTask<int> ReadBatchAsync(Memory<byte> alignedBuffer, long offset, int length)
    {
        int n = (int)Math.Min(length, Size - offset);
        if (n <= 0) return 0;
        // Several requests in flight: the server overlaps its reads, and the socket never idles between them.
        // Every piece is awaited, failed or not: none may still write into the buffer once this returns.
        int pieces = (n + ConcurrentPiece - 1) / ConcurrentPiece;
        Exception? failure = null;
        if (pieces == 1) failure = await Complete(_client.ReadAsync(offset, alignedBuffer[..n])).ConfigureAwait(false);
        else
        {
            var reads = new ValueTask[pieces];
            for (int i = 0; i < pieces; i++)
            {
                int start = i * ConcurrentPiece;
                reads[i] = _client.ReadAsync(offset + start, alignedBuffer.Slice(start, Math.Min(ConcurrentPiece, n - start)));
            }
            foreach (var read in reads) failure ??= await Complete(read).ConfigureAwait(false);
        }
        if (failure is NbdException e) throw new SourceException($"source '{Path}': read of {n} bytes at {offset} failed: {e.Message}", e);
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        return n;

        static async ValueTask<Exception?> Complete(ValueTask read)
        {
            try { await read.ConfigureAwait(false); return null; }
            catch (Exception e) { return e; }
        }
    }

    public void Dispose() => _client.DisposeAsync().AsTask().GetAwaiter().GetResult();
}
