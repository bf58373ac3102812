namespace BlockRepl.Nbd;

/// <summary>
/// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md, master). Everything on the wire is
/// big-endian. Only what this client sends or must recognise is listed.
/// </summary>
internal static class NbdProtocol
{
    public const ulong NbdMagic = 0x4e42444d41474943;        // "NBDMAGIC"
    public const ulong IHaveOpt = 0x49484156454F5054;        // "IHAVEOPT" (newstyle)
    public const ulong OldstyleMagic = 0x0000420281861253;
    public const ulong OptionReplyMagic = 0x0003e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    // Handshake flags (server) and client flags.
    public const ushort FlagFixedNewstyle = 1 << 0;
    public const ushort FlagNoZeroes = 1 << 1;
    public const uint ClientFlagFixedNewstyle = 1 << 0;
    public const uint ClientFlagNoZeroes = 1 << 1;

    // Options.
    public const uint OptExportName = 1;
    public const uint OptAbort = 2;
    public const uint OptGo = 7;
    public const uint OptStructuredReply = 8;
    public const uint OptListMetaContext = 9;
    public const uint OptSetMetaContext = 10;

    // Option reply types; errors have bit 31 set.
    public const uint RepAck = 1;
    public const uint RepServer = 2;
    public const uint RepInfo = 3;
    public const uint RepMetaContext = 4;
    public const uint RepFlagError = 1u << 31;
    public const uint RepErrUnsup = RepFlagError | 1;
    public const uint RepErrPolicy = RepFlagError | 2;
    public const uint RepErrInvalid = RepFlagError | 3;
    public const uint RepErrPlatform = RepFlagError | 4;
    public const uint RepErrTlsReqd = RepFlagError | 5;
    public const uint RepErrUnknown = RepFlagError | 6;
    public const uint RepErrShutdown = RepFlagError | 7;
    public const uint RepErrBlockSizeReqd = RepFlagError | 8;
    public const uint RepErrTooBig = RepFlagError | 9;
    public const uint RepErrExtHeaderReqd = RepFlagError | 10;

    // NBD_INFO_* in NBD_OPT_GO.
    public const ushort InfoExport = 0;
    public const ushort InfoBlockSize = 3;

    // Commands and command flags.
    public const ushort CmdRead = 0;
    public const ushort CmdDisc = 2;
    public const ushort CmdBlockStatus = 7;

    // Structured reply chunk flags and types.
    public const ushort ReplyFlagDone = 1;
    public const ushort ReplyTypeNone = 0;
    public const ushort ReplyTypeOffsetData = 1;
    public const ushort ReplyTypeOffsetHole = 2;
    public const ushort ReplyTypeBlockStatus = 5;
    public const ushort ReplyTypeErrorBit = 1 << 15;
    public const ushort ReplyTypeError = ReplyTypeErrorBit | 1;
    public const ushort ReplyTypeErrorOffset = ReplyTypeErrorBit | 2;

    public const int OptionHeaderSize = 16;        // magic, option, length
    public const int OptionReplyHeaderSize = 20;   // magic, option, type, length
    public const int RequestSize = 28;
    public const int SimpleReplySize = 16;
    public const int StructuredReplyHeaderSize = 20;

    /// <summary>Default and interoperable maximum payload when the server sends no NBD_INFO_BLOCK_SIZE.</summary>
    public const int DefaultMaxPayload = 32 * 1024 * 1024;

    /// <summary>Strings (names, messages) MUST be at most 4096 bytes.</summary>
    public const int MaxStringLength = 4096;

    /// <summary>Upper bound for an option reply payload we are willing to buffer.</summary>
    public const int MaxOptionReplyLength = 1 << 20;

    /// <summary>Human-readable name of an NBD_REP_ERR_* value.</summary>
    public static string OptionErrorName(uint type) => type switch
    {
        RepErrUnsup => "NBD_REP_ERR_UNSUP",
        RepErrPolicy => "NBD_REP_ERR_POLICY",
        RepErrInvalid => "NBD_REP_ERR_INVALID",
        RepErrPlatform => "NBD_REP_ERR_PLATFORM",
        RepErrTlsReqd => "NBD_REP_ERR_TLS_REQD",
        RepErrUnknown => "NBD_REP_ERR_UNKNOWN",
        RepErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        RepErrBlockSizeReqd => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        RepErrTooBig => "NBD_REP_ERR_TOO_BIG",
        RepErrExtHeaderReqd => "NBD_REP_ERR_EXT_HEADER_REQD",
        _ => $"NBD_REP_ERR 0x{type:x8}",
    };

    public static string OptionName(uint option) => option switch
    {
        OptExportName => "NBD_OPT_EXPORT_NAME",
        OptAbort => "NBD_OPT_ABORT",
        OptGo => "NBD_OPT_GO",
        OptStructuredReply => "NBD_OPT_STRUCTURED_REPLY",
        OptListMetaContext => "NBD_OPT_LIST_META_CONTEXT",
        OptSetMetaContext => "NBD_OPT_SET_META_CONTEXT",
        _ => $"option {option}",
    };

    /// <summary>Name of an NBD error value (errno-like); unknown values are to be treated as EINVAL.</summary>
    public static string ErrorName(uint error) => error switch
    {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => $"error {error}",
    };
}
