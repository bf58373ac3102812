using System.Buffers.Binary;
using BlockRepl.Core.Formats;

namespace BlockRepl.Core.Tests;

public class TreeNodeTests
{
    private static ChunkId[] Ids(int count, params int[] zeroAt)
    {
        var ids = new ChunkId[count];
        for (int i = 0; i < count; i++) ids[i] = zeroAt.Contains(i) ? ChunkId.Zero : TestData.Id(i + 1);
        return ids;
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(0, ChunkGeometry.LeafFanout)]
    [InlineData(1, ChunkGeometry.NodeFanout)]
    [InlineData(3, 17)]
    public void NodeRoundTrips(int level, int count)
    {
        var children = Ids(count);
        var buffer = new byte[TreeNode.HeaderSize + count * ChunkId.Size];
        int size = TreeNode.Encode(level, children, buffer);
        Assert.Equal(buffer.Length, size);

        var decoded = new ChunkId[ChunkGeometry.NodeFanout];
        decoded.AsSpan().Fill(TestData.Id(999));
        Assert.Equal(level, TreeNode.Decode(buffer.AsSpan(0, size), decoded, "node"));
        Assert.Equal(children, decoded[..count]);
        Assert.All(decoded[count..], id => Assert.True(id.IsZero));
    }

    [Fact]
    public void TrailingZeroIdsAreTrimmedAndInteriorZerosKept()
    {
        var children = Ids(64, 3, 10, 60, 61, 62, 63);
        var buffer = new byte[TreeNode.HeaderSize + 64 * ChunkId.Size];
        int size = TreeNode.Encode(0, children, buffer);
        Assert.Equal(TreeNode.HeaderSize + 60 * ChunkId.Size, size);
        Assert.Equal(60, BinaryPrimitives.ReadUInt16LittleEndian(buffer.AsSpan(2)));

        var decoded = new ChunkId[64];
        TreeNode.Decode(buffer.AsSpan(0, size), decoded, "node");
        Assert.Equal(children, decoded);
        Assert.True(decoded[3].IsZero);
        Assert.True(decoded[10].IsZero);
    }

    [Fact]
    public void AllZeroNodeIsJustAHeader()
    {
        var buffer = new byte[TreeNode.HeaderSize];
        int size = TreeNode.Encode(2, new ChunkId[256], buffer);
        Assert.Equal(TreeNode.HeaderSize, size);
        var decoded = new ChunkId[256];
        Assert.Equal(2, TreeNode.Decode(buffer, decoded, "node"));
        Assert.All(decoded, id => Assert.True(id.IsZero));
    }

    [Fact]
    public void EncodingIsDeterministicSoEqualNodesShareAnId()
    {
        var a = new byte[TreeNode.HeaderSize + 64 * ChunkId.Size];
        var b = new byte[a.Length];
        b.AsSpan().Fill(0xEE);
        int na = TreeNode.Encode(0, Ids(64), a);
        int nb = TreeNode.Encode(0, Ids(64), b);
        Assert.Equal(ChunkId.Compute(a.AsSpan(0, na)), ChunkId.Compute(b.AsSpan(0, nb)));
    }

    [Fact]
    public void TooSmallDestinationThrows()
    {
        Assert.Throws<ArgumentException>(() => TreeNode.Encode(0, Ids(4), new byte[TreeNode.HeaderSize + 3 * ChunkId.Size]));
    }

    [Fact]
    public void NodeShorterThanItsHeaderIsCorrupt()
    {
        Assert.Throws<CorruptDataException>(() => TreeNode.Decode(new byte[TreeNode.HeaderSize - 1], new ChunkId[64], "node"));
    }

    [Fact]
    public void NodeSizeNotMatchingItsCountIsCorrupt()
    {
        var buffer = new byte[TreeNode.HeaderSize + 5 * ChunkId.Size];
        int size = TreeNode.Encode(0, Ids(5), buffer);
        var children = new ChunkId[64];
        Assert.Throws<CorruptDataException>(() => TreeNode.Decode(buffer.AsSpan(0, size - 1), children, "node"));
        Assert.Throws<CorruptDataException>(() => TreeNode.Decode(buffer.AsSpan(0, size - ChunkId.Size), children, "node"));
        var longer = buffer.Concat(new byte[ChunkId.Size]).ToArray();
        Assert.Throws<CorruptDataException>(() => TreeNode.Decode(longer, children, "node"));
    }

    [Fact]
    public void CountAboveTheFanoutIsCorrupt()
    {
        var buffer = new byte[TreeNode.HeaderSize + 65 * ChunkId.Size];
        int size = TreeNode.Encode(0, Ids(65), buffer);
        Assert.Throws<CorruptDataException>(() => TreeNode.Decode(buffer.AsSpan(0, size), new ChunkId[64], "leaf"));
    }
}
