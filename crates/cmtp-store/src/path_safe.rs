//! Path safety: the store's own gate between names and file paths.
//!
//! This is deliberately *not* the protocol's name rule (`cmtp_proto::validate_name`,
//! spec §2: no control characters, no `\`, …): that rule belongs to the protocol and is
//! applied by the server before a name reaches the store. The store checks only what
//! keeps it safe whatever its caller does — that a name is exactly one ordinary path
//! component — so a bug in a caller can never make it write outside its directories.

use crate::{Result, StoreError};

/// Longest path component Linux accepts (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// Checks that `name` is one ordinary path component: not empty, not `.` or `..`, no
/// `/` or NUL, at most 255 bytes. Anything else (control characters, `\`, spaces) is
/// the protocol's business, not a path-safety one.
pub fn ensure_path_safe(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(StoreError::InvalidName("empty"));
    }
    if name.len() > NAME_MAX {
        return Err(StoreError::InvalidName("longer than 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(StoreError::InvalidName("'.' or '..'"));
    }
    if name.contains(['/', '\0']) {
        return Err(StoreError::InvalidName("contains '/' or NUL"));
    }
    Ok(())
}
