namespace BlockRepl.Core.Tests;

public class ZeroDetectorTests
{
    public static TheoryData<int> Lengths => [1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 65, 127, 129, 255, 4095, 4097, 65536, 65537, 524288];

    [Theory]
    [MemberData(nameof(Lengths))]
    public void AllZeroBufferIsZero(int length)
    {
        Assert.True(ZeroDetector.IsAllZero(new byte[length]));
    }

    [Fact]
    public void EmptySpanIsZero()
    {
        Assert.True(ZeroDetector.IsAllZero(ReadOnlySpan<byte>.Empty));
    }

    [Theory]
    [MemberData(nameof(Lengths))]
    public void OneNonZeroByteAtFirstMiddleOrLastPositionIsDetected(int length)
    {
        foreach (int position in new[] { 0, length / 2, length - 1 })
        {
            var data = new byte[length];
            data[position] = 1;
            Assert.False(ZeroDetector.IsAllZero(data), $"length {length}, non-zero byte at {position}");
        }
    }

    [Fact]
    public void NonZeroByteAtEveryPositionOfAnOddLengthIsDetected()
    {
        // Covers the vector body and the scalar tail at every alignment.
        const int length = 259;
        var data = new byte[length];
        for (int i = 0; i < length; i++)
        {
            data[i] = 0x80;
            Assert.False(ZeroDetector.IsAllZero(data), $"non-zero byte at {i}");
            data[i] = 0;
        }
        Assert.True(ZeroDetector.IsAllZero(data));
    }

    [Fact]
    public void UnalignedSliceIsCheckedOnlyWithinItsBounds()
    {
        var data = new byte[1000];
        data[0] = 0xFF;
        data[999] = 0xFF;
        Assert.True(ZeroDetector.IsAllZero(data.AsSpan(1, 998)));
        Assert.False(ZeroDetector.IsAllZero(data.AsSpan(0, 998)));
        Assert.False(ZeroDetector.IsAllZero(data.AsSpan(3, 997)));
    }
}
