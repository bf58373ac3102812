using System.Text;
using Microsoft.Win32.SafeHandles;

namespace BlockRepl.TestKit;

/// <summary>
/// Deterministic disk images for tests and benchmarks. The same arguments give the same bytes on every
/// host (the generator is <see cref="SeededRandom"/>, not <see cref="System.Random"/>), except
/// <see cref="RealisticExt4"/>, whose content comes from the host's own files. Existing files are
/// replaced. Images are written fully allocated unless a method says otherwise.
/// </summary>
public static class DiskImages
{
    private const int ChunkSize = 4 << 20;
    private const int MixedBlockSize = 64 << 10;

    // Fixed UUIDs keep the ext4 superblock and directory hashes independent of the run.
    private const string Ext4Uuid = "6b1e2c1a-5f4e-4d1b-9a3c-b10c4e9e0001";
    private const string Ext4HashSeed = "6b1e2c1a-5f4e-4d1b-9a3c-b10c4e9e0002";

    /// <summary>Sources for <see cref="RealisticExt4"/>: text, binaries, libraries, as in docs/perf §4.1.</summary>
    private static readonly string[] s_realFileRoots = ["/usr/share", "/usr/lib", "/usr/include", "/usr/bin"];

    /// <summary>Files above this size are skipped so that no single file dominates a small image.</summary>
    private const long MaxRealFileSize = 64L << 20;

    /// <summary>Uniformly random bytes (incompressible, no duplicate blocks).</summary>
    public static void Random(string path, long size, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        var rng = new SeededRandom(seed);
        WriteSequential(path, size, (chunk, _) => rng.Fill(chunk));
    }

    /// <summary>All zeros; <paramref name="sparse"/> = true only sets the length (one big hole).</summary>
    public static void Zeros(string path, long size, bool sparse)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (sparse)
        {
            using FileStream fs = new(path, FileMode.Create, FileAccess.Write, FileShare.Read);
            fs.SetLength(size);
            return;
        }

