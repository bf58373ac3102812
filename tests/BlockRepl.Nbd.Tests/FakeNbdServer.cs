using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using BlockRepl.TestKit;

namespace BlockRepl.Nbd.Tests;

/// <summary>
/// A scripted NBD server on a unix socket for what real servers do not do on demand: replies in a chosen
/// order, chunks of different requests interleaved, malformed replies. It negotiates like qemu 7.2
/// (structured replies; the contexts it offers get ids 7, 9, …; GO answers NBD_INFO_EXPORT), then hands
/// the connection to the test's script.
/// </summary>
public sealed class FakeNbdServer : IAsyncDisposable
{
    /// <summary>How the fake answers NBD_OPT_GO.</summary>
    public enum GoBehaviour { Normal, Unsupported, TlsRequired }

    public const long ExportSize = 1024 * 1024;

    private readonly TempDir _dir = new("blockrepl-nbd-fake");
    private readonly Socket _listener = new(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
    private readonly Task _serve;

    public NbdUri Uri { get; }

    public FakeNbdServer(string[] contexts, Func<Connection, Task> script, GoBehaviour go = GoBehaviour.Normal)
    {
        string path = _dir.File("fake.sock");
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen();
        Uri = NbdUri.Unix(path, "fake");
        _serve = Task.Run(async () =>
        {
            using var socket = await _listener.AcceptAsync();
            await using var stream = new NetworkStream(socket);
            var connection = new Connection(stream);
            await connection.NegotiateAsync(contexts, go);
            await script(connection);
        });
    }

    /// <summary>The byte at <paramref name="offset"/> of the fake export.</summary>
    public static byte ByteAt(long offset) => (byte)((offset * 7) + (offset >> 8) + 3);

    public static byte[] Bytes(long offset, int length) => [.. Enumerable.Range(0, length).Select(i => ByteAt(offset + i))];

    /// <summary>Waits for the script (and surfaces its exceptions).</summary>
    public Task Completion => _serve;

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        try
        {
            await _serve.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is IOException or SocketException or EndOfStreamException or TimeoutException)
        {
        }
        finally
        {
            _dir.Dispose(); // also when the script failed: its exception still reaches the test
        }
    }

    public readonly record struct Request(ushort Type, ulong Cookie, long Offset, uint Length);

