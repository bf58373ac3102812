using System.Security.Cryptography;
using Amazon.Runtime;
using BlockRepl.IntegrationTests.Fixtures;
using BlockRepl.Storage.Ebs;

namespace BlockRepl.IntegrationTests;

/// <summary>
/// <see cref="EbsClient"/> over real sockets against moto_server's EBS routes: a smoke test of the transport
/// (SocketsHttpHandler, Content-Length bodies, custom header names, the http precomputed-hash signing path,
/// JSON and block streaming), not of EBS semantics. moto ignores signatures and checksums, reports BlockSize 512,
/// answers 200 instead of 201/202, lists blocks in write order, completes synchronously and returns 500 for an unknown snapshot; the
/// conformance tests belong to src/BlockRepl.Ebs.Endpoint.
/// </summary>
[Collection("moto")]
public sealed class EbsClientMotoSmokeTests(MotoServer server)
{
    [Fact]
    public async Task StartPutCompleteListGet_RoundTripsBlocksOverRealHttp()
    {
        using var client = EbsClient.Create(new EbsClientOptions
        {
            Region = server.Region,
            EndpointUrl = new Uri(server.Endpoint),
            Credentials = new BasicAWSCredentials(server.AccessKey, server.SecretKey),
            MaxAttempts = 2,
        });
        var info = await client.StartSnapshotAsync(new StartSnapshotRequest { VolumeSizeGiB = 1, ClientToken = Guid.NewGuid().ToString(), TimeoutMinutes = 60 });
        Assert.StartsWith("snap-", info.SnapshotId);
        Assert.Equal("pending", info.Status);

        var blocks = new SortedDictionary<int, byte[]>
        {
            [0] = new byte[EbsLimits.BlockSize],
            [3] = Enumerable.Range(0, EbsLimits.BlockSize).Select(k => (byte)(k % 251)).ToArray(),
            [2047] = Enumerable.Repeat((byte)0xA5, EbsLimits.BlockSize).ToArray(),
        };
        using var linear = new LinearChecksum();
        await Task.WhenAll(blocks.Select(b => client.PutSnapshotBlockAsync(info.SnapshotId, b.Key, b.Value, SHA256.HashData(b.Value), progressPercent: 50)));
        foreach (var (index, data) in blocks) linear.Append(index, SHA256.HashData(data));

        string status = await client.CompleteSnapshotAsync(info.SnapshotId, linear.Count, linear.GetDigest());
        Assert.Contains(status, new[] { "pending", "completed" });
        await client.WaitForCompletedAsync(info.SnapshotId, TimeSpan.FromSeconds(30));

        var page = await client.ListSnapshotBlocksAsync(info.SnapshotId, maxResults: 100);
        // moto lists in write order; the real service lists ascending.
        Assert.Equal(blocks.Keys, page.Blocks.Select(b => b.BlockIndex).Order());
        Assert.Null(page.NextToken);
        byte[] destination = new byte[EbsLimits.BlockSize];
        foreach (var block in page.Blocks)
        {
            Array.Clear(destination);
            Assert.Equal(EbsLimits.BlockSize, await client.GetSnapshotBlockAsync(info.SnapshotId, block.BlockIndex, block.BlockToken, destination));
            Assert.Equal(blocks[block.BlockIndex], destination);
        }
        Assert.Equal(0, client.Stats.Retries);
    }
}
