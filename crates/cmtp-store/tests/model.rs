//! Property tests against a model of acknowledged state (the redb habit): whatever the
//! sequence of deliveries, deletes, notes, reopens and torn tails, the store shows
//! exactly what was acknowledged. Plus: arbitrary bytes in a segment never panic the opener.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cmtp_store::{Delivery, LogMail, MailStore, MessageMeta, MessageRead, Options, StoreError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Deliver {
        mailbox: u8,
        size: usize,
        chunk: usize,
    },
    Delete {
        pick: usize,
    },
    Note {
        pick: usize,
        len: usize,
    },
    Reopen,
    TornTail {
        garbage: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..3, prop_oneof![0usize..2000, 3000usize..9000], 1usize..5000)
            .prop_map(|(mailbox, size, chunk)| Op::Deliver { mailbox, size, chunk }),
        2 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        2 => (any::<usize>(), 0usize..300).prop_map(|(pick, len)| Op::Note { pick, len }),
        1 => Just(Op::Reopen),
        1 => proptest::collection::vec(any::<u8>(), 1..200).prop_map(|garbage| Op::TornTail { garbage }),
    ]
}

fn opts() -> Options {
    Options {
        inline_threshold: 2048,
        segment_size: 16 * 1024,
        ..Options::default()
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn data(id_seed: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u64 ^ id_seed.wrapping_mul(2_654_435_761)) as u8)
        .collect()
}

/// Acknowledged messages: (mailbox, id) → (bytes, note). Ids are per mailbox.
type Model = BTreeMap<(String, u64), (Vec<u8>, Vec<u8>)>;

/// A relay id per message, derived from its seed.
fn relay_id(seed: u64) -> [u8; 16] {
    let mut r = [0x5a; 16];
    r[..8].copy_from_slice(&seed.to_le_bytes());
    r
}

async fn check(store: &LogMail, model: &Model, relayed: &BTreeSet<u64>) {
    let mut seen = BTreeMap::new();
    for mb in ["", "bob", "carol"] {
        for info in store.list(mb).await.unwrap() {
            let (_, mut r) = store.open(mb, info.id).await.unwrap().unwrap();
            let mut got = Vec::new();
            while let Some(c) = r.read_chunk(1000).await.unwrap() {
                got.extend_from_slice(&c);
            }
            seen.insert((mb.to_owned(), info.id), (got, info.meta.note));
        }
    }
    assert_eq!(seen.len(), model.len());
    assert!(seen == *model, "store differs from the model");
    let st = store.stats().unwrap();
    assert_eq!(st.messages, model.len() as u64);
    // Every record byte is either live or dead (segment headers are 16 bytes).
    assert_eq!(
        st.live_bytes + st.dead_bytes,
        st.log_bytes - 16 * st.segments
    );
    // Relay ids of every acknowledged message, deleted or not.
    for &seed in relayed {
        assert!(store.seen_relay_id(&relay_id(seed)), "relay id {seed}");
    }
    assert!(!store.seen_relay_id(&relay_id(u64::MAX)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Some(LogMail::open(dir.path(), opts()).unwrap());
            let mut model = Model::new();
            let mut relayed = BTreeSet::new();
            let mut seed = 0u64;
            // Per mailbox, the last id given: each mailbox counts 1, 2, 3, … on its own.
            let mut last_ids: BTreeMap<String, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Deliver { mailbox, size, chunk } => {
                        let mb = ["", "bob", "carol"][mailbox as usize].to_owned();
                        seed += 1;
                        let bytes = data(seed, size);
                        let s = store.as_ref().unwrap();
                        let mut d = s.begin();
                        for c in bytes.chunks(chunk) {
                            d.write(c).await.unwrap();
                        }
                        let meta = MessageMeta {
                            mailbox: mb.clone(),
                            src_account: "x".into(),
                            src_domain: "y".into(),
                            version: 1,
                            attachment_count: 0,
                            body_end: 0,
                            note: data(!seed, size % 50),
                            relay_id: Some(relay_id(seed)),
                        };
                        let note = meta.note.clone();
                        let id = d.commit(meta).await.unwrap();
                        relayed.insert(seed);
                        let last = last_ids.entry(mb.clone()).or_default();
                        assert_eq!(id, *last + 1, "mailbox {mb:?}: not the next id of its own sequence");
                        *last = id;
                        assert!(model.insert((mb, id), (bytes, note)).is_none(), "id reused");
                    }
                    Op::Delete { pick } => {
                        if model.is_empty() {
                            continue;
                        }
                        let key = model.keys().nth(pick % model.len()).unwrap().clone();
                        assert!(store.as_ref().unwrap().delete(&key.0, key.1).await.unwrap());
                        model.remove(&key);
                    }
                    Op::Note { pick, len } => {
                        if model.is_empty() {
                            continue;
                        }
                        let key = model.keys().nth(pick % model.len()).unwrap().clone();
                        seed += 1;
                        let note = data(seed, len);
                        let s = store.as_ref().unwrap();
                        assert!(s.set_note(&key.0, key.1, note.clone()).await.unwrap());
                        model.get_mut(&key).unwrap().1 = note;
                    }
                    Op::Reopen => {
                        drop(store.take()); // joins the writer, releases the lock
                        store = Some(LogMail::open(dir.path(), opts()).unwrap());
                    }
                    Op::TornTail { garbage } => {
                        // An unacknowledged batch half-written at the end of the log.
                        let total = store.as_ref().unwrap().stats().unwrap().log_bytes;
                        drop(store.take()); // joins the writer, releases the lock
                        let segs = segments(dir.path());
                        let (last, older) = segs.split_last().unwrap();
                        let older: u64 = older.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
                        let f = fs::OpenOptions::new().write(true).open(last).unwrap();
                        f.write_all_at(&garbage, total - older).unwrap();
                        drop(f);
                        store = Some(LogMail::open(dir.path(), opts()).unwrap());
                    }
                }
                check(store.as_ref().unwrap(), &model, &relayed).await;
            }
        });
    }

    /// Arbitrary bytes after a valid segment header: open never panics; it recovers
    /// (the last segment's tail is torn) or reports corruption.
    #[test]
    fn garbage_segments_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), two in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("mail")).unwrap();
        let mut seg = b"CMTPLOG1".to_vec();
        seg.extend_from_slice(&1u64.to_le_bytes());
        seg.extend_from_slice(&bytes);
        fs::write(dir.path().join("mail/segment-00000001.log"), &seg).unwrap();
        if two {
            let mut s2 = b"CMTPLOG1".to_vec();
            s2.extend_from_slice(&2u64.to_le_bytes());
            fs::write(dir.path().join("mail/segment-00000002.log"), &s2).unwrap();
        }
        match LogMail::open(dir.path(), Options::default()) {
            Ok(s) => { s.stats().unwrap(); }
            Err(StoreError::Corrupt(_)) => prop_assert!(two),
            Err(e) => panic!("unexpected error {e}"),
        }
        // A record header claiming a huge length must not allocate it.
        let mut huge = seg[..16].to_vec();
        huge.extend_from_slice(b"CMRC\x01\0\0\0\xff\xff\xff\x7f\0\0\0\0");
        fs::write(dir.path().join("mail/segment-00000001.log"), &huge).unwrap();
        let _ = fs::remove_file(dir.path().join("mail/segment-00000002.log"));
        let s = LogMail::open(dir.path(), Options::default()).unwrap();
        prop_assert_eq!(s.stats().unwrap().messages, 0);
    }
}
