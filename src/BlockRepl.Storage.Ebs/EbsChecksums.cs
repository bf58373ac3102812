using System.Security.Cryptography;

namespace BlockRepl.Storage.Ebs;

/// <summary>
/// The checksums of the EBS direct APIs: per block Base64(SHA-256(block)), and the LINEAR aggregate that
/// CompleteSnapshot takes: Base64(SHA-256(D[i0] || D[i1] || …)) over the raw 32-byte block digests in
/// ascending block index order (coldsnap's reading of the docs; the base64 strings are NOT concatenated).
/// </summary>
public static class EbsChecksums
{
    public const int DigestSize = 32;

    /// <summary>Base64 SHA-256 of one block, as sent in x-amz-Checksum.</summary>
    public static string Block(ReadOnlySpan<byte> block)
    {
        Span<byte> digest = stackalloc byte[DigestSize];
        SHA256.HashData(block, digest);
        return Convert.ToBase64String(digest);
    }

    /// <summary>The raw LINEAR digest over (index, raw SHA-256) pairs in any order; indices must be distinct.</summary>
    public static byte[] LinearDigest(IEnumerable<(int Index, byte[] Digest)> blocks)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        using var linear = new LinearChecksum();
        foreach (var (index, digest) in blocks.OrderBy(b => b.Index))
            linear.Append(index, digest);
        return linear.GetDigest();
    }

    /// <summary>Base64 of <see cref="LinearDigest"/>, as sent in CompleteSnapshot's x-amz-Checksum.</summary>
    public static string Linear(IEnumerable<(int Index, byte[] Digest)> blocks) => Convert.ToBase64String(LinearDigest(blocks));
}

/// <summary>
/// Incremental LINEAR checksum: append each written block's raw SHA-256 in strictly ascending block index
/// order, then take the digest once. Not thread-safe.
/// </summary>
public sealed class LinearChecksum : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _lastIndex = -1;
    private bool _finished;

    /// <summary>Blocks appended so far (what CompleteSnapshot's x-amz-ChangedBlocksCount should say).</summary>
    public int Count { get; private set; }

    /// <summary>Appends the raw 32-byte SHA-256 of block <paramref name="blockIndex"/>.</summary>
    public void Append(int blockIndex, ReadOnlySpan<byte> sha256)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        if (sha256.Length != EbsChecksums.DigestSize)
            throw new ArgumentException($"a SHA-256 digest is {EbsChecksums.DigestSize} bytes, got {sha256.Length}", nameof(sha256));
        if (blockIndex <= _lastIndex)
            throw new ArgumentOutOfRangeException(nameof(blockIndex), blockIndex, $"LINEAR needs ascending block indices; the previous one was {_lastIndex}");
        _hash.AppendData(sha256);
        _lastIndex = blockIndex;
        Count++;
    }

    /// <summary>Writes the 32-byte aggregate digest; the builder cannot be appended to afterwards.</summary>
    public void GetDigest(Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        if (!_hash.TryGetHashAndReset(destination, out int written) || written != EbsChecksums.DigestSize)
            throw new ArgumentException($"destination must hold {EbsChecksums.DigestSize} bytes", nameof(destination));
        _finished = true;
    }

    public byte[] GetDigest()
    {
        var digest = new byte[EbsChecksums.DigestSize];
        GetDigest(digest);
        return digest;
    }

    /// <summary>Base64 of the aggregate digest (the x-amz-Checksum value of CompleteSnapshot).</summary>
    public string GetBase64() => Convert.ToBase64String(GetDigest());

    public void Dispose()
    {
        _finished = true;
        _hash.Dispose();
    }
}
