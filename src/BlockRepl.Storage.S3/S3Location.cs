namespace BlockRepl.Storage.S3;

/// <summary>A parsed <c>s3://bucket[/prefix]</c>. <see cref="Prefix"/> is empty or ends in '/'.</summary>
public sealed record S3Location(string Bucket, string Prefix)
{
    public const string Scheme = "s3://";

    public static bool IsS3(string location) => location.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase);

    /// <summary>Parses <c>s3://bucket[/prefix]</c>; throws <see cref="ArgumentException"/> with a readable message.</summary>
    public static S3Location Parse(string location)
    {
        if (!IsS3(location)) throw new ArgumentException($"'{location}' is not an s3:// location", nameof(location));
        string rest = location[Scheme.Length..];
        int slash = rest.IndexOf('/');
        string bucket = slash < 0 ? rest : rest[..slash];
        string prefix = slash < 0 ? "" : rest[(slash + 1)..].Trim('/');
        // Bucket naming rules (3-63 chars, lowercase, digits, '.', '-'); legacy buckets may have
        // uppercase or '_', so only reject what can never be a bucket name.
        if (bucket.Length is < 3 or > 63 || bucket.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_')))
            throw new ArgumentException($"'{location}': '{bucket}' is not a valid bucket name (expected s3://bucket[/prefix])", nameof(location));
        if (prefix.Contains("//", StringComparison.Ordinal) || prefix.Split('/').Any(p => p is "." or ".."))
            throw new ArgumentException($"'{location}': invalid prefix '{prefix}'", nameof(location));
        return new S3Location(bucket, prefix.Length == 0 ? "" : prefix + "/");
    }

    public override string ToString() => Prefix.Length == 0 ? $"{Scheme}{Bucket}" : $"{Scheme}{Bucket}/{Prefix.TrimEnd('/')}";
}
