//! The two textual encodings the signed commands and the log share: canonical ASCII
//! decimal numbers and lower-case hex. One spelling per value, so that bytes rebuilt
//! from a parsed value are the bytes that were sent (and signed).

/// Canonical ASCII decimal u64: digits only, no sign, no leading zero (except "0").
pub(crate) fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Exactly `2 * N` lower-case hex digits → `N` bytes.
pub(crate) fn parse_hex<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    if b.len() != 2 * N {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

/// Appends `bytes` as lower-case hex.
pub(crate) fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_is_canonical() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"00",
            b"01",
            b"+1",
            b"-1",
            b"1 ",
            b"18446744073709551616",
            b"123456789012345678901",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trip_lower_case_only() {
        let mut s = Vec::new();
        push_hex(&[0x00, 0xab, 0xff], &mut s);
        assert_eq!(s, b"00abff");
        assert_eq!(parse_hex::<3>(&s), Some([0x00, 0xab, 0xff]));
        assert_eq!(parse_hex::<3>(b"00ABff"), None);
        assert_eq!(parse_hex::<3>(b"00abf"), None);
        assert_eq!(parse_hex::<2>(b"00abff"), None);
        assert_eq!(parse_hex::<1>(b"0g"), None);
    }
}
