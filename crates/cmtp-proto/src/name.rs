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
//!
//! Comparing names (docs/protocol.md §4): [`fold`] is the form two names are compared
//! in (Unicode NFC, then lower case), so `Alice` and `alice` are one account and
//! `bob@EXAMPLE.NET` is `bob@example.net`. A new account is created under
//! [`canonical_account`], which also refuses whitespace, invisible characters and
//! mixed-script look-alikes.

use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, ScriptExtension, UnicodeScript};

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
    /// Whitespace in a new account name (it hides in addresses and on screens).
    #[error("whitespace {0:?} in an account name")]
    Whitespace(char),
    /// An invisible (format, zero-width, filler) character in a new account name: it
    /// would make two different names look the same.
    #[error("invisible character U+{:04X} in an account name", u32::from(*.0))]
    Invisible(char),
    /// Letters of scripts that are not used together (Latin `a` beside Cyrillic `а`): the
    /// name could pass for another one.
    #[error(
        "an account name mixes scripts ({0}): it could pass for another name; use letters of one script"
    )]
    MixedScript(String),
}

/// The form names are compared in: Unicode NFC, then the Unicode lower-case mapping
/// (`char::to_lowercase`, which covers case folding but for a few special cases such as
/// `ß`), then NFC again (lower-casing can leave a sequence that composes). Domains and
/// account lookups go through it; it never fails and changes nothing in an ASCII
/// lower-case name.
pub fn fold(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        return name.to_owned();
    }
    let lower: String = name.nfc().flat_map(char::to_lowercase).collect();
    lower.nfc().collect()
}

/// Whether two domain names are the same domain (compared in [`fold`] form).
pub fn same_domain(a: &str, b: &str) -> bool {
    a == b || a.eq_ignore_ascii_case(b) || fold(a) == fold(b)
}

/// Characters that render as nothing (or as a blank) and so let two different names look
/// alike: Unicode format characters (Cf) and the fillers. A list, since the standard
/// library has no category lookup; it covers every Cf character of Unicode 15.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
        | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{0890}' | '\u{0891}'
        | '\u{08E2}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// The script sets a name may mix (UTS #39 §5.2, "highly restrictive"): Japanese, Chinese
/// with Bopomofo, and Korean writing each combine Han with other scripts and with Latin.
fn cjk_sets() -> [ScriptExtension; 3] {
    let set = |scripts: &[Script]| {
        scripts
            .iter()
            .fold(ScriptExtension::from(Script::Latin), |acc, &s| {
                acc.union(ScriptExtension::from(s))
            })
    };
    [
        set(&[Script::Han, Script::Hiragana, Script::Katakana]),
        set(&[Script::Han, Script::Bopomofo]),
        set(&[Script::Han, Script::Hangul]),
    ]
}

/// Whether a name keeps to one script (digits and punctuation, Unicode's Common and
/// Inherited, go with any), or to one of the CJK combinations UTS #39's "highly
/// restrictive" profile allows. Cheap, and it stops the classic look-alike (`pаypal` with a
/// Cyrillic `а`); single-script confusables (Cyrillic `асе` for Latin `ace`) need the
/// confusables tables and are not caught.
fn single_script(name: &str) -> bool {
    if !ScriptExtension::for_str(name).is_empty() {
        return true;
    }
    cjk_sets().iter().any(|&set| {
        name.chars()
            .all(|c| !c.script_extension().intersection(set).is_empty())
    })
}

