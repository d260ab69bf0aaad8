//! The message log (spec §6, docs/protocol.md §8 and D5): NUL-terminated UTF-8
//! entries, one per entity that handled the message, and the two entries CMTP/1
//! servers write and read back: [`RelayEntry`] (one per relay hop) and [`BounceEntry`]
//! (marks a delivery-failure notice, which is never bounced itself).
//!
//! Entries are `name/version` followed by single-space separated `key=value` fields,
//! known fields first and in a fixed order; a reader ignores unknown fields after them,
//! so later versions can add some. Values contain no space, NUL or other control
//! character (the encoders refuse them), so splitting at spaces is exact.

use crate::text::{parse_decimal, parse_hex, push_hex};

/// Prefix of a relay entry.
pub const RELAY_TAG: &str = "cmtp-relay/1";
/// Prefix of a bounce entry.
pub const BOUNCE_TAG: &str = "cmtp-bounce/1";
/// A server refuses to relay a message whose log already has this many non-empty
/// entries (D5): a loop between servers ends after at most this many hops.
pub const MAX_HOPS: usize = 25;
/// How long a server remembers relay ids it received, for deduplication (D5).
pub const RELAY_ID_MEMORY_SECS: u64 = 7 * 24 * 3600;

/// Why an entry cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A value contains a space, NUL or other control character (or, for the
    /// recipient's domain, an `@`), so the entry could not be read back as written.
    #[error("log entry field {0} contains a space, control character or misplaced @")]
    InvalidValue(&'static str),
}

/// One relay hop: written by the server that accepted a message for relay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayEntry {
    /// The relaying server's domain.
    pub by: String,
    /// The address the message came from (IP text, e.g. `192.0.2.7` or `2001:db8::1`).
    pub from: String,
    /// When it was accepted, Unix seconds.
    pub at: u64,
    /// The relay id (random, 16 bytes): the next server deduplicates on it.
    pub id: [u8; 16],
    /// The recipient's account.
    pub for_account: String,
    /// The recipient's domain.
    pub for_domain: String,
}

/// Marks a delivery-failure notice (a bounce): a server never bounces a message whose
/// log has one, so two servers cannot bounce notices back and forth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BounceEntry {
    /// The domain of the server that wrote the notice.
    pub by: String,
    /// When, Unix seconds.
    pub at: u64,
}

/// A value fits an entry: no character a reader would split at or choke on.
fn check(field: &'static str, v: &str) -> Result<(), LogError> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LogError::InvalidValue(field));
    }
    Ok(())
}

/// The fields after `tag`, or None if `entry` is not such an entry.
fn fields<'a>(entry: &'a str, tag: &str) -> Option<std::str::Split<'a, char>> {
    let rest = entry.strip_prefix(tag)?.strip_prefix(' ')?;
    Some(rest.split(' '))
}

/// The value of the next field, which must be `key=value`.
fn value<'a>(it: &mut impl Iterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    it.next()?.strip_prefix(key)?.strip_prefix('=')
}

/// Unknown fields after the known ones must still look like fields (`k=v`, k not empty).
fn rest_are_fields<'a>(mut it: impl Iterator<Item = &'a str>) -> bool {
    it.all(|f| f.find('=').is_some_and(|i| i > 0))
}

impl RelayEntry {
    /// The entry text:
    /// `cmtp-relay/1 by=<by> from=<from> at=<at> id=<32 hex> for=<account>@<domain>`.
    pub fn encode(&self) -> Result<String, LogError> {
        check("by", &self.by)?;
        check("from", &self.from)?;
        check("for (account)", &self.for_account)?;
        check("for (domain)", &self.for_domain)?;
        // The reader splits `for=` at its last `@`: an account may contain one, a
        // domain may not.
        if self.for_domain.contains('@') {
            return Err(LogError::InvalidValue("for (domain)"));
        }
        let mut id = Vec::with_capacity(32);
        push_hex(&self.id, &mut id);
        Ok(format!(
            "{RELAY_TAG} by={} from={} at={} id={} for={}@{}",
            self.by,
            self.from,
            self.at,
            String::from_utf8_lossy(&id),
            self.for_account,
            self.for_domain
        ))
    }

