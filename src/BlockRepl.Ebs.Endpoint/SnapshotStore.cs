using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using BlockRepl.Native.Linux;

namespace BlockRepl.Ebs.Endpoint;

/// <summary>
/// The snapshots under the data directory and the EBS state machine (ref/ebs.md §1.1, §15.4):
/// pending → (CompleteSnapshot accepted: "completing", reported as pending) → completed, or pending → error on
/// idle Timeout. Every state change is persisted (temp + fsync + rename) before it is reported.
/// </summary>
internal sealed partial class SnapshotStore : IDisposable
{
    private readonly EbsEndpointOptions _o;
    private readonly string _root;
    private readonly string _snapshotsDir;
    private readonly Dictionary<string, Snapshot> _snapshots = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Snapshot> _byClientToken = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();
    private FileStream? _lockFile;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _background = [];

    public SnapshotStore(EbsEndpointOptions options)
    {
        _o = options;
        _root = Path.GetFullPath(options.DataDirectory);
        _snapshotsDir = Path.Combine(_root, "snapshots");
    }

    public byte[] Key { get; private set; } = [];

    [GeneratedRegex("^snap-[0-9a-f]{1,59}$")]
    private static partial Regex SnapshotIdPattern();

    [GeneratedRegex(@"^arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*$")]
    private static partial Regex KmsArnPattern();

    public static bool IsSnapshotId(string id) => SnapshotIdPattern().IsMatch(id);