/// The scripts of a name's letters, for the error message (`Cyrillic, Latin`).
fn scripts_of(name: &str) -> String {
    let mut names: Vec<&str> = name
        .chars()
        .map(|c| c.script())
        .filter(|s| !matches!(s, Script::Common | Script::Inherited))
        .map(|s| s.full_name())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

/// The name a new account is stored under: [`fold`]ed, and refused if it breaks the
/// name rule or holds whitespace, an invisible character or letters of scripts that are
/// not used together. `Alice` becomes `alice`, so `Alice` cannot be created beside
/// `alice`.
pub fn canonical_account(name: &str) -> Result<String, NameError> {
    validate_name(name)?;
    if let Some(c) = name.chars().find(|c| c.is_whitespace()) {
        return Err(NameError::Whitespace(c));
    }
    if let Some(c) = name.chars().find(|&c| invisible(c)) {
        return Err(NameError::Invisible(c));
    }
    if !single_script(name) {
        return Err(NameError::MixedScript(scripts_of(name)));
    }
    let folded = fold(name);
    validate_name(&folded)?;
    Ok(folded)
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
    fn canonical_accounts_fold_case_and_compose() {
        assert_eq!(canonical_account("Alice").unwrap(), "alice");
        assert_eq!(canonical_account("alice").unwrap(), "alice");
        // "é" decomposed (e + U+0301) and upper case both land on the composed lower case.
        assert_eq!(canonical_account("Re\u{301}mi").unwrap(), "rémi");
        assert_eq!(canonical_account("RÉMI").unwrap(), "rémi");
        assert_eq!(canonical_account("ΩΜΕΓΑ").unwrap(), "ωμεγα");
        assert_eq!(fold("Bob@EXAMPLE.NET"), "bob@example.net");
        assert!(same_domain("EXAMPLE.net", "example.NET"));
        assert!(same_domain("ÉCOLE.fr", "école.fr"));
        assert!(!same_domain("a.example", "b.example"));
    }

    #[test]
    fn new_accounts_refuse_blanks_and_invisibles() {
        assert_eq!(canonical_account("x y"), Err(NameError::Whitespace(' ')));
        assert_eq!(
            canonical_account("x\u{00A0}y"),
            Err(NameError::Whitespace('\u{00A0}'))
        );
        assert_eq!(
            canonical_account("x\u{3000}"),
            Err(NameError::Whitespace('\u{3000}'))
        );
        for c in [
            '\u{200B}', '\u{200D}', '\u{2060}', '\u{FEFF}', '\u{00AD}', '\u{202E}',
        ] {
            let n = format!("al{c}ice");
            assert_eq!(canonical_account(&n), Err(NameError::Invisible(c)), "{n:?}");
        }
        assert_eq!(canonical_account(""), Err(NameError::Empty));
        assert_eq!(canonical_account("a/b"), Err(NameError::ForbiddenChar('/')));
        // Still a valid name on the wire (old accounts may have one): only creation refuses.
        assert_eq!(validate_name("x y"), Ok(()));
    }

    /// Letters of one script (with digits and punctuation), or a CJK combination, are
    /// accepted; a Latin name with a Cyrillic or Greek letter in it is refused.
    #[test]
    fn new_accounts_refuse_mixed_script_look_alikes() {
        for ok in [
            "alice",
            "bob.smith-2",
            "алиса",
            "ελένη",
            "山田taro",
            "やまだ太郎",
            "ヤマダ_2",
            "김민준kim",
            "王小明ㄅ",
            "rémi",
        ] {
            assert!(canonical_account(ok).is_ok(), "{ok:?}");
        }
        for (bad, scripts) in [
            ("p\u{0430}ypal", "Cyrillic, Latin"),
            ("\u{0430}lice", "Cyrillic, Latin"),
            ("\u{03B1}lpha", "Greek, Latin"),
            ("алиса\u{03B1}", "Cyrillic, Greek"),
            ("やまだ김", "Hangul, Hiragana"),
        ] {
            assert_eq!(
                canonical_account(bad),
                Err(NameError::MixedScript(scripts.into())),
                "{bad:?}"
            );
        }
        // Only creation refuses: an existing mixed name is still a valid name on the wire.
        assert_eq!(validate_name("p\u{0430}ypal"), Ok(()));
    }

    #[test]
    fn empty_allowed_for_account_and_domain() {
        assert_eq!(validate_account(""), Ok(()));
        assert_eq!(validate_domain(""), Ok(()));
        assert_eq!(validate_account(".."), Err(NameError::Dots));
        assert_eq!(validate_domain("a/b"), Err(NameError::ForbiddenChar('/')));
    }
}
