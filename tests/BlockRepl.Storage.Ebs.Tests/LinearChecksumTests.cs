using System.Security.Cryptography;
using System.Text;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>The LINEAR vectors of the EBS reference §5.</summary>
public sealed class LinearChecksumTests
{
    private static readonly byte[] Block0 = TestVectors.Mod251Block();
    private static readonly byte[] Block3 = TestVectors.Filled(0x00);
    private static readonly byte[] Block5 = TestVectors.Filled(0x01);

    [Fact]
    public void Block_checksums_match_the_reference()
    {
        Assert.Equal("YdHZxXRb2qT6s5JAZRvCQqUYaxU5P9R1CC/PboT0AKs=", EbsChecksums.Block(Block0));
        Assert.Equal("B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=", EbsChecksums.Block(Block3));
        Assert.Equal("M6FQvOsTwamSIx5ltPrRaBUhL8Bs20CJltMu6yzvnrs=", EbsChecksums.Block(Block5));
    }

    [Fact]
    public void Incremental_builder_concatenates_raw_digests_in_index_order()
    {
        using var linear = new LinearChecksum();
        linear.Append(0, SHA256.HashData(Block0));
        linear.Append(3, SHA256.HashData(Block3));
        linear.Append(5, SHA256.HashData(Block5));
        Assert.Equal(3, linear.Count);
        Assert.Equal("3hkXyCDr36rg2eDqBxV5ZdzJOm+UCWAYaDS7rB6bzM8=", linear.GetBase64());
    }

    [Fact]
    public void Static_helper_sorts_by_index()
    {
        var blocks = new[] { (5, SHA256.HashData(Block5)), (0, SHA256.HashData(Block0)), (3, SHA256.HashData(Block3)) };
        Assert.Equal("3hkXyCDr36rg2eDqBxV5ZdzJOm+UCWAYaDS7rB6bzM8=", EbsChecksums.Linear(blocks));
    }

    [Fact]
    public void Concatenating_base64_strings_is_the_wrong_variant_and_differs()
    {
        string concatenated = EbsChecksums.Block(Block0) + EbsChecksums.Block(Block3) + EbsChecksums.Block(Block5);
        string wrong = Convert.ToBase64String(SHA256.HashData(Encoding.ASCII.GetBytes(concatenated)));
        Assert.Equal("nHVaMBxBlSMN/QMEnS/+mx0VTBz+7kI7sDHrTpqWDWc=", wrong);
        Assert.NotEqual(wrong, EbsChecksums.Linear([(0, SHA256.HashData(Block0)), (3, SHA256.HashData(Block3)), (5, SHA256.HashData(Block5))]));
    }

    [Fact]
    public void Out_of_order_or_duplicate_index_is_rejected()
    {
        using var linear = new LinearChecksum();
        linear.Append(4, new byte[32]);
        Assert.Throws<ArgumentOutOfRangeException>(() => linear.Append(4, new byte[32]));
        Assert.Throws<ArgumentOutOfRangeException>(() => linear.Append(2, new byte[32]));
        Assert.Throws<ArgumentException>(() => linear.Append(9, new byte[31]));
    }

    [Fact]
    public void Digest_can_be_taken_once()
    {
        using var linear = new LinearChecksum();
        linear.Append(0, new byte[32]);
        _ = linear.GetDigest();
        Assert.Throws<ObjectDisposedException>(() => linear.Append(1, new byte[32]));
    }
}
