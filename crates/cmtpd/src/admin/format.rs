//! Human output of the admin subcommands: sizes, dates, plurals and aligned tables.

use std::fmt::Write as _;

/// `1 message`, `2 messages`, `0 messages`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return count(bytes, "byte", "bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC: the server's logs and other machines agree).
pub fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// Columns padded to their widest cell (by characters), two spaces apart, a header row
/// first; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                o.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                let _ = write!(o, "{c}{}  ", " ".repeat(pad));
            }
        }
        o.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_sizes_dates() {
        assert_eq!(count(1, "message", "messages"), "1 message");
        assert_eq!(count(2, "message", "messages"), "2 messages");
        assert_eq!(count(0, "message", "messages"), "0 messages");
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(951_782_400), "2000-02-29 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "FROM"],
            &[
                vec!["1".into(), "a@x".into()],
                vec!["100".into(), "b@y".into()],
            ],
        );
        assert_eq!(t, "ID   FROM\n1    a@x\n100  b@y\n");
    }
}
