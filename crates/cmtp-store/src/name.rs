//! Name safety: the only gate between names and file paths.

use crate::{Result, StoreError};

/// Checks a user or mailbox name before it can reach a path: 1..=255 bytes, not `.` or
/// `..`, no `/`, `\`, NUL or other control characters.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(StoreError::InvalidName("empty"));
    }
    if name.len() > 255 {
        return Err(StoreError::InvalidName("longer than 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(StoreError::InvalidName("'.' or '..'"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(StoreError::InvalidName(
            "contains '/', '\\' or a control character",
        ));
    }
    Ok(())
}
