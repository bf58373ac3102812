namespace BlockRepl.Engine;

/// <summary>An error caused by what the user asked for (bad path, unknown id…): reported in one line.</summary>
public abstract class UserErrorException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The source is missing, unreadable or not a disk image / block device.</summary>
public sealed class SourceException(string message, Exception? inner = null) : UserErrorException(message, inner);

/// <summary>The path is not a repository, or one this version cannot use.</summary>
public sealed class RepositoryException(string message, Exception? inner = null) : UserErrorException(message, inner);

/// <summary>A recovery point (or other named thing) does not exist.</summary>
public sealed class NotFoundException(string message) : UserErrorException(message);

/// <summary>The restore target cannot take the volume (too small, a directory, not writable).</summary>
public sealed class TargetException(string message, Exception? inner = null) : UserErrorException(message, inner);

/// <summary>Bad command-line usage.</summary>
public sealed class UsageException(string message) : UserErrorException(message);

/// <summary>verify found problems; the message summarises them.</summary>
public sealed class VerifyFailedException(string message) : UserErrorException(message);

/// <summary>Another process holds a lock that conflicts with the one asked for (docs/format.md §8).</summary>
public sealed class RepositoryLockedException(string message) : UserErrorException(message);
