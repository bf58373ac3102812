using BlockRepl.Core.Formats;

namespace BlockRepl.Core.Tests;

public class ChunkGeometryTests
{
    [Theory]
    [InlineData(0L, 1)]
    [InlineData(1L, 1)]
    [InlineData(64L, 1)]
    [InlineData(65L, 2)]
    [InlineData(64L * 256, 2)]
    [InlineData(64L * 256 + 1, 3)]
    [InlineData(64L * 256 * 256, 3)]
    [InlineData(64L * 256 * 256 + 1, 4)]
    public void TreeLevelsCoverEveryChunk(long chunkCount, int levels)
    {
        Assert.Equal(levels, ChunkGeometry.TreeLevels(chunkCount));
    }

    [Fact]
    public void OneTebibyteAtDefaultChunksNeedsFourLevels()
    {
        long chunks = ChunkGeometry.ChunkCount(1L << 40, ChunkGeometry.DefaultChunkSize);
        Assert.Equal(1L << 24, chunks);
        Assert.Equal(4, ChunkGeometry.TreeLevels(chunks));
    }

    [Theory]
    [InlineData(0L, 65536, 0L)]
    [InlineData(1L, 65536, 1L)]
    [InlineData(65536L, 65536, 1L)]
    [InlineData(65537L, 65536, 2L)]
    [InlineData(10L * 524288 + 4096, 524288, 11L)]
    public void ChunkCountRoundsUpAPartialLastChunk(long volumeSize, int chunkSize, long expected)
    {
        Assert.Equal(expected, ChunkGeometry.ChunkCount(volumeSize, chunkSize));
    }

    [Theory]
    [InlineData(4096, true)]
    [InlineData(65536, true)]
    [InlineData(524288, true)]
    [InlineData(2048, false)]
    [InlineData(1048576, false)]
    [InlineData(65535, false)]
    [InlineData(98304, false)]
    [InlineData(0, false)]
    [InlineData(-65536, false)]
    public void ChunkSizeMustBeAPowerOfTwoFrom4KTo512K(int size, bool valid)
    {
        Assert.Equal(valid, ChunkGeometry.IsValidChunkSize(size));
    }

    [Fact]
    public void BlockSizeIsTheEbsBlockAndAMultipleOfTheDefaultChunk()
    {
        Assert.Equal(512 * 1024, ChunkGeometry.BlockSize);
        Assert.Equal(0, ChunkGeometry.BlockSize % ChunkGeometry.DefaultChunkSize);
    }
}