    /// <summary>Locks the data directory, loads the endpoint key and every snapshot, and resumes pending work.</summary>
    public void Open()
    {
        Directory.CreateDirectory(_snapshotsDir);
        try
        {
            // FileShare.None takes an advisory lock on Unix: a second endpoint on the same directory fails here.
            _lockFile = new FileStream(Path.Combine(_root, "endpoint.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new IOException($"the data directory {_root} is in use by another ebs-endpoint ({e.Message})", e);
        }
        Key = LoadOrCreateKey();
        var metas = new List<SnapshotMeta>();
        foreach (string dir in Directory.EnumerateDirectories(_snapshotsDir))
        {
            string metaPath = Path.Combine(dir, "snapshot.json");
            if (!File.Exists(metaPath))
            {
                // StartSnapshot crashed before publishing the metadata: it was never acknowledged.
                Directory.Delete(dir, recursive: true);
                continue;
            }
            metas.Add(JsonSerializer.Deserialize(File.ReadAllBytes(metaPath), EndpointJson.Default.SnapshotMeta)
                ?? throw new InvalidDataException($"{metaPath} is empty"));
        }
        // Parents before children: a parent always starts earlier.
        foreach (var meta in metas.OrderBy(m => m.StartTime))
        {
            Snapshot? parent = meta.ParentSnapshotId is { } pid && _snapshots.TryGetValue(pid, out var p) ? p : null;
            if (meta.ParentSnapshotId is not null && parent is null)
                throw new InvalidDataException($"snapshot {meta.SnapshotId} names parent {meta.ParentSnapshotId}, which is not in {_snapshotsDir}");
            var s = new Snapshot(meta, parent, _o.PutRatePerSnapshot, _o.GetRatePerSnapshot);
            string dir = Path.Combine(_snapshotsDir, meta.SnapshotId);
            bool writable = meta.State is "pending" or "completing";
            s.Blocks = BlockFile.Open(dir, _o.Durable, writable, s.Own, (i, d) => Committed(s, i, d));
            if (meta.State == "pending") DropTornBlocks(s);
            _snapshots[s.Id] = s;
            if (meta.ClientToken is not null) _byClientToken[meta.ClientToken] = s;
            if (meta.State == "completing") ScheduleCompletion(s);
        }
        if (metas.Count > 0) _o.Log?.Invoke($"loaded {metas.Count} snapshot(s) from {_snapshotsDir}");
        _background.Add(Task.Run(() => ExpiryLoopAsync(_stopping.Token)));
    }

    private byte[] LoadOrCreateKey()
    {
        string path = Path.Combine(_root, "endpoint.key");
        if (File.Exists(path))
        {
            byte[] k = File.ReadAllBytes(path);
            if (k.Length == 32) return k;
        }
        byte[] key = RandomNumberGenerator.GetBytes(32);
        WriteAtomically(path, key);
        return key;
    }

    /// <summary>
    /// After a crash, a pending snapshot may hold a logged block whose data write was torn by an un-acknowledged
    /// overwrite. Rehash what was written and forget blocks that no longer match: their put was never acknowledged
    /// as that content, and the client must write them again before CompleteSnapshot's count and checksum agree.
    /// </summary>
    private void DropTornBlocks(Snapshot s)
    {
        byte[] buf = BodyPool.Shared.Rent(BlockFile.BlockSize);
        try
        {
            Span<byte> h = stackalloc byte[32];
            foreach (var (index, digest) in s.Own.ToArray())
            {
                s.Blocks.Read(index, buf);
                SHA256.HashData(buf.AsSpan(0, BlockFile.BlockSize), h);
                if (!h.SequenceEqual(digest))
                {
                    s.Own.Remove(index);
                    _o.Log?.Invoke($"{s.Id}: block {index} does not match its logged digest after a restart; it must be written again");
                }
            }
        }
        finally
        {
            BodyPool.Shared.Return(buf);
        }
    }

    private static void Committed(Snapshot s, int index, Sha256Digest digest)
    {
        lock (s.Gate) s.Own[index] = digest;
    }

    public Snapshot? Find(string id)
    {
        lock (_gate) return _snapshots.GetValueOrDefault(id);
    }

    /// <summary>Looks up a snapshot named in a request path, applying the "does not exist yet" fault and the idle timeout.</summary>
    public Snapshot Get(string id)
    {
        if (!IsSnapshotId(id)) throw EbsError.Validation($"'{id}' is not a snapshot id (snap- followed by hex digits).", "INVALID_SNAPSHOT_ID");
        var s = Find(id) ?? throw EbsError.NotFound(id);
        if (_o.NotFoundAfterStart > TimeSpan.Zero && s.StartedInProcess != 0 && Stopwatch.GetElapsedTime(s.StartedInProcess) < _o.NotFoundAfterStart)
            throw EbsError.NotFound(id);
        ExpireIfIdle(s);
        return s;
    }

    // ---------------------------------------------------------------- StartSnapshot

    public (Snapshot Snapshot, bool Created) Start(StartSnapshotBody b)
    {
        if (b.VolumeSize is not { } size) throw EbsError.Validation("VolumeSize is required.");
        if (size is < 1 or > 65536) throw EbsError.Validation($"VolumeSize {size} is out of range: it must be 1..65536 GiB.", "INVALID_VOLUME_SIZE");
        int timeout = b.Timeout ?? 60;
        if (timeout is < 10 or > 4320) throw EbsError.Validation($"Timeout {timeout} is out of range: it must be 10..4320 minutes.");
        if (b.Description is { Length: > 255 }) throw EbsError.Validation("Description is longer than 255 characters.");
        if (b.ClientToken is { } ct && (ct.Length is 0 or > 255 || ct.Any(char.IsWhiteSpace)))
            throw EbsError.Validation("ClientToken must be 1..255 characters without whitespace.");
        if (b.Tags is { } tags)
        {
            if (tags.Count > 50) throw EbsError.Validation("A snapshot can have at most 50 tags.", "INVALID_TAG");
            foreach (var t in tags)
            {
                if (t.Key is null || t.Key.Length > 127 || (t.Value?.Length ?? 0) > 255)
                    throw EbsError.Validation("Each tag needs a Key of at most 127 characters and a Value of at most 255.", "INVALID_TAG");
            }
        }
        if (b.KmsKeyArn is { } arn && (arn.Length > 2048 || !KmsArnPattern().IsMatch(arn)))
            throw EbsError.Validation($"KmsKeyArn '{arn}' is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>).", "INVALID_CUSTOMER_KEY");
        if (b.ParentSnapshotId is not null && b.Encrypted is not null)
            throw EbsError.Validation("Encrypted cannot be specified together with ParentSnapshotId: the child inherits the parent's encryption.");

        string fingerprint = Fingerprint(b, timeout);
        lock (_gate)
        {
            if (b.ClientToken is { } token && _byClientToken.TryGetValue(token, out var existing))
            {
                if (existing.Meta.Fingerprint != fingerprint)
                    throw EbsError.Conflict($"ClientToken '{token}' was already used for {existing.Id} with different parameters.");
                return (existing, false);
            }
            Snapshot? parent = null;
            if (b.ParentSnapshotId is { } pid)
            {
                if (!IsSnapshotId(pid)) throw EbsError.Validation($"ParentSnapshotId '{pid}' is not a snapshot id.", "INVALID_SNAPSHOT_ID");
                parent = _snapshots.GetValueOrDefault(pid) ?? throw EbsError.NotFound(pid);
                if (!parent.Completed)
                    throw EbsError.Validation($"The parent snapshot {pid} is {parent.PublicStatus}; only a completed snapshot can be a parent.", "INVALID_SNAPSHOT_ID");
                if (size < parent.Meta.VolumeSize)
                    throw EbsError.Validation($"VolumeSize {size} GiB is smaller than the parent snapshot's {parent.Meta.VolumeSize} GiB.", "INVALID_VOLUME_SIZE");
            }
            int pending = _snapshots.Values.Count(x => x.Meta.State is "pending" or "completing");
            if (pending >= _o.MaxPendingSnapshots)
                throw EbsError.Quota($"There are already {pending} pending snapshots, the limit of this endpoint (AWS: 100 per account). Complete some first.");

            string id = NewSnapshotId();
            var meta = new SnapshotMeta
            {
                SnapshotId = id,
                VolumeSize = size,
                ParentSnapshotId = parent?.Id,
                Encrypted = b.Encrypted == true || b.KmsKeyArn is not null || parent?.Meta.Encrypted == true,
                KmsKeyArn = b.KmsKeyArn ?? parent?.Meta.KmsKeyArn,
                Description = b.Description,
                Tags = b.Tags,
                ClientToken = b.ClientToken,
                Fingerprint = fingerprint,
                TimeoutMinutes = timeout,
                State = "pending",
                StartTime = DateTimeOffset.UtcNow,
            };
            var s = new Snapshot(meta, parent, _o.PutRatePerSnapshot, _o.GetRatePerSnapshot) { StartedInProcess = Stopwatch.GetTimestamp() };
            string dir = Path.Combine(_snapshotsDir, id);
            Directory.CreateDirectory(dir);
            s.Blocks = BlockFile.Create(dir, _o.Durable, (i, d) => Committed(s, i, d));
            SaveMeta(s);
            _snapshots[id] = s;
            if (b.ClientToken is not null) _byClientToken[b.ClientToken] = s;
            return (s, true);
        }
    }

    private static string Fingerprint(StartSnapshotBody b, int timeout)
    {
        var sb = new StringBuilder();
        sb.Append(b.VolumeSize).Append('|').Append(b.ParentSnapshotId).Append('|').Append(b.Encrypted).Append('|')
          .Append(b.KmsKeyArn).Append('|').Append(b.Description).Append('|').Append(timeout);
        foreach (var t in b.Tags ?? []) sb.Append('|').Append(t.Key).Append('=').Append(t.Value);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    private string NewSnapshotId()
    {
        while (true)
        {
            string id = "snap-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(9))[..17];
            if (!_snapshots.ContainsKey(id)) return id;
        }
    }

    // ---------------------------------------------------------------- PutSnapshotBlock

    public async Task PutAsync(Snapshot s, int index, ReadOnlyMemory<byte> data, Sha256Digest digest, CancellationToken ct)
    {
        if (index >= s.VolumeBlocks)
            throw EbsError.Validation($"Block index {index} is beyond the end of the {s.Meta.VolumeSize} GiB volume (last index {s.VolumeBlocks - 1}).", "INVALID_BLOCK");
        lock (s.Gate)
        {
            ThrowUnlessWritable(s);
            s.InFlightPuts++;
        }
        try
        {
            await s.Blocks.WriteAsync(index, data, digest, ct).ConfigureAwait(false);
        }
        finally
        {
            lock (s.Gate)
            {
                s.InFlightPuts--;
                s.LastActivity = Stopwatch.GetTimestamp();
            }
        }
    }

    private static void ThrowUnlessWritable(Snapshot s)
    {
        switch (s.Meta.State)
        {
            case "pending": return;
            case "error": throw EbsError.Validation($"The snapshot '{s.Id}' is in the error state ({s.Meta.ErrorMessage}); no more blocks can be written.", "WRITE_REQUEST_TIMEOUT");
            default: throw EbsError.Validation($"The snapshot '{s.Id}' is {s.PublicStatus} (CompleteSnapshot was called); no more blocks can be written.", "INVALID_SNAPSHOT_ID");
        }
    }

    // ---------------------------------------------------------------- CompleteSnapshot

    public async Task<string> CompleteAsync(Snapshot s, int changedBlocksCount, string? checksum, string? algorithm, string? aggregation)
    {
        if (checksum is not null)
        {
            if (algorithm is not null && algorithm != "SHA256") throw EbsError.Validation($"x-amz-Checksum-Algorithm '{algorithm}' is not supported (SHA256 only).");
            if (aggregation is not null && aggregation != "LINEAR") throw EbsError.Validation($"x-amz-Checksum-Aggregation-Method '{aggregation}' is not supported (LINEAR only).");
        }
        lock (s.Gate)
        {
            if (s.Meta.State is "completing" or "completed" or "error") return s.PublicStatus;
            s.Meta.State = "completing";
        }
        // Puts that passed their state check before the seal finish first, so the count below is final.
        while (true)
        {
            lock (s.Gate) if (s.InFlightPuts == 0) break;
            await Task.Delay(2).ConfigureAwait(false);
        }
        try
        {
            KeyValuePair<int, Sha256Digest>[] own;
            lock (s.Gate) own = [.. s.Own];
            if (changedBlocksCount != own.Length)
                throw EbsError.Validation($"x-amz-ChangedBlocksCount is {changedBlocksCount} but {own.Length} distinct block(s) were written to {s.Id}.");
            if (checksum is not null)
            {
                Array.Sort(own, (a, b) => a.Key.CompareTo(b.Key));
                using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                foreach (var kv in own)
                {
                    var d = kv.Value;
                    h.AppendData(d);
                }
                string linear = Convert.ToBase64String(h.GetHashAndReset());
                if (linear != checksum)
                    throw EbsError.Validation($"The LINEAR checksum {checksum} does not match the {own.Length} block(s) written to {s.Id} (expected {linear}: SHA-256 over their raw digests in index order).");
            }
            s.Meta.ChangedBlocksCount = changedBlocksCount;
            SaveMeta(s);
        }
        catch
        {
            lock (s.Gate) s.Meta.State = "pending";
            throw;
        }
        ScheduleCompletion(s);
        return "pending";
    }

    private void ScheduleCompletion(Snapshot s)
    {
        var t = Task.Run(async () =>
        {
            try
            {
                await Task.Delay(_o.CompletionDelay, _stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return; // stays "completing" on disk and is completed after the next start
            }
            lock (s.Gate)
            {
                s.Meta.State = "completed";
                s.Meta.CompletedTime = DateTimeOffset.UtcNow;
            }
            try
            {
                SaveMeta(s);
                s.Blocks.Seal();
            }
            catch (Exception e)
            {
                _o.Log?.Invoke($"{s.Id}: could not persist completion: {e.Message}");
            }
        });
        lock (_background)
        {
            _background.RemoveAll(x => x.IsCompleted);
            _background.Add(t);
        }
    }

    // ---------------------------------------------------------------- idle timeout

    private void ExpireIfIdle(Snapshot s)
    {
        lock (s.Gate)
        {
            if (s.Meta.State != "pending" || s.InFlightPuts > 0) return;
            var idle = Stopwatch.GetElapsedTime(s.LastActivity);
            if (idle < _o.MinuteLength * s.Meta.TimeoutMinutes) return;
            s.Meta.State = "error";
            s.Meta.ErrorMessage = $"no put or complete request within its {s.Meta.TimeoutMinutes}-minute Timeout";
        }
        SaveMeta(s);
        s.Blocks.Seal();
        _o.Log?.Invoke($"{s.Id}: timed out after {s.Meta.TimeoutMinutes} idle minute(s); now in the error state");
    }

    private async Task ExpiryLoopAsync(CancellationToken ct)
    {
        var period = TimeSpan.FromTicks(Math.Clamp(_o.MinuteLength.Ticks / 10, TimeSpan.TicksPerMillisecond * 100, TimeSpan.TicksPerSecond));
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                Snapshot[] all;
                lock (_gate) all = [.. _snapshots.Values];
                foreach (var s in all)
                {
                    try
                    {
                        ExpireIfIdle(s);
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException or NativeIoException)
                    {
                        _o.Log?.Invoke($"{s.Id}: could not persist the timeout: {e.Message}");
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    // ---------------------------------------------------------------- reads

    public static Snapshot Readable(Snapshot s)
    {
        if (!s.Completed) throw EbsError.NotReadable(s.Id, s.PublicStatus);
        return s;
    }

    /// <summary>
    /// Deterministic pseudo-random bytes for a never-written block of an encrypted snapshot: reading such a block
    /// through a volume gives noise on AWS, not zeros (ref/ebs.md §6), and a client must never assume otherwise.
    /// </summary>
    public void FillUnwritten(Snapshot s, int index, Span<byte> into)
    {
        if (!s.Meta.Encrypted)
        {
            into.Clear();
            return;
        }
        Span<byte> seed = stackalloc byte[32];
        HMACSHA256.HashData(Key, Encoding.ASCII.GetBytes($"{s.Id}/{index}"), seed);
        ulong x = BitConverter.ToUInt64(seed) | 1, y = BitConverter.ToUInt64(seed[8..]) | 1;
        var words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(into);
        for (int i = 0; i < words.Length; i++)
        {
            // xorshift128+: fast, and plenty for "not zeros, not the data".
            ulong t = x;
            x = y;
            t ^= t << 23;
            t ^= t >> 17;
            t ^= y ^ (y >> 26);
            y = t;
            words[i] = x + y;
        }
    }

    public Dictionary<string, int> CountByState()
    {
        lock (_gate)
        {
            return _snapshots.Values.GroupBy(s => s.PublicStatus).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        }
    }

    // ---------------------------------------------------------------- persistence

    private void SaveMeta(Snapshot s)
    {
        byte[] json;
        lock (s.Gate) json = JsonSerializer.SerializeToUtf8Bytes(s.Meta, EndpointJson.Default.SnapshotMeta);
        WriteAtomically(Path.Combine(_snapshotsDir, s.Id, "snapshot.json"), json);
    }

    /// <summary>temp + fsync + rename + fsync(dir): readers see the old or the new file, never a torn one.</summary>
    private void WriteAtomically(string path, byte[] content)
    {
        string tmp = path + ".tmp-" + Environment.ProcessId + "-" + Environment.CurrentManagedThreadId;
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(content);
            if (_o.Durable) fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        if (_o.Durable) LinuxFile.FsyncDirectory(Path.GetDirectoryName(path)!);
    }

    public async Task StopAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        Task[] tasks;
        lock (_background) tasks = [.. _background];
        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    public void Dispose()
    {
        _stopping.Cancel();
        lock (_gate)
        {
            foreach (var s in _snapshots.Values) s.Blocks?.Dispose();
            _snapshots.Clear();
        }
        _lockFile?.Dispose();
        _stopping.Dispose();
    }
}