    /// Reads an entry written by [`RelayEntry::encode`] (without its NUL); unknown
    /// `k=v` fields after the known ones are ignored. None for anything else.
    pub fn parse(entry: &str) -> Option<RelayEntry> {
        let mut it = fields(entry, RELAY_TAG)?;
        let by = value(&mut it, "by")?;
        let from = value(&mut it, "from")?;
        let at = parse_decimal(value(&mut it, "at")?.as_bytes())?;
        let id = parse_hex::<16>(value(&mut it, "id")?.as_bytes())?;
        let (for_account, for_domain) = value(&mut it, "for")?.rsplit_once('@')?;
        let e = RelayEntry {
            by: by.to_owned(),
            from: from.to_owned(),
            at,
            id,
            for_account: for_account.to_owned(),
            for_domain: for_domain.to_owned(),
        };
        // Only what encode could have written: no control characters hidden in a value.
        (rest_are_fields(it) && e.encode().is_ok()).then_some(e)
    }
}

impl BounceEntry {
    /// The entry text: `cmtp-bounce/1 by=<by> at=<at>`.
    pub fn encode(&self) -> Result<String, LogError> {
        check("by", &self.by)?;
        Ok(format!("{BOUNCE_TAG} by={} at={}", self.by, self.at))
    }

    /// Reads an entry written by [`BounceEntry::encode`] (without its NUL); unknown
    /// `k=v` fields after the known ones are ignored. None for anything else.
    pub fn parse(entry: &str) -> Option<BounceEntry> {
        let mut it = fields(entry, BOUNCE_TAG)?;
        let by = value(&mut it, "by")?;
        let at = parse_decimal(value(&mut it, "at")?.as_bytes())?;
        let e = BounceEntry {
            by: by.to_owned(),
            at,
        };
        (rest_are_fields(it) && e.encode().is_ok()).then_some(e)
    }
}

/// The non-empty entries of a log, in order, without their NULs. A trailing part
/// without NUL counts as an entry (a log need not end with NUL); empty parts (a log of
/// one NUL, or `a NUL NUL b`) are not entries.
pub fn entries(log: &[u8]) -> impl Iterator<Item = &[u8]> {
    log.split(|&b| b == 0).filter(|e| !e.is_empty())
}

/// The number of non-empty entries (what the hop limit [`MAX_HOPS`] counts).
pub fn count_entries(log: &[u8]) -> usize {
    entries(log).count()
}

/// The last non-empty entry, if it is a relay entry.
pub fn last_relay_entry(log: &[u8]) -> Option<RelayEntry> {
    let last = entries(log).last()?;
    RelayEntry::parse(std::str::from_utf8(last).ok()?)
}

/// True if any entry is a bounce entry: the message is a delivery-failure notice.
pub fn is_bounce(log: &[u8]) -> bool {
    entries(log).any(|e| std::str::from_utf8(e).is_ok_and(|s| BounceEntry::parse(s).is_some()))
}

/// Writes `log` followed by `entry` and its NUL into `out`, with a NUL in between when
/// the log is non-empty and does not end with one (spec §5.5), so the entries stay
/// separable. `entry` must not contain NUL (the encoders above never produce one); a
/// NUL in it would split it into two entries. The log's bytes are kept as they are.
pub fn append_entry(log: &[u8], entry: &str, out: &mut Vec<u8>) {
    out.reserve(log.len() + entry.len() + 2);
    out.extend_from_slice(log);
    if log.last().is_some_and(|&b| b != 0) {
        out.push(0);
    }
    out.extend_from_slice(entry.as_bytes());
    out.push(0);
}

