//! CMTP/1 wire protocol, sans-IO.
//!
//! This crate turns bytes into typed protocol values and back. It performs no I/O,
//! owns no sockets or files and does no cryptography: callers move bytes in and out,
//! and verify or produce signatures over the bytes each type exposes
//! (`signed_bytes`). Every decoder is incremental (`Ok(None)` means "need more
//! bytes"), enforces its limits on the bytes present, never panics and never
//! allocates more than a small, fixed bound beyond what the caller passed in.
//!
//! The protocol itself is described in `docs/protocol.md`.

#![warn(missing_docs)]

pub mod body;
pub mod command;
pub mod legacy;
pub mod limits;
pub mod log;
pub mod mbox;
pub mod message;
pub mod name;
pub mod opaque;
mod params;
pub mod reply;
pub mod submit;
mod text;

pub use body::{AttachmentPlain, Body, BodyError, InternalBody};
pub use command::{Command, CommandError};
pub use limits::{MAX_COMMAND_WORD, MAX_PARAM, MessageLimits};
pub use mbox::{FetchPart, ListEntry, MboxError, MboxKind, MboxRequest};
pub use message::{Envelope, MessageDecoder, MessageError, MessageEvent};
pub use name::{
    NameError, canonical_account, fold, same_domain, validate_account, validate_domain,
    validate_name,
};
pub use reply::ReplyError;
pub use submit::SubmitRequest;

/// Length of an Ed25519 detached signature on the wire.
pub const SIG_LEN: usize = 64;
/// Length of an Ed25519 public key on the wire.
pub const KEY_LEN: usize = 32;

/// Reads a big-endian `u32` from the first four bytes of `b` (caller checks length).
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Reads a big-endian `u64` from the first eight bytes of `b` (caller checks length).
pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
