//! Byte sizes on the command line: `1024`, `10k`, `1M`, `1G` (binary multiples, so
//! `10k` is 10 KiB, the unit of every figure in docs/performance.md).

use std::fmt;

/// Why a size argument was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError(pub String);

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size {:?}: use digits with an optional k/M/G suffix (binary: 1k = 1024)",
            self.0
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses `N`, `Nk`/`NK`/`NKiB`, `NM`/`NMiB`, `NG`/`NGiB` (case-insensitive, binary
/// multiples). A trailing `b`/`B` alone means bytes. Overflow is an error.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError(s.to_string());
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(err());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| err())?;
    let suffix = t[digits_end..].trim().to_ascii_lowercase();
    let mult: u64 = match suffix.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Formats a byte count the way it was most likely typed (`10k`, `1M`, `1G`, `1500`).
pub fn format_size(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}G", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_binary() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("10K"), Ok(10 * 1024));
        assert_eq!(parse_size("100KiB"), Ok(100 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "k",
            "-1",
            "1.5M",
            "1T",
            "1 kk",
            "abc",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("17179869184G").is_err(), "overflow accepted");
    }

    #[test]
    fn format_round_trips() {
        for s in ["1k", "10k", "100k", "1M", "1G", "1500"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
