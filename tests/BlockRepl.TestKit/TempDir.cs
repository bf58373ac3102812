namespace BlockRepl.TestKit;

/// <summary>A fresh directory under the system temp directory (<c>TMPDIR</c>), deleted on dispose.</summary>
public sealed class TempDir : IDisposable
{
    private bool _disposed;

    /// <summary>Creates <c>$TMPDIR/&lt;prefix&gt;-&lt;random&gt;</c>.</summary>
    public TempDir(string prefix = "blockrepl-test")
    {
        Path = Directory.CreateTempSubdirectory(prefix + "-").FullName;
    }

    /// <summary>Absolute path of the directory.</summary>
    public string Path { get; }

    /// <summary>Path of <paramref name="name"/> inside the directory (nothing is created).</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Deletes the directory recursively; errors (already gone, busy, permissions) are ignored.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
