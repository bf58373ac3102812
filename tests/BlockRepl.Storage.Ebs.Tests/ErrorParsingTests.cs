using System.Text;

namespace BlockRepl.Storage.Ebs.Tests;

public sealed class ErrorParsingTests
{
    private static EbsErrors.ParsedError Parse(int status, string? header, string body) =>
        EbsErrors.Parse(status, header, Encoding.UTF8.GetBytes(body));

    [Fact]
    public void Header_wins_over_body()
    {
        var e = Parse(400, "RequestThrottledException", """{"__type":"ValidationException","message":"slow down","Reason":"ACCOUNT_THROTTLED"}""");
        Assert.Equal("RequestThrottledException", e.Type);
        Assert.Equal("slow down", e.Message);
        Assert.Equal("ACCOUNT_THROTTLED", e.Reason);
    }

    [Theory]
    [InlineData("ValidationException:http://internal.amazon.com/coral/com.amazon.coral.validate/", "ValidationException")]
    [InlineData("com.amazonaws.ebs#ResourceNotFoundException", "ResourceNotFoundException")]
    [InlineData("aws.ebs#RequestThrottledException:http://x/", "RequestThrottledException")]
    [InlineData("  InternalServerException ", "InternalServerException")]
    [InlineData("", null)]
    [InlineData(null, null)]
    public void Namespace_and_suffix_are_stripped(string? raw, string? expected) => Assert.Equal(expected, EbsErrors.NormalizeType(raw));

    [Fact]
    public void Body_type_then_code()
    {
        Assert.Equal("ConflictException", Parse(409, null, """{"__type":"com.amazonaws.ebs#ConflictException","Message":"token reused"}""").Type);
        Assert.Equal("ServiceQuotaExceededException", Parse(402, null, """{"code":"ServiceQuotaExceededException"}""").Type);
        Assert.Equal("ConflictException", Parse(409, "", """{"__type":"ConflictException","code":"Other"}""").Type);
    }

    [Fact]
    public void Message_and_reason_keys_are_case_insensitive()
    {
        var upper = Parse(400, null, """{"__type":"ValidationException","Message":"Failed to read block data","Reason":"INVALID_PARAMETER_VALUE"}""");
        Assert.Equal("Failed to read block data", upper.Message);
        Assert.Equal("INVALID_PARAMETER_VALUE", upper.Reason);
        var lower = Parse(400, null, """{"__type":"ValidationException","message":"m","reason":"INVALID_BLOCK_TOKEN","Extra":{"a":[1,2]}}""");
        Assert.Equal("m", lower.Message);
        Assert.Equal("INVALID_BLOCK_TOKEN", lower.Reason);
    }

    [Theory]
    [InlineData(503, "InternalServerException")]
    [InlineData(500, "InternalServerException")]
    [InlineData(404, "ResourceNotFoundException")]
    [InlineData(403, "AccessDeniedException")]
    [InlineData(400, "UnknownError")]
    public void Untyped_errors_fall_back_to_the_status(int status, string expected) =>
        Assert.Equal(expected, Parse(status, null, "<html>Bad Gateway</html>").Type);

    [Fact]
    public void Null_members_and_empty_body_are_tolerated()
    {
        Assert.Null(Parse(400, "ValidationException", """{"message":null,"Reason":null}""").Message);
        Assert.Equal("ValidationException", Parse(400, "ValidationException", "").Type);
    }

    [Theory]
    [InlineData("RequestThrottledException", 400, null, true)]
    [InlineData("ThrottlingException", 400, null, true)]
    [InlineData("ConcurrentLimitExceededException", 400, null, true)]
    [InlineData("InternalServerException", 500, null, true)]
    [InlineData("UnknownError", 502, null, true)]
    [InlineData("AttemptTimeout", 0, null, true)]
    [InlineData("TransportError", 0, null, true)]
    [InlineData("ChecksumMismatch", 200, null, true)]
    [InlineData("ValidationException", 400, "Failed to read block data", true)]
    [InlineData("ValidationException", 400, "Invalid block token", false)]
    [InlineData("AccessDeniedException", 403, null, false)]
    [InlineData("ConflictException", 409, null, false)]
    [InlineData("ServiceQuotaExceededException", 402, null, false)]
    [InlineData("ResourceNotFoundException", 404, null, false)]
    public void Retry_is_decided_by_error_type(string type, int status, string? message, bool retryable)
    {
        var e = new EbsException("x", type, null, status) { ServiceMessage = message };
        Assert.Equal(retryable, EbsErrors.IsRetryable(e));
    }
}
