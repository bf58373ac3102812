namespace BlockRepl.Storage;

/// <summary>A backend operation failed. <see cref="Transient"/> ones may succeed when retried.</summary>
public class StorageException(string message, bool transient, Exception? inner = null) : Exception(message, inner)
{
    public bool Transient { get; } = transient;
}

/// <summary>The object does not exist.</summary>
public sealed class ObjectNotFoundException(string key) : StorageException($"{key}: object not found", transient: false)
{
    public string Key { get; } = key;
}

/// <summary>A create-only write found an existing object.</summary>
public sealed class ObjectExistsException(string key) : StorageException($"{key}: object already exists", transient: false)
{
    public string Key { get; } = key;
}