    public sealed class Connection(NetworkStream stream)
    {
        public async Task NegotiateAsync(string[] contexts, GoBehaviour go)
        {
            var greeting = new byte[18];
            BinaryPrimitives.WriteUInt64BigEndian(greeting, 0x4e42444d41474943);
            BinaryPrimitives.WriteUInt64BigEndian(greeting.AsSpan(8), 0x49484156454F5054);
            BinaryPrimitives.WriteUInt16BigEndian(greeting.AsSpan(16), 3);
            await stream.WriteAsync(greeting);
            await stream.ReadExactlyAsync(new byte[4]);
            while (true)
            {
                var header = new byte[16];
                await stream.ReadExactlyAsync(header);
                uint option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
                var data = new byte[BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12))];
                await stream.ReadExactlyAsync(data);
                switch (option)
                {
                    case 8:
                        await OptionReplyAsync(option, 1, []);
                        break;
                    case 10:
                        for (int i = 0; i < contexts.Length; i++)
                        {
                            byte[] name = Encoding.UTF8.GetBytes(contexts[i]);
                            byte[] reply = new byte[4 + name.Length];
                            BinaryPrimitives.WriteUInt32BigEndian(reply, (uint)(7 + (2 * i)));
                            name.CopyTo(reply, 4);
                            await OptionReplyAsync(option, 4, reply);
                        }
                        await OptionReplyAsync(option, 1, []);
                        break;
                    case 7 when go == GoBehaviour.TlsRequired:
                        await OptionReplyAsync(option, (1u << 31) | 5, Encoding.UTF8.GetBytes("TLS first"));
                        return;
                    case 7 when go == GoBehaviour.Unsupported:
                        await OptionReplyAsync(option, (1u << 31) | 1, []);
                        break;
                    case 1: // NBD_OPT_EXPORT_NAME (old servers): size, flags, and no 124 zeroes since NO_ZEROES was agreed
                        byte[] export = new byte[10];
                        BinaryPrimitives.WriteUInt64BigEndian(export, ExportSize);
                        BinaryPrimitives.WriteUInt16BigEndian(export.AsSpan(8), 3);
                        await stream.WriteAsync(export);
                        return;
                    case 7:
                        byte[] info = new byte[12];
                        BinaryPrimitives.WriteUInt64BigEndian(info.AsSpan(2), ExportSize);
                        BinaryPrimitives.WriteUInt16BigEndian(info.AsSpan(10), 3);
                        await OptionReplyAsync(option, 3, info);
                        await OptionReplyAsync(option, 1, []);
                        return;
                    default:
                        await OptionReplyAsync(option, (1u << 31) | 1, []);
                        break;
                }
            }
        }

        private async Task OptionReplyAsync(uint option, uint type, byte[] data)
        {
            byte[] reply = new byte[20 + data.Length];
            BinaryPrimitives.WriteUInt64BigEndian(reply, 0x0003e889045565a9);
            BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(8), option);
            BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(12), type);
            BinaryPrimitives.WriteUInt32BigEndian(reply.AsSpan(16), (uint)data.Length);
            data.CopyTo(reply, 20);
            await stream.WriteAsync(reply);
        }

        public async Task<Request> ReadRequestAsync()
        {
            byte[] r = new byte[28];
            await stream.ReadExactlyAsync(r);
            return new Request(BinaryPrimitives.ReadUInt16BigEndian(r.AsSpan(6)), BinaryPrimitives.ReadUInt64BigEndian(r.AsSpan(8)),
                (long)BinaryPrimitives.ReadUInt64BigEndian(r.AsSpan(16)), BinaryPrimitives.ReadUInt32BigEndian(r.AsSpan(24)));
        }

        /// <summary>Reads <paramref name="count"/> requests and returns them ordered by offset.</summary>
        public async Task<List<Request>> ReadRequestsAsync(int count)
        {
            var requests = new List<Request>();
            for (int i = 0; i < count; i++) requests.Add(await ReadRequestAsync());
            return [.. requests.OrderBy(r => r.Offset)];
        }

        public Task ChunkAsync(ulong cookie, ushort type, bool done, byte[] payload)
        {
            byte[] chunk = new byte[20 + payload.Length];
            BinaryPrimitives.WriteUInt32BigEndian(chunk, 0x668e33ef);
            BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(4), (ushort)(done ? 1 : 0));
            BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(6), type);
            BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(8), cookie);
            BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(16), (uint)payload.Length);
            payload.CopyTo(chunk, 20);
            return stream.WriteAsync(chunk).AsTask();
        }

        public Task DataAsync(ulong cookie, long offset, int length, bool done) => RawAsync(DataChunk(cookie, offset, length, done));

        /// <summary>A whole OFFSET_DATA chunk, header included, for tests that send it in pieces.</summary>
        public static byte[] DataChunk(ulong cookie, long offset, int length, bool done)
        {
            byte[] chunk = new byte[20 + 8 + length];
            BinaryPrimitives.WriteUInt32BigEndian(chunk, 0x668e33ef);
            BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(4), (ushort)(done ? 1 : 0));
            BinaryPrimitives.WriteUInt16BigEndian(chunk.AsSpan(6), 1);
            BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(8), cookie);
            BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(16), (uint)(8 + length));
            BinaryPrimitives.WriteUInt64BigEndian(chunk.AsSpan(20), (ulong)offset);
            Bytes(offset, length).CopyTo(chunk, 28);
            return chunk;
        }

        public Task RawAsync(ReadOnlyMemory<byte> bytes) => stream.WriteAsync(bytes).AsTask();

        public Task HoleAsync(ulong cookie, long offset, int length, bool done)
        {
            byte[] payload = new byte[12];
            BinaryPrimitives.WriteUInt64BigEndian(payload, (ulong)offset);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8), (uint)length);
            return ChunkAsync(cookie, 2, done, payload);
        }

        public Task BlockStatusAsync(ulong cookie, uint contextId, bool done, params (uint Length, uint Flags)[] extents)
        {
            byte[] payload = new byte[4 + (8 * extents.Length)];
            BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
            for (int i = 0; i < extents.Length; i++)
            {
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4 + (8 * i)), extents[i].Length);
                BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(8 + (8 * i)), extents[i].Flags);
            }
            return ChunkAsync(cookie, 5, done, payload);
        }

        public Task ErrorAsync(ulong cookie, uint error, string message, bool done)
        {
            byte[] text = Encoding.UTF8.GetBytes(message);
            byte[] payload = new byte[6 + text.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, error);
            BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), (ushort)text.Length);
            text.CopyTo(payload, 6);
            return ChunkAsync(cookie, 0x8001, done, payload);
        }

        public void Close() => stream.Socket.Shutdown(SocketShutdown.Both);
    }
}
