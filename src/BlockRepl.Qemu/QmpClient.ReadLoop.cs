using System.Net.Sockets;
using System.Text.Json;

namespace BlockRepl.Qemu;

public sealed partial class QmpClient
{
    private static readonly JsonElement s_emptyObject = JsonDocument.Parse("{}").RootElement.Clone();

    private async Task ReadGreetingAsync(TimeSpan limit, CancellationToken token, CancellationToken callerToken)
    {
        string? line;
        try
        {
            line = await _reader.ReadLineAsync(token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!callerToken.IsCancellationRequested)
        {
            throw QmpException.Create(QmpErrorKind.Timeout, SocketPath, null, $"no greeting within {limit.TotalSeconds:0.#} s (is another client connected? a QMP chardev serves one client at a time)", e);
        }
        catch (Exception e) when (e is IOException or SocketException)
        {
            throw QmpException.Create(QmpErrorKind.Transport, SocketPath, null, $"connection lost before the greeting: {e.Message}", e);
        }

        if (line is null)
            throw QmpException.Create(QmpErrorKind.Transport, SocketPath, null, "QEMU closed the connection before the greeting");
        try
        {
            using var doc = JsonDocument.Parse(line);
            var version = doc.RootElement.GetProperty("QMP").GetProperty("version");
            Version = FormatVersion(version.GetProperty("qemu"));
            Package = version.TryGetProperty("package", out var package) && package.ValueKind == JsonValueKind.String ? package.GetString()!.Trim() : "";
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw QmpException.Create(QmpErrorKind.Protocol, SocketPath, null, $"not a QMP greeting: {Truncate(line)}", e);
        }
    }

    /// <summary>
    /// The one reader: a reply completes the command with its id, an event goes to the first matching waiter
    /// or into the buffer. End of stream, an I/O error or a line that is not a JSON object fails everything
    /// pending, and every later call.
    /// </summary>
    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                string? line = await _reader.ReadLineAsync(_disposeCts.Token).ConfigureAwait(false);
                if (line is null)
                {
                    Fail(QmpException.Create(QmpErrorKind.Transport, SocketPath, null, _pending.IsEmpty
                        ? "QEMU closed the connection"
                        : $"QEMU closed the connection with {_pending.Count} command(s) in flight"));
                    return;
                }
                if (line.Length == 0) continue;
                Dispatch(line);
            }
        }
        catch (OperationCanceledException) when (_disposing)
        {
        }
        catch (QmpException e)
        {
            Fail(e);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Fail(QmpException.Create(QmpErrorKind.Transport, SocketPath, null, _disposing ? "the client was closed" : $"connection lost: {e.Message}", e));
        }
        catch (Exception e)
        {
            Fail(QmpException.Create(QmpErrorKind.Protocol, SocketPath, null, $"reply reader failed: {e.Message}", e));
        }
    }

    private void Dispatch(string line)
    {
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(line);
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw QmpException.Create(QmpErrorKind.Protocol, SocketPath, null, $"QEMU sent a line that is not JSON: {Truncate(line)}", e);
        }
        if (root.ValueKind != JsonValueKind.Object)
            throw QmpException.Create(QmpErrorKind.Protocol, SocketPath, null, $"QEMU sent a JSON value that is not an object: {Truncate(line)}");

        if (root.TryGetProperty("event", out var name) && name.ValueKind == JsonValueKind.String)
        {
            var data = root.TryGetProperty("data", out var d) ? d : s_emptyObject;
            OnEvent(new QmpEvent(name.GetString()!, data, Interlocked.Increment(ref _eventSequence)));
            return;
        }

        // Every command we send carries a numeric id; a reply without one (QEMU could not parse our line) or
        // with an id nobody waits for any more (its caller timed out) has no one to go to.
        if (!root.TryGetProperty("id", out var idElement) || !idElement.TryGetInt64(out long id) || !_pending.TryGetValue(id, out var pending))
            return;

        if (root.TryGetProperty("return", out var result))
        {
            pending.Completion.TrySetResult(result);
        }
        else if (root.TryGetProperty("error", out var error))
        {
            string errorClass = error.TryGetProperty("class", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()! : "UnknownError";
            string desc = error.TryGetProperty("desc", out var de) && de.ValueKind == JsonValueKind.String ? de.GetString()! : "(no description)";
            pending.Completion.TrySetException(QmpException.CommandError(SocketPath, pending.Command, errorClass, desc));
        }
        else
        {
            pending.Completion.TrySetException(QmpException.Create(QmpErrorKind.Protocol, SocketPath, pending.Command, $"reply has neither 'return' nor 'error': {Truncate(line)}"));
        }
    }

    private void OnEvent(QmpEvent e)
    {
        lock (_eventLock)
        {
            for (int i = 0; i < _waiters.Count; i++)
            {
                var waiter = _waiters[i];
                bool matches;
                try
                {
                    matches = waiter.Matches(e);
                }
                catch (Exception ex)
                {
                    // The caller's predicate threw: that is the caller's failure, not the connection's.
                    waiter.Completion.TrySetException(ex);
                    _waiters.RemoveAt(i--);
                    continue;
                }
                if (matches && waiter.Completion.TrySetResult(e))
                {
                    _waiters.RemoveAt(i);
                    return;
                }
            }
            _events.AddLast(e);
            if (_events.Count > MaxBufferedEvents) _events.RemoveFirst();
        }
    }

    /// <summary>Records the first failure and fails every pending command and event wait with it.</summary>
    private void Fail(QmpException failure)
    {
        lock (_eventLock)
        {
            _failure ??= failure;
            failure = _failure;
            foreach (var waiter in _waiters) waiter.Completion.TrySetException(Rethrow(failure, null));
            _waiters.Clear();
        }
        foreach (var (_, pending) in _pending) pending.Completion.TrySetException(Rethrow(failure, pending.Command));
    }

    private static string Truncate(string line) => line.Length <= 200 ? line : line[..200] + "…";
}
