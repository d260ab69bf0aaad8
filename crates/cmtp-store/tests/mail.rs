//! Mail log tests: real files, real fsync.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use cmtp_store::{
    Delivery, EmbeddedStore, LogMail, MailStore, MessageMeta, MessageRead, Options, StoreError,
};

fn meta(mailbox: &str) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 1,
        body_end: 7,
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn deliver<S: MailStore>(store: &S, mailbox: &str, data: &[u8], chunk: usize) -> u64 {
    let mut d = store.begin();
    for c in data.chunks(chunk.max(1)) {
        d.write(c).await.unwrap();
    }
    d.commit(meta(mailbox)).await.unwrap()
}

async fn read_all<S: MailStore>(store: &S, mailbox: &str, id: u64) -> Option<Vec<u8>> {
    let (info, mut r) = store.open(mailbox, id).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(c) = r.read_chunk(4096).await.unwrap() {
        assert!(!c.is_empty() && c.len() <= 4096);
        out.extend_from_slice(&c);
    }
    assert_eq!(r.remaining(), 0);
    assert_eq!(out.len() as u64, info.size);
    Some(out)
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let segs: Vec<_> = fs::read_dir(dir.join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let msgs: Vec<Vec<u8>> = vec![b"hello".to_vec(), Vec::new(), pattern(1, 100_000)];
    let mut ids = Vec::new();
    {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        for m in &msgs {
            ids.push(deliver(&store, "bob", m, 777).await);
        }
        let pm = deliver(&store, "", b"to the postmaster", 3).await;
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let list = store.list("bob").await.unwrap();
        assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
        assert_eq!(list[2].size, 100_000);
        assert_eq!(list[0].meta, meta("bob"));
        assert_eq!(store.list("").await.unwrap()[0].id, pm);
        assert!(store.list("nobody").await.unwrap().is_empty());
        for (id, m) in ids.iter().zip(&msgs) {
            assert_eq!(&read_all(&store, "bob", *id).await.unwrap(), m);
        }
        // Wrong mailbox: not found.
        assert!(store.open("carol", ids[0]).await.unwrap().is_none());
        let st = store.stats().unwrap();
        assert_eq!(st.messages, 4);
        assert_eq!(st.mailboxes["bob"].messages, 3);
        assert_eq!(st.mailboxes[""].messages, 1);
        assert_eq!(st.dead_bytes, 0);
    }
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let list = store.list("bob").await.unwrap();
    assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    for (id, m) in ids.iter().zip(&msgs) {
        assert_eq!(&read_all(&store, "bob", *id).await.unwrap(), m);
    }
    // Ids keep increasing after a reopen.
    let next = deliver(&store, "bob", b"x", 1).await;
    assert!(next > *ids.iter().max().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LogMail::open(dir.path(), Options::default()).unwrap());
    const N: usize = 256;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let data = pattern(i as u64, 10 * 1024);
            let mut d = store.begin();
            d.write(&data).await.unwrap();
            barrier.wait().await;
            let id = d.commit(meta("bob")).await.unwrap();
            (id, data)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let m = store.metrics();
    assert_eq!(m.records, N as u64);
    assert!(m.batches < N as u64, "no group commit: {m:?}");
    assert_eq!(m.batch_hist.iter().sum::<u64>(), m.batches);
    assert_eq!(m.fsync_hist.iter().sum::<u64>(), m.fsyncs);
    assert!(m.fsyncs >= m.batches, "a batch without its fsync: {m:?}");
    assert_eq!(store.list("bob").await.unwrap().len(), N);
    for (id, data) in done {
        assert_eq!(read_all(&*store, "bob", id).await.unwrap(), data);
    }
}

/// Truncating the log at every byte of the last record (and garbage after it) shows
/// exactly the records before it — never a partial one — and the store stays writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (before, after, ids) = {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        let a = deliver(&store, "bob", b"first message", 5).await;
        let b = deliver(&store, "bob", b"second message", 5).await;
        let before = store.stats().unwrap().log_bytes;
        let c = deliver(&store, "bob", &pattern(3, 300), 64).await;
        (before, store.stats().unwrap().log_bytes, vec![a, b, c])
    };
    let seg = only_segment(dir.path());
    // The active segment is zero-filled ahead of its records.
    let full = fs::read(&seg).unwrap();
    assert!(full.len() as u64 > after && full[after as usize..].iter().all(|&b| b == 0));
    for cut in (before..=after).chain([full.len() as u64]) {
        fs::write(&seg, &full[..cut as usize]).unwrap();
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        let got: Vec<u64> = store
            .list("bob")
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        if cut >= after {
            assert_eq!(got, ids);
            assert_eq!(
                read_all(&store, "bob", ids[2]).await.unwrap(),
                pattern(3, 300)
            );
        } else {
            assert_eq!(got, ids[..2], "cut at {cut}");
            drop(store);
            assert_eq!(
                fs::metadata(&seg).unwrap().len(),
                before,
                "tail not truncated"
            );
        }
    }
    let full = full[..after as usize].to_vec();
    // Garbage after the last record, and a flipped byte inside it.
    let mut garbage = full.clone();
    garbage.extend_from_slice(&pattern(9, 1000));
    fs::write(&seg, &garbage).unwrap();
    {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        assert_eq!(store.list("bob").await.unwrap().len(), 3);
        let d = deliver(&store, "bob", b"after garbage", 4).await;
        assert_eq!(read_all(&store, "bob", d).await.unwrap(), b"after garbage");
    }
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.list("bob").await.unwrap().len(), 4);
    drop(store);
    let mut flipped = full.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    fs::write(&seg, &flipped).unwrap();
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let got: Vec<u64> = store
        .list("bob")
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(got, ids[..2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_aborts_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 4096,
        ..Options::default()
    };
    let blobs = dir.path().join("mail/blobs");
    let big = pattern(5, 3 * 1024 * 1024 + 17);
    let id = {
        let store = LogMail::open(dir.path(), opts.clone()).unwrap();
        let id = deliver(&store, "bob", &big, 100_000).await;
        assert_eq!(read_all(&store, "bob", id).await.unwrap(), big);
        let st = store.stats().unwrap();
        assert_eq!((st.blobs, st.blob_bytes), (1, big.len() as u64));
        // An aborted (dropped) large delivery leaves nothing behind.
        let mut d = store.begin();
        d.write(&big).await.unwrap();
        assert_eq!(fs::read_dir(blobs.join("tmp")).unwrap().count(), 1);
        drop(d);
        assert_eq!(fs::read_dir(blobs.join("tmp")).unwrap().count(), 0);
        assert_eq!(store.stats().unwrap().messages, 1);
        id
    };
    // A crash mid-blob (temporary left) and after the rename but before the BlobRef
    // record (unreferenced blob): neither visible, both cleaned on open.
    fs::write(
        blobs.join("tmp").join(format!("{:016x}", id + 1)),
        b"partial",
    )
    .unwrap();
    fs::write(blobs.join(format!("{:016x}", id + 2)), b"unreferenced").unwrap();
    let store = LogMail::open(dir.path(), opts).unwrap();
    assert_eq!(store.list("bob").await.unwrap().len(), 1);
    assert_eq!(fs::read_dir(blobs.join("tmp")).unwrap().count(), 0);
    let names: Vec<_> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "tmp")
        .collect();
    assert_eq!(names, vec![format!("{id:016x}")]);
    assert_eq!(read_all(&store, "bob", id).await.unwrap(), big);
    // Deleting a blob message removes its file.
    assert!(store.delete("bob", id).await.unwrap());
    assert!(!blobs.join(format!("{id:016x}")).exists());
    assert!(store.open("bob", id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        let a = deliver(&store, "bob", b"one", 2).await;
        let b = deliver(&store, "bob", b"two", 2).await;
        assert!(!store.delete("carol", a).await.unwrap(), "wrong mailbox");
        assert!(store.delete("bob", a).await.unwrap());
        assert!(!store.delete("bob", a).await.unwrap(), "deleting twice");
        assert!(!store.delete("bob", 9999).await.unwrap());
        let st = store.stats().unwrap();
        assert_eq!(st.messages, 1);
        assert!(st.dead_bytes > 0 && st.live_bytes > 0);
        (a, b)
    };
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let ids: Vec<u64> = store
        .list("bob")
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, vec![b]);
    assert!(store.open("bob", a).await.unwrap().is_none());
    let st = store.stats().unwrap();
    assert_eq!(st.live_bytes + st.dead_bytes + 16, st.log_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_beside_a_live_writer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 1000,
        segment_size: 4096,
        ..Options::default()
    };
    let writer = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    assert!(matches!(
        EmbeddedStore::open(dir.path(), opts),
        Err(StoreError::Locked)
    ));
    let first = deliver(&writer, "", b"postmaster mail", 4).await;
    let ro = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(read_all(&ro, "", first).await.unwrap(), b"postmaster mail");
    // Commits after the read-only open, across several segments and with blobs, are seen.
    let mut expect = vec![(first, b"postmaster mail".to_vec())];
    for i in 0..20u64 {
        let data = pattern(i, 300 + 100 * i as usize);
        expect.push((deliver(&writer, "", &data, 333).await, data));
    }
    assert!(writer.stats().unwrap().segments > 1);
    let listed: Vec<u64> = ro.list("").await.unwrap().iter().map(|i| i.id).collect();
    assert_eq!(listed, expect.iter().map(|e| e.0).collect::<Vec<_>>());
    for (id, data) in &expect {
        assert_eq!(&read_all(&ro, "", *id).await.unwrap(), data);
    }
    assert!(writer.delete("", first).await.unwrap());
    assert_eq!(ro.stats().unwrap().messages, 20);
    assert_eq!(ro.stats().unwrap(), writer.stats().unwrap());
    assert!(matches!(
        ro.delete("", expect[1].0).await,
        Err(StoreError::ReadOnly)
    ));
    let mut d = ro.begin();
    assert!(matches!(d.write(b"x").await, Err(StoreError::ReadOnly)));
    assert!(matches!(
        ro.begin().commit(meta("")).await,
        Err(StoreError::ReadOnly)
    ));
    // Read-only on an empty data directory: empty, creates nothing.
    let empty = tempfile::tempdir().unwrap();
    let ro2 = LogMail::open_read_only(empty.path()).unwrap();
    assert!(ro2.list("").await.unwrap().is_empty());
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    for mb in ["../x", "a/b", ".", "..", "\u{0}", "a\\b"] {
        let r = store.begin().commit(meta(mb)).await;
        assert!(
            matches!(r, Err(StoreError::InvalidName(_))),
            "{mb:?}: {r:?}"
        );
    }
    let mut m = meta("bob");
    m.src_domain = "d".repeat(256);
    assert!(matches!(
        store.begin().commit(m).await,
        Err(StoreError::InvalidMeta(_))
    ));
    assert_eq!(store.stats().unwrap().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_older_segment_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 1024,
        ..Options::default()
    };
    {
        let store = LogMail::open(dir.path(), opts.clone()).unwrap();
        for i in 0..10 {
            deliver(&store, "bob", &pattern(i, 400), 100).await;
        }
        assert!(store.stats().unwrap().segments > 2);
    }
    let first = dir.path().join("mail/segment-00000001.log");
    let mut bytes = fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    fs::write(&first, bytes).unwrap();
    assert!(matches!(
        LogMail::open(dir.path(), opts),
        Err(StoreError::Corrupt(_))
    ));
}

/// A batch torn so that a later record reached the disk but an earlier one did not: the
/// later one must never come back, even once new records fill the gap exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_batch_never_resurrects_a_later_record() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, a) = {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        let a = deliver(&store, "bob", b"first message", 5).await;
        let one = store.stats().unwrap().log_bytes;
        deliver(&store, "bob", b"second message", 5).await;
        let two = store.stats().unwrap().log_bytes;
        deliver(&store, "bob", b"third message", 5).await;
        (one as usize, two as usize, a)
    };
    let seg = only_segment(dir.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[one..two].fill(0);
    fs::write(&seg, &bytes).unwrap();
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let got: Vec<u64> = store
        .list("bob")
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(got, vec![a]);
    let b = deliver(&store, "bob", b"SECOND MESSAGE", 5).await;
    assert_eq!(
        store.stats().unwrap().log_bytes as usize,
        two,
        "same length as the lost one"
    );
    drop(store);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let got: Vec<u64> = store
        .list("bob")
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(got, vec![a, b]);
    assert_eq!(read_all(&store, "bob", b).await.unwrap(), b"SECOND MESSAGE");
}
