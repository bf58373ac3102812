using System.Security.Cryptography;

namespace BlockRepl.Storage.S3;

/// <summary>
/// The append-only stream of an S3 upload. Bytes stay in memory up to a limit, then move to a temp
/// file (deleted on close). The content is kept until the upload is disposed, so a failed commit
/// can be re-sent from the start.
/// </summary>
internal sealed class SpoolStream(string spoolDirectory, int memoryLimit) : Stream
{
    private MemoryStream? _memory = new();
    private FileStream? _file;
    private long _length;
    private bool _frozen;

    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => !_frozen;
    public override long Length => _length;
    public override long Position { get => _length; set => throw new NotSupportedException(); }

    /// <summary>Path of the temp file, or null while the content is in memory.</summary>
    public string? FilePath => _file?.Name;

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        PrepareWrite(buffer.Length);
        if (_file is not null) _file.Write(buffer); else _memory!.Write(buffer);
        _length += buffer.Length;
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        PrepareWrite(buffer.Length);
        if (_file is not null) await _file.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
        else _memory!.Write(buffer.Span);
        _length += buffer.Length;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private void PrepareWrite(int count)
    {
        ObjectDisposedException.ThrowIf(_memory is null && _file is null, this);
        if (_frozen) throw new InvalidOperationException("upload is being committed; no more writes");
        if (_file is null && _length + count > memoryLimit)
        {
            Directory.CreateDirectory(spoolDirectory);
            string path = Path.Combine(spoolDirectory, $"blockrepl-s3-{Environment.ProcessId}-{Guid.NewGuid():N}.spool");
            _file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read, 1 << 16, FileOptions.DeleteOnClose);
            _memory!.Position = 0;
            _memory.CopyTo(_file);
            _memory = null;
        }
    }

    /// <summary>Ends writing; the content becomes readable with <see cref="OpenRead"/>.</summary>
    public async ValueTask FreezeAsync(CancellationToken ct)
    {
        _frozen = true;
        if (_file is not null) await _file.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>A new read stream over the whole content (the caller disposes it).</summary>
    public Stream OpenRead()
    {
        if (_file is not null)
            return new FileStream(_file.Name, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16, FileOptions.SequentialScan);
        return new MemoryStream(_memory!.GetBuffer(), 0, checked((int)_length), writable: false);
    }

    /// <summary>MD5 of <paramref name="count"/> bytes at <paramref name="offset"/> (S3 ETags of unencrypted objects).</summary>
    public async ValueTask<byte[]> Md5Async(long offset, long count, CancellationToken ct)
    {
        await using var s = OpenRead();
        s.Position = offset;
        using var md5 = IncrementalHash.CreateHash(HashAlgorithmName.MD5);
        byte[] buf = new byte[1 << 16];
        while (count > 0)
        {
            int n = await s.ReadAsync(buf.AsMemory(0, (int)Math.Min(buf.Length, count)), ct).ConfigureAwait(false);
            if (n == 0) break;
            md5.AppendData(buf, 0, n);
            count -= n;
        }
        return md5.GetHashAndReset();
    }

    public override void Flush() { }
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _file?.Dispose();
            _file = null;
            _memory = null;
        }
        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (_file is not null) await _file.DisposeAsync().ConfigureAwait(false);
        _file = null;
        _memory = null;
        await base.DisposeAsync().ConfigureAwait(false);
    }
}
