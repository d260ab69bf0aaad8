//! The store's error type.

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error from the operating system.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The user (or object) already exists.
    #[error("already exists")]
    AlreadyExists,
    /// A name that must never reach a path or the log (see `validate_name`).
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// Metadata that does not fit the format (a field over 255 bytes).
    #[error("invalid message metadata: {0}")]
    InvalidMeta(&'static str),
    /// On-disk data that fails its checks somewhere other than a torn tail.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Another process holds the writer lock (a server is running).
    #[error("the mail store is locked by another process (is cmtpd running?)")]
    Locked,
    /// A write was attempted on a read-only store.
    #[error("the store is open read-only")]
    ReadOnly,
    /// An earlier write or fsync failed; nothing more is accepted until a restart
    /// (after a failed fsync the page cache cannot be trusted).
    #[error("the store failed earlier and accepts no more writes; restart to recover")]
    Failed,
}
