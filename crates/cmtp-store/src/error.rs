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
    /// A name that is not one safe path component (see `ensure_path_safe`).
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
    /// The mail log's writer thread is gone (it panicked): nothing more can be written
    /// until the store is opened again.
    #[error("the mail log's writer stopped; reopen the store")]
    WriterStopped,
    /// An earlier `write` of this delivery failed or was cancelled midway, so its data
    /// is not what was sent: it can be neither continued nor committed.
    #[error("an earlier write of this delivery did not complete")]
    DeliveryIncomplete,
    /// A database backend (PostgreSQL) failed: unreachable, connection lost, a statement
    /// refused. Nothing of the failed call is acknowledged; the backend reconnects.
    #[error("database: {0}")]
    Database(String),
    /// The backend does not implement this (optional) operation.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
    /// The commit would take the mailbox past the limit given to
    /// [`crate::Delivery::commit_within`]: nothing was stored.
    #[error("the mailbox is over its quota")]
    OverQuota,
    /// A blocking task of the store panicked or was cancelled.
    #[error("a store task failed: {0}")]
    TaskFailed(String),
}