        WriteSequential(path, size, (chunk, _) => chunk.Clear());
    }

    /// <summary>
    /// Every <paramref name="blockSize"/> block is a copy of one of <paramref name="distinctBlocks"/>
    /// random blocks (chosen at random), so a deduplicating backup stores only those few.
    /// </summary>
    public static void RepeatedBlocks(string path, long size, int seed, int distinctBlocks, int blockSize = 65536)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentOutOfRangeException.ThrowIfLessThan(distinctBlocks, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 1);
        if ((long)distinctBlocks * blockSize > 1L << 30)
        {
            throw new ArgumentOutOfRangeException(nameof(distinctBlocks), "distinctBlocks × blockSize must stay below 1 GiB (they are kept in memory).");
        }

        var rng = new SeededRandom(seed);
        byte[][] patterns = new byte[distinctBlocks][];
        for (int i = 0; i < distinctBlocks; i++)
        {
            patterns[i] = new byte[blockSize];
            rng.Fill(patterns[i]);
        }

        WriteBlocks(path, size, blockSize, (block, _) => patterns[rng.NextInt(distinctBlocks)].AsSpan(0, block.Length).CopyTo(block));
    }

    /// <summary>
    /// A sparse file of <paramref name="size"/> bytes with seeded random data of
    /// <paramref name="dataLength"/> bytes at each of <paramref name="dataOffsets"/>; everything else is
    /// a hole (reads as zero, not allocated).
    /// </summary>
    public static void Sparse(string path, long size, int seed, long[] dataOffsets, int dataLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ArgumentNullException.ThrowIfNull(dataOffsets);
        ArgumentOutOfRangeException.ThrowIfNegative(dataLength);
        foreach (long offset in dataOffsets)
        {
            if (offset < 0 || offset + dataLength > size)
            {
                throw new ArgumentOutOfRangeException(nameof(dataOffsets), $"Data at {offset} (+{dataLength}) does not fit in {size} bytes.");
            }
        }

        var rng = new SeededRandom(seed);
        byte[] buffer = new byte[dataLength];
        using (FileStream fs = new(path, FileMode.Create, FileAccess.Write, FileShare.Read))
        {
            fs.SetLength(size);
        }

        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Write, FileShare.Read);
        foreach (long offset in dataOffsets)
        {
            rng.Fill(buffer);
            RandomAccess.Write(handle, buffer, offset);
        }
    }

    /// <summary>
    /// Looks like a used disk at 64 KiB granularity: ~30 % all-zero blocks, ~30 % random
    /// (incompressible), ~25 % text-like (LZ4 compresses it several-fold), ~15 % copies of a few
    /// recurring blocks (dedupable). One in ten data blocks ends in zeros from a 4 KiB boundary, as
    /// the last block of a file does.
    /// </summary>
    public static void Mixed(string path, long size, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        var rng = new SeededRandom(seed);
        const int recurring = 16;
        byte[][] recurringBlocks = new byte[recurring][];
        for (int i = 0; i < recurring; i++)
        {
            recurringBlocks[i] = new byte[MixedBlockSize];
            rng.Fill(recurringBlocks[i]);
        }

        WriteBlocks(path, size, MixedBlockSize, (block, _) =>
        {
            double kind = rng.NextDouble();
            if (kind < 0.30)
            {
                block.Clear();
                return;
            }

            if (kind < 0.60)
            {
                rng.Fill(block);
            }
            else if (kind < 0.85)
            {
                TextLike(ref rng, block);
            }
            else
            {
                recurringBlocks[rng.NextInt(recurring)].AsSpan(0, block.Length).CopyTo(block);
                return;
            }

            if (rng.NextDouble() < 0.10)
            {
                int pages = block.Length / 4096;
                if (pages > 1)
                {
                    block[((1 + rng.NextInt(pages - 1)) * 4096)..].Clear();
                }
            }
        });
    }

    /// <summary>
    /// A real ext4 filesystem holding real files copied from <c>/usr/share</c>, <c>/usr/lib</c>,
    /// <c>/usr/include</c> and <c>/usr/bin</c> (balanced by bytes, up to <paramref name="fillBytes"/>),
    /// built with <c>mkfs.ext4 -q -F -d DIR -b 4096 IMG SIZE</c>. The rest is free space that reads as
    /// zeros. With <paramref name="allocate"/> every hole is then written with zeros, so the file is
    /// fully allocated like a real device (no SEEK_HOLE short cuts for the tool under test).
    /// The staging copy lives beside <paramref name="path"/> (not in /tmp) and is deleted afterwards.
    /// </summary>
    /// <param name="path">Image file to create.</param>
    /// <param name="size">Image size; a multiple of 4096, at least 16 MiB.</param>
    /// <param name="fillBytes">Bytes of files to copy in (allocated size, 4 KiB-rounded); at most 85 % of <paramref name="size"/>.</param>
    /// <param name="allocate">Write zeros into every hole after mkfs.</param>
    /// <exception cref="InvalidOperationException">mkfs.ext4 is missing or failed.</exception>
    public static void RealisticExt4(string path, long size, long fillBytes, bool allocate = true)
    {
        const long minSize = 16L << 20;
        if (size < minSize || size % 4096 != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "Must be a multiple of 4096 and at least 16 MiB.");
        }

        // ext4 metadata (inode tables, journal, group descriptors) takes ~5 % and small files waste
        // tail space; above ~85 % mkfs -d fails with "Could not allocate block".
        if (fillBytes < 0 || fillBytes > size / 100 * 85)
        {
            throw new ArgumentOutOfRangeException(nameof(fillBytes), fillBytes, "Must be between 0 and 85 % of size.");
        }

        string? mkfs = Processes.FindCommand("mkfs.ext4");
        if (mkfs is null)
        {
            throw new InvalidOperationException(
                "mkfs.ext4 not found (looked in PATH and /usr/sbin, /sbin). Install e2fsprogs: apt-get install -y e2fsprogs (or run ./scripts/test.sh as root, which installs it).");
        }

        string fullPath = System.IO.Path.GetFullPath(path);
        string staging = $"{fullPath}.staging-{Environment.ProcessId}";
        try
        {
            if (Directory.Exists(staging))
            {
                Directory.Delete(staging, recursive: true);
            }

            Directory.CreateDirectory(staging);
            CopyRealFiles(staging, fillBytes);

            File.Delete(fullPath);
            using (FileStream fs = new(fullPath, FileMode.CreateNew, FileAccess.Write))
            {
                fs.SetLength(size);
            }

            string args = $"-q -F -b 4096 -U {Ext4Uuid} -E hash_seed={Ext4HashSeed} -d {Processes.Quote(staging)} {Processes.Quote(fullPath)} {size / 1024}k";
            var (code, stdout, stderr) = Processes.Run(mkfs, args, check: false, timeout: TimeSpan.FromMinutes(30));
            if (code != 0)
            {
                throw new InvalidOperationException($"mkfs.ext4 {args} failed with exit code {code}: {(stderr + stdout).Trim()}");
            }
        }
        finally
        {
            try
            {
                Directory.Delete(staging, recursive: true);
            }
            catch (DirectoryNotFoundException)
            {
            }
        }

        if (allocate)
        {
            FillHoles(fullPath);
        }
    }

    /// <summary>Copies regular files from <see cref="s_realFileRoots"/>, always from the root with the fewest bytes so far.</summary>
    private static void CopyRealFiles(string staging, long fillBytes)
    {
        var roots = s_realFileRoots
            .Where(Directory.Exists)
            .Select(r => (Root: r, Files: EnumerateSorted(r).GetEnumerator(), Bytes: 0L, Done: false))
            .ToArray();
        try
        {
            long remaining = fillBytes;
            while (remaining >= 4096)
            {
                int pick = -1;
                for (int i = 0; i < roots.Length; i++)
                {
                    if (!roots[i].Done && (pick < 0 || roots[i].Bytes < roots[pick].Bytes))
                    {
                        pick = i;
                    }
                }

                if (pick < 0)
                {
                    break; // every source exhausted: the image is emptier than asked, which is still valid
                }

                ref var source = ref roots[pick];
                if (!source.Files.MoveNext())
                {
                    source.Done = true;
                    continue;
                }

                FileInfo file = source.Files.Current;
                long allocated = (file.Length + 4095) / 4096 * 4096;
                if (file.Length > MaxRealFileSize || allocated > remaining)
                {
                    continue;
                }

                string relative = System.IO.Path.GetRelativePath("/usr", file.FullName);
                string target = System.IO.Path.Combine(staging, relative);
                try
                {
                    Directory.CreateDirectory(System.IO.Path.GetDirectoryName(target)!);
                    File.Copy(file.FullName, target);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    continue; // unreadable or vanished: skip, the point is realistic bytes, not a given file
                }

                source.Bytes += allocated;
                remaining -= allocated;
            }
        }
        finally
        {
            foreach (var r in roots)
            {
                r.Files.Dispose();
            }
        }
    }

    /// <summary>Non-empty regular files under <paramref name="root"/>, depth first in ordinal name order; symlinks and special files skipped.</summary>
    private static IEnumerable<FileInfo> EnumerateSorted(string root)
    {
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            FileSystemInfo[] entries;
            try
            {
                entries = new DirectoryInfo(dir).GetFileSystemInfos();
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            Array.Sort(entries, (x, y) => string.CompareOrdinal(x.Name, y.Name));
            var subdirs = new List<string>();
            foreach (FileSystemInfo entry in entries)
            {
                if (entry.LinkTarget is not null)
                {
                    continue;
                }

                if (entry is DirectoryInfo d)
                {
                    subdirs.Add(d.FullName);
                }
                else if (entry is FileInfo { Length: > 0 } f)
                {
                    // Fifos, sockets and device nodes report length 0 (and a fifo would block a copy),
                    // so skipping empty files also skips every special file.
                    yield return f;
                }
            }

            for (int i = subdirs.Count - 1; i >= 0; i--)
            {
                pending.Push(subdirs[i]);
            }
        }
    }

    /// <summary>
    /// Writes zeros over every 1 MiB chunk that contains an all-zero 4 KiB page, which covers every
    /// hole (holes are whole filesystem blocks). Data chunks without zero pages are left untouched.
    /// </summary>
    private static void FillHoles(string path)
    {
        const int chunk = 1 << 20;
        const int page = 4096;
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        long length = RandomAccess.GetLength(handle);
        byte[] buffer = new byte[chunk];
        for (long offset = 0; offset < length; offset += chunk)
        {
            int n = (int)Math.Min(chunk, length - offset);
            Span<byte> span = buffer.AsSpan(0, n);
            Files.ReadExactly(handle, span, offset, path);
            bool hasZeroPage = false;
            for (int p = 0; p < n && !hasZeroPage; p += page)
            {
                hasZeroPage = !span.Slice(p, Math.Min(page, n - p)).ContainsAnyExcept((byte)0);
            }

            if (hasZeroPage)
            {
                RandomAccess.Write(handle, span, offset);
            }
        }

        RandomAccess.FlushToDisk(handle);
    }

    private static readonly string[] s_words =
    [
        "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "be", "on", "not", "this",
        "int", "void", "return", "if", "else", "while", "struct", "static", "const", "char", "unsigned",
        "#include", "#define", "size_t", "NULL", "uint64_t", "buffer", "length", "offset", "error", "file",
        "block", "device", "snapshot", "backup", "restore", "config", "value", "name", "path", "data",
        "function", "option", "default", "version", "license", "copyright", "http://www.gnu.org/licenses/",
        "Permission", "granted", "software", "without", "warranty", "{", "}", "(", ")", ";", "=", "==", "->",
        "<p>", "</p>", "<div class=\"content\">", "</div>", "msgid", "msgstr", "Description:", "Package:",
    ];

    /// <summary>Text with a small vocabulary and line structure: compressible like source, docs and configs.</summary>
    private static void TextLike(ref SeededRandom rng, Span<byte> block)
    {
        int pos = 0;
        int wordsOnLine = 0;
        int lineLength = 6 + rng.NextInt(10);
        while (pos < block.Length)
        {
            string word = s_words[rng.NextInt(s_words.Length)];
            string sep = ++wordsOnLine >= lineLength ? "\n" : " ";
            if (sep == "\n")
            {
                wordsOnLine = 0;
                lineLength = 6 + rng.NextInt(10);
                if (rng.NextInt(3) == 0)
                {
                    sep = "\n    ";
                }
            }

            pos += Append(block, pos, word);
            pos += Append(block, pos, sep);
        }
    }

    private static int Append(Span<byte> block, int pos, string text)
    {
        if (pos >= block.Length)
        {
            return 0;
        }

        Span<byte> dest = block[pos..];
        int count = Math.Min(text.Length, dest.Length);
        return Encoding.ASCII.GetBytes(text.AsSpan(0, count), dest);
    }

    /// <summary>Creates the file and calls <paramref name="fill"/> for each <paramref name="blockSize"/> block (the last may be short).</summary>
    private static void WriteBlocks(string path, long size, int blockSize, SpanAction fill)
    {
        int perChunk = Math.Max(1, ChunkSize / blockSize);
        WriteSequential(path, size, (chunk, chunkOffset) =>
        {
            for (int pos = 0; pos < chunk.Length; pos += blockSize)
            {
                fill(chunk.Slice(pos, Math.Min(blockSize, chunk.Length - pos)), chunkOffset + pos);
            }
        }, (long)perChunk * blockSize);
    }

    private delegate void SpanAction(Span<byte> buffer, long offset);

    private static void WriteSequential(string path, long size, SpanAction fill, long chunkSize = ChunkSize)
    {
        // Preallocation keeps large images contiguous; every byte is then written, so nothing stays unwritten.
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.Create, FileAccess.Write, FileShare.Read, FileOptions.None, preallocationSize: size);
        byte[] buffer = new byte[(int)Math.Min(chunkSize, Math.Max(size, 1))];
        for (long offset = 0; offset < size;)
        {
            int n = (int)Math.Min(buffer.Length, size - offset);
            Span<byte> span = buffer.AsSpan(0, n);
            fill(span, offset);
            RandomAccess.Write(handle, span, offset);
            offset += n;
        }
    }
}
