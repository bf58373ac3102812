using System.Text;
using System.Text.Json;

namespace BlockRepl.Storage.Ebs.Tests;

/// <summary>The raw response examples of the EBS user guide (reference §2, §7, §8), nulls and exponents included.</summary>
public sealed class JsonParsingTests
{
    private static readonly EbsCall Call = new() { Operation = "Test", Method = HttpMethod.Get, Uri = new Uri("http://x/") };

    [Fact]
    public void StartSnapshot_response_with_explicit_nulls_and_unknown_members()
    {
        const string json = """
            {"BlockSize": 524288, "Description": null, "OwnerId": "138695307491", "Progress": null,
             "SnapshotId": "snap-052EXAMPLEc85d8dd", "StartTime": null, "Status": "pending",
             "Tags": null, "VolumeSize": 8}
            """;
        var dto = JsonSerializer.Deserialize(json, EbsJsonContext.Default.StartSnapshotResponseDto)!;
        Assert.Equal("snap-052EXAMPLEc85d8dd", dto.SnapshotId);
        Assert.Equal("pending", dto.Status);
        Assert.Equal(8, dto.VolumeSize);
        Assert.Equal(524288, dto.BlockSize);
        Assert.Equal("138695307491", dto.OwnerId);
        Assert.Null(dto.StartTime);
        Assert.Null(dto.Tags);
    }

    [Fact]
    public void ListSnapshotBlocks_with_an_exponent_expiry()
    {
        const string json = """
            {"BlockSize":524288,"Blocks":[{"BlockIndex":0,"BlockToken":"AAUBAcuWqOCnDNuKle11s7IIX6jp6FYcC/q8oT93913HhvLvA+3JRrSybp/0"},
             {"BlockIndex":1536,"BlockToken":"AAUBAWudwfmofcrQhGVlLwuRKm2b8ZXPiyrgoykTRC6IU1NbxKWDY1pPjvnV"}],
             "ExpiryTime":1.59298379649E9,"VolumeSize":3}
            """;
        var page = EbsClient.ToPage(Call, JsonSerializer.Deserialize(json, EbsJsonContext.Default.ListSnapshotBlocksResponseDto)!);
        Assert.Equal([0, 1536], page.Blocks.Select(b => b.BlockIndex));
        Assert.Equal("AAUBAcuWqOCnDNuKle11s7IIX6jp6FYcC/q8oT93913HhvLvA+3JRrSybp/0", page.Blocks[0].BlockToken);
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1592983796490), page.ExpiryTime);
        Assert.Null(page.NextToken);
        Assert.Equal(3, page.VolumeSizeGiB);
        Assert.Equal(524288, page.BlockSize);
    }

    [Fact]
    public void ListChangedBlocks_with_missing_second_tokens_and_a_next_token()
    {
        const string json = """
            {"BlockSize":524288,"ChangedBlocks":[
              {"BlockIndex":0,"FirstBlockToken":"AAUBAVaW","SecondBlockToken":"AAUBASxz"},
              {"BlockIndex":6002,"FirstBlockToken":"AAABASqX"},
              {"BlockIndex":6003,"FirstBlockToken":"AAABASqY","SecondBlockToken":null}],
             "ExpiryTime":1.592976647009E9,"VolumeSize":3,"NextToken":"AAADARqE"}
            """;
        var page = EbsClient.ToPage(Call, JsonSerializer.Deserialize(json, EbsJsonContext.Default.ListChangedBlocksResponseDto)!);
        Assert.Equal(3, page.ChangedBlocks.Count);
        Assert.Equal(new EbsChangedBlock(6002, "AAABASqX", null), page.ChangedBlocks[1]);
        Assert.Null(page.ChangedBlocks[2].SecondBlockToken);
        Assert.Equal("AAADARqE", page.NextToken);
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1592976647009), page.ExpiryTime);
    }

    [Fact]
    public void Empty_page_with_a_next_token_and_null_lists()
    {
        var page = EbsClient.ToPage(Call, JsonSerializer.Deserialize("""{"Blocks":null,"NextToken":"abc=","ExpiryTime":1576287332.806,"VolumeSize":null,"BlockSize":null}""",
            EbsJsonContext.Default.ListSnapshotBlocksResponseDto)!);
        Assert.Empty(page.Blocks);
        Assert.Equal("abc=", page.NextToken);
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1576287332806), page.ExpiryTime);
        Assert.Equal(EbsLimits.BlockSize, page.BlockSize);
    }

    [Fact]
    public void Empty_next_token_means_last_page()
    {
        var page = EbsClient.ToPage(Call, JsonSerializer.Deserialize("""{"Blocks":[],"NextToken":""}""", EbsJsonContext.Default.ListSnapshotBlocksResponseDto)!);
        Assert.Null(page.NextToken);
    }

    [Fact]
    public void A_block_without_a_token_is_an_invalid_response()
    {
        var dto = JsonSerializer.Deserialize("""{"Blocks":[{"BlockIndex":1,"BlockToken":null}]}""", EbsJsonContext.Default.ListSnapshotBlocksResponseDto)!;
        var e = Assert.Throws<EbsException>(() => EbsClient.ToPage(Call, dto));
        Assert.Equal(EbsErrorTypes.InvalidResponse, e.ErrorType);
    }

    [Fact]
    public void Complete_response_and_start_request_body()
    {
        Assert.Equal("pending", JsonSerializer.Deserialize("""{"Status":"pending"}""", EbsJsonContext.Default.CompleteSnapshotResponseDto)!.Status);
        var body = new StartSnapshotBody
        {
            VolumeSize = 16, ClientToken = "t", ParentSnapshotId = "snap-1", Description = "d",
            Tags = [new TagDto { Key = "k", Value = "v" }],
        };
        Assert.Equal("""{"VolumeSize":16,"ClientToken":"t","ParentSnapshotId":"snap-1","Tags":[{"Key":"k","Value":"v"}],"Description":"d"}""",
            Encoding.UTF8.GetString(JsonSerializer.SerializeToUtf8Bytes(body, EbsJsonContext.Default.StartSnapshotBody)));
    }
}
