using BlockRepl.Core;
using BlockRepl.Engine;
using BlockRepl.Native.Linux;
using BlockRepl.Storage;

namespace BlockRepl.Cli;

/// <summary>Every exit code of <c>blockrepl</c>, in one place (the README's table is generated from the same list).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Internal = 1;
    public const int Usage = 2;
    public const int Source = 3;
    public const int Repository = 4;
    public const int NotFound = 5;
    public const int Target = 6;
    public const int Corrupt = 7;
    public const int Storage = 8;
    public const int Locked = 9;
    public const int Interrupted = 130;

    public static readonly (int Code, string Meaning)[] Table =
    [
        (Ok, "success (verify: repository clean)"),
        (Internal, "unexpected internal error (a bug: please report it with --verbose output)"),
        (Usage, "bad command line (unknown command or option, missing --repo, bad value)"),
        (Source, "source missing, unreadable, a directory, changed size during backup, or busy"),
        (Repository, "not a repository, newer format, already exists, or cannot be created; not a seed, or seed and repository chunk sizes differ"),
        (NotFound, "recovery point not found or ambiguous"),
        (Target, "restore target unusable (directory, too small, not writable)"),
        (Corrupt, "corrupt or missing data found (verify failed, restore refused)"),
        (Storage, "storage I/O error (disk full, permission, backend failure)"),
        (Locked, "repository locked: in use by another process (a backup while pruning, a prune while backing up), or stale locks"),
        (Interrupted, "interrupted (SIGINT/SIGTERM); earlier recovery points are intact"),
    ];

    /// <summary>Maps an exception to (exit code, one-line message). The only place this decision is made.</summary>
    public static (int Code, string Message) Classify(Exception e) => e switch
    {
        UsageException => (Usage, e.Message),
        SourceException => (Source, e.Message),
        RepositoryLockedException => (Locked, e.Message),
        RepositoryException => (Repository, e.Message),
        UnsupportedFormatException => (Repository, e.Message),
        NotFoundException => (NotFound, e.Message),
        TargetException => (Target, e.Message),
        VerifyFailedException => (Corrupt, e.Message),
        CorruptDataException => (Corrupt, e.Message),
        ObjectNotFoundException => (Corrupt, e.Message),
        StorageException => (Storage, e.Message),
        NativeIoException => (Storage, e.Message),
        OperationCanceledException => (Interrupted, "interrupted; earlier recovery points are intact, the next run resumes"),
        UnauthorizedAccessException => (Storage, e.Message),
        IOException => (Storage, e.Message),
        _ => (Internal, $"internal error: {e.GetType().Name}: {e.Message}"),
    };
}
