namespace BlockRepl.Ebs.Endpoint;

/// <summary>An EBS error answer (ref/ebs.md §10): type, HTTP status, optional Reason enum value.</summary>
internal sealed class EbsError(int status, string type, string message, string? reason = null) : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Reason { get; } = reason;

    public static EbsError Validation(string message, string reason = "INVALID_PARAMETER_VALUE") => new(400, "ValidationException", message, reason);
    public static EbsError NotFound(string snapshotId) => new(404, "ResourceNotFoundException", $"The snapshot '{snapshotId}' does not exist.", "SNAPSHOT_NOT_FOUND");
    public static EbsError NotReadable(string snapshotId, string status) =>
        new(404, "ResourceNotFoundException", $"The snapshot '{snapshotId}' is {status}; its blocks can be read only once it is completed.", "SNAPSHOT_NOT_FOUND");
    public static EbsError Throttled(string message) => new(400, "RequestThrottledException", message, "RESOURCE_LEVEL_THROTTLE");
    public static EbsError Conflict(string message) => new(409, "ConflictException", message);
    public static EbsError Quota(string message) => new(402, "ServiceQuotaExceededException", message, "DEPENDENCY_SERVICE_QUOTA_EXCEEDED");
    public static EbsError Internal(string message) => new(500, "InternalServerException", message);
    public static EbsError BadSignature(string message) => new(403, "InvalidSignatureException", message);
    public static EbsError UnknownKey(string message) => new(403, "UnrecognizedClientException", message);
    public static EbsError MissingAuth(string message) => new(403, "MissingAuthenticationTokenException", message);
    public static EbsError UnknownOperation(string method, string path) => new(404, "UnknownOperationException", $"No EBS operation matches {method} {path}.");
}