/// The length of the log [`append_entry`] writes, from the old log's length and
/// whether it ends with NUL (ignored for an empty log): for the new `log_length` of an
/// envelope before the log itself is read. Saturates instead of overflowing.
pub fn appended_len(log_len: u64, log_ends_with_nul: bool, entry_len: u64) -> u64 {
    let sep = u64::from(log_len > 0 && !log_ends_with_nul);
    log_len
        .saturating_add(sep)
        .saturating_add(entry_len)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> RelayEntry {
        RelayEntry {
            by: "a.example".into(),
            from: "2001:db8::1".into(),
            at: 1_700_000_000,
            id: [0xab; 16],
            for_account: "bob@home".into(),
            for_domain: "b.example".into(),
        }
    }

    #[test]
    fn relay_entry_text_and_round_trip() {
        let t = relay().encode().unwrap();
        assert_eq!(
            t,
            format!(
                "cmtp-relay/1 by=a.example from=2001:db8::1 at=1700000000 id={} for=bob@home@b.example",
                "ab".repeat(16)
            )
        );
        assert_eq!(RelayEntry::parse(&t), Some(relay()));
        // Unknown fields after the known ones are ignored; other junk is not.
        assert_eq!(RelayEntry::parse(&format!("{t} via=x y=")), Some(relay()));
        for bad in [
            format!("{t} "),
            format!("{t} junk"),
            format!("{t} =x"),
            t.replace(" from=", "  from="),
            t.replace("at=1700000000", "at=01700000000"),
            t.replace("id=ab", "id=AB"),
            t.replace("for=bob@home@b.example", "for=bob"),
            t.replace("cmtp-relay/1", "cmtp-relay/2"),
            t.replace(
                "by=a.example from=2001:db8::1",
                "from=2001:db8::1 by=a.example",
            ),
            t.replace("a.example", "a\u{7}example"),
        ] {
            assert_eq!(RelayEntry::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encode_refuses_values_that_would_not_read_back() {
        for (e, field) in [
            (
                RelayEntry {
                    by: "a b".into(),
                    ..relay()
                },
                "by",
            ),
            (
                RelayEntry {
                    from: "x\0".into(),
                    ..relay()
                },
                "from",
            ),
            (
                RelayEntry {
                    for_account: "b\tb".into(),
                    ..relay()
                },
                "for (account)",
            ),
            (
                RelayEntry {
                    for_domain: "x@y".into(),
                    ..relay()
                },
                "for (domain)",
            ),
        ] {
            assert_eq!(e.encode(), Err(LogError::InvalidValue(field)));
        }
        let b = BounceEntry {
            by: "a.example".into(),
            at: 7,
        };
        assert_eq!(b.encode().unwrap(), "cmtp-bounce/1 by=a.example at=7");
        assert_eq!(
            BounceEntry::parse("cmtp-bounce/1 by=a.example at=7"),
            Some(b)
        );
        assert_eq!(
            BounceEntry {
                by: "a\nb".into(),
                at: 1
            }
            .encode(),
            Err(LogError::InvalidValue("by"))
        );
        assert_eq!(BounceEntry::parse("cmtp-bounce/1 by=a.example"), None);
    }

    #[test]
    fn entries_counting_and_lookups() {
        assert_eq!(count_entries(b""), 0);
        assert_eq!(count_entries(b"\0"), 0);
        assert_eq!(count_entries(b"\0\0\0"), 0);
        assert_eq!(count_entries(b"a"), 1);
        assert_eq!(count_entries(b"a\0"), 1);
        assert_eq!(count_entries(b"\0a\0\0b"), 2);
        assert_eq!(
            entries(b"x\0\0y\0z").collect::<Vec<_>>(),
            [b"x", b"y", b"z"]
        );

        let r = relay().encode().unwrap();
        let mut log = Vec::new();
        append_entry(b"\0old", &r, &mut log);
        assert_eq!(last_relay_entry(&log), Some(relay()));
        assert!(!is_bounce(&log));
        let mut later = Vec::new();
        append_entry(&log, "someone else", &mut later);
        assert_eq!(last_relay_entry(&later), None);
        let mut bounced = Vec::new();
        append_entry(b"", "cmtp-bounce/1 by=x at=1", &mut bounced);
        append_entry(&bounced.clone(), &r, &mut bounced);
        assert!(is_bounce(&bounced));
        assert!(!is_bounce(b"cmtp-bounce/1 by=x\0\xff\xfe\0"));
    }

    #[test]
    fn append_adds_the_missing_nul_and_length_agrees() {
        for (log, want) in [
            (&b""[..], &b"e\0"[..]),
            (b"\0", b"\0e\0"),
            (b"x", b"x\0e\0"),
            (b"x\0", b"x\0e\0"),
            (b"\xff", b"\xff\0e\0"),
        ] {
            let mut out = b"keep".to_vec();
            append_entry(log, "e", &mut out);
            assert_eq!(&out[4..], want, "{log:?}");
            let ends = log.last() == Some(&0);
            assert_eq!(appended_len(log.len() as u64, ends, 1), want.len() as u64);
        }
        // An empty log never gets a separator, whatever the flag says.
        assert_eq!(appended_len(0, false, 1), 2);
        assert_eq!(appended_len(u64::MAX, false, u64::MAX), u64::MAX);
    }
}
