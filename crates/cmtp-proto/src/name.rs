//! Account and domain names (spec §2, project choice).
//!
//! A name is valid UTF-8 (guaranteed by `&str`), at most [`MAX_PARAM`] bytes, contains
//! no control character (Unicode category Cc), no `/`, no `\` and no NUL, and is not
//! `.` or `..`. The rule exists because names reach file paths and queries.
//!
//! Empty names: an empty account means "the server itself" (message destination,
//! KEYREQUEST) and an empty domain means "the server's own domain"; use
//! [`validate_account`] / [`validate_domain`] there. Everywhere an actual account is
//! named (LOGIN, the mailbox commands, a store key) use [`validate_name`], which
//! refuses the empty name.

use crate::limits::MAX_PARAM;

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty name where an actual name is required.
    #[error("empty name")]
    Empty,
    /// Longer than 255 bytes.
    #[error("name longer than {MAX_PARAM} bytes ({0})")]
    TooLong(usize),
    /// `.` or `..`.
    #[error("name is `.` or `..`")]
    Dots,
    /// A control character, `/`, `\` (the offending character).
    #[error("forbidden character {0:?} in name")]
    ForbiddenChar(char),
}

/// Validates a non-empty account or domain name by the spec §2 rule.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    validate_inner(name)
}

/// Validates an account name where empty means "the server itself".
pub fn validate_account(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Ok(());
    }
    validate_inner(name)
}

/// Validates a domain name where empty means "the server's own domain".
pub fn validate_domain(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Ok(());
    }
    validate_inner(name)
}

fn validate_inner(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_PARAM {
        return Err(NameError::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(NameError::ForbiddenChar(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "bob",
            "üser",
            "hawaii.edu",
            "a.b",
            "...",
            "x y",
            &"a".repeat(255),
        ] {
            assert_eq!(validate_name(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("."), Err(NameError::Dots));
        assert_eq!(validate_name(".."), Err(NameError::Dots));
        assert_eq!(validate_name("a/b"), Err(NameError::ForbiddenChar('/')));
        assert_eq!(validate_name("a\\b"), Err(NameError::ForbiddenChar('\\')));
        assert_eq!(validate_name("a\0b"), Err(NameError::ForbiddenChar('\0')));
        assert_eq!(validate_name("a\nb"), Err(NameError::ForbiddenChar('\n')));
        assert_eq!(
            validate_name("a\u{7f}"),
            Err(NameError::ForbiddenChar('\u{7f}'))
        );
        assert_eq!(
            validate_name("a\u{85}"),
            Err(NameError::ForbiddenChar('\u{85}'))
        );
        assert_eq!(
            validate_name(&"a".repeat(256)),
            Err(NameError::TooLong(256))
        );
        assert_eq!(
            validate_name(&"é".repeat(128)),
            Err(NameError::TooLong(256))
        );
    }

    #[test]
    fn empty_allowed_for_account_and_domain() {
        assert_eq!(validate_account(""), Ok(()));
        assert_eq!(validate_domain(""), Ok(()));
        assert_eq!(validate_account(".."), Err(NameError::Dots));
        assert_eq!(validate_domain("a/b"), Err(NameError::ForbiddenChar('/')));
    }
}
