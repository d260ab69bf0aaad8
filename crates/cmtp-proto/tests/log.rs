//! Property tests of the log entries (`cmtp_proto::log`): round trips, hostile input
//! never panics and is never misread, counting and appending agree with each other.

use cmtp_proto::log::{self, BounceEntry, RelayEntry};
use proptest::prelude::*;

/// Values an encoder accepts: no whitespace or control characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.:\\-]{0,30}",
        "[^\\s\\p{Cc}]{0,20}",
        Just(String::new())
    ]
}

fn relay() -> impl Strategy<Value = RelayEntry> {
    (
        value(),
        value(),
        any::<u64>(),
        any::<[u8; 16]>(),
        value(),
        value().prop_filter("no @ in a domain", |d| !d.contains('@')),
    )
        .prop_map(|(by, from, at, id, for_account, for_domain)| RelayEntry {
            by,
            from,
            at,
            id,
            for_account,
            for_domain,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn relay_round_trip(e in relay(), extra in prop::collection::vec("[a-z]{1,5}=[^\\s\\p{Cc}]{0,5}", 0..3)) {
        let t = e.encode().unwrap();
        prop_assert!(!t.contains('\0'));
        prop_assert_eq!(RelayEntry::parse(&t), Some(e.clone()));
        let with_extra = std::iter::once(t.clone()).chain(extra).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(RelayEntry::parse(&with_extra), Some(e.clone()));
        prop_assert_eq!(BounceEntry::parse(&t), None);
        // In a log: the last entry is found, whatever came before.
        let mut l = Vec::new();
        log::append_entry(b"\0garbage\xff", &t, &mut l);
        prop_assert_eq!(log::last_relay_entry(&l), Some(e));
    }

    #[test]
    fn bounce_round_trip(by in value(), at in any::<u64>()) {
        let b = BounceEntry { by, at };
        let t = b.encode().unwrap();
        prop_assert_eq!(BounceEntry::parse(&t), Some(b));
        prop_assert_eq!(RelayEntry::parse(&t), None);
        prop_assert!(log::is_bounce(t.as_bytes()));
    }

    #[test]
    fn hostile_entries_parse_only_to_what_reads_back(s in "(cmtp-relay/1 |cmtp-bounce/1 )?[ -~\u{0}-\u{1f}é@=]{0,120}") {
        // Whatever parses is exactly what its encoder writes, plus ignored fields.
        if let Some(e) = RelayEntry::parse(&s) {
            let t = e.encode().unwrap();
            prop_assert!(s == t || s.starts_with(&format!("{t} ")), "{:?} vs {:?}", s, t);
        }
        if let Some(b) = BounceEntry::parse(&s) {
            let t = b.encode().unwrap();
            prop_assert!(s == t || s.starts_with(&format!("{t} ")), "{:?} vs {:?}", s, t);
        }
    }

    #[test]
    fn hostile_logs_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let n = log::count_entries(&bytes);
        let by_hand = bytes.split(|&b| b == 0).filter(|p| !p.is_empty()).count();
        prop_assert_eq!(n, by_hand);
        prop_assert!(log::entries(&bytes).all(|e| !e.is_empty() && !e.contains(&0)));
        let _ = log::last_relay_entry(&bytes);
        let _ = log::is_bounce(&bytes);
    }

    #[test]
    fn append_counts_one_more_and_keeps_the_log(bytes in prop::collection::vec(any::<u8>(), 0..200), entry in "[^\u{0}]{1,40}") {
        let mut out = Vec::new();
        log::append_entry(&bytes, &entry, &mut out);
        prop_assert!(out.starts_with(&bytes));
        prop_assert_eq!(out.last(), Some(&0));
        prop_assert_eq!(log::count_entries(&out), log::count_entries(&bytes) + 1);
        prop_assert_eq!(log::entries(&out).last(), Some(entry.as_bytes()));
        let ends = bytes.last() == Some(&0);
        prop_assert_eq!(log::appended_len(bytes.len() as u64, ends, entry.len() as u64), out.len() as u64);
    }
}
