//! Protocol limits (spec §2, §5.5).

/// Longest command word, in bytes, before its NUL (`KEYREQUEST` is 10).
pub const MAX_COMMAND_WORD: usize = 10;

/// Longest parameter (account, domain, ...) in bytes, before its NUL.
pub const MAX_PARAM: usize = 255;

/// Limits a [`crate::MessageDecoder`] enforces against the lengths a message announces,
/// before it consumes the bytes they announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest whole message in bytes (header, names, log, body, every attachment
    /// length field and attachment).
    pub max_total: u64,
    /// Largest `attachment_count`.
    pub max_attachments: u32,
    /// Largest `log_length`.
    pub max_log: u64,
}

impl MessageLimits {
    /// Default largest message: 64 MiB (spec §5.5).
    pub const DEFAULT_MAX_TOTAL: u64 = 64 * 1024 * 1024;
    /// Default largest attachment count.
    pub const DEFAULT_MAX_ATTACHMENTS: u32 = 64;
    /// Default largest log: 64 KiB.
    pub const DEFAULT_MAX_LOG: u64 = 64 * 1024;

    /// Limits that accept anything the wire format can express (for tools that only
    /// inspect stored messages; never for a server reading from the network).
    pub const UNLIMITED: MessageLimits = MessageLimits {
        max_total: u64::MAX,
        max_attachments: u32::MAX,
        max_log: u64::MAX,
    };
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_total: Self::DEFAULT_MAX_TOTAL,
            max_attachments: Self::DEFAULT_MAX_ATTACHMENTS,
            max_log: Self::DEFAULT_MAX_LOG,
        }
    }
}
