//! Mail log tests: real files, real fsync.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use cmtp_store::{
    Delivery, EmbeddedStore, LogMail, MailStore, MessageMeta, MessageRead, Options, StoreError,
    UserRecord,
};

fn meta(mailbox: &str) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 1,
        body_end: 7,
        note: Vec::new(),
        relay_id: None,
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

/// The ids a mailbox lists, in order.
async fn listed_ids<S: MailStore>(store: &S, mailbox: &str) -> Vec<u64> {
    store
        .list(mailbox)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect()
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
    // Ids go on from bob's own last one after a reopen (the postmaster's message took
    // none of bob's).
    let next = deliver(&store, "bob", b"x", 1).await;
    assert_eq!(next, *ids.iter().max().unwrap() + 1);
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
        let got = listed_ids(&store, "bob").await;
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
    let got = listed_ids(&store, "bob").await;
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
    // Blob files are numbered apart from message ids: only the live one is left.
    let blob_files = || -> Vec<String> {
        fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "tmp")
            .collect()
    };
    let names = blob_files();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(fs::read(blobs.join(&names[0])).unwrap(), big);
    assert_eq!(read_all(&store, "bob", id).await.unwrap(), big);
    // Deleting a blob message removes its file.
    assert!(store.delete("bob", id).await.unwrap());
    assert!(blob_files().is_empty());
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
    let ids = listed_ids(&store, "bob").await;
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
    let listed = listed_ids(&ro, "").await;
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
    for mb in ["../x", "a/b", ".", "..", "\u{0}"] {
        let r = store.begin().commit(meta(mb)).await;
        assert!(
            matches!(r, Err(StoreError::InvalidName(_))),
            "{mb:?}: {r:?}"
        );
    }
    // The protocol's stricter name rule is the server's; the store only keeps names
    // path-safe, and `a\b` is one ordinary path component.
    assert!(store.begin().commit(meta("a\\b")).await.is_ok());
    let mut m = meta("bob");
    m.src_domain = "d".repeat(256);
    assert!(matches!(
        store.begin().commit(m).await,
        Err(StoreError::InvalidMeta(_))
    ));
    assert_eq!(store.stats().unwrap().messages, 1);
}

/// `mailbox_usage` fails closed: when the log cannot be read (read-only view, the mail
/// directory replaced by a file) it is an error, never a stale or empty usage that a
/// quota check would let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_usage_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    deliver(&store, "bob", b"one", 3).await;
    drop(store);
    let ro = LogMail::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.mailbox_usage("bob").unwrap(), (1, 3));
    fs::rename(dir.path().join("mail"), dir.path().join("mail.moved")).unwrap();
    fs::write(dir.path().join("mail"), b"not a directory").unwrap();
    let r = ro.mailbox_usage("bob");
    assert!(matches!(r, Err(StoreError::Io(_))), "{r:?}");
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
    let got = listed_ids(&store, "bob").await;
    assert_eq!(got, vec![a]);
    let b = deliver(&store, "bob", b"SECOND MESSAGE", 5).await;
    assert_eq!(
        store.stats().unwrap().log_bytes as usize,
        two,
        "same length as the lost one"
    );
    drop(store);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let got = listed_ids(&store, "bob").await;
    assert_eq!(got, vec![a, b]);
    assert_eq!(read_all(&store, "bob", b).await.unwrap(), b"SECOND MESSAGE");
}

/// With a tiny store-wide inline budget, concurrent deliveries of small messages spill to
/// blob files instead of buffering, read back byte-identical, and every reservation is
/// given back (on commit and on drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_budget_bounds_memory_and_spills() {
    let dir = tempfile::tempdir().unwrap();
    const BUDGET: u64 = 32 * 1024;
    let opts = Options {
        inline_budget: BUDGET,
        ..Options::default()
    };
    let store = Arc::new(LogMail::open(dir.path(), opts).unwrap());
    // A dropped delivery gives its reservation back.
    let mut d = store.begin();
    d.write(&pattern(99, 5000)).await.unwrap();
    assert!(store.inline_reserved() >= 5000);
    drop(d);
    assert_eq!(store.inline_reserved(), 0);

    const N: usize = 24;
    const SIZE: usize = 10 * 1024;
    let written = Arc::new(tokio::sync::Barrier::new(N + 1));
    let go = Arc::new(tokio::sync::Barrier::new(N + 1));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (store, written, go) = (store.clone(), written.clone(), go.clone());
        tasks.push(tokio::spawn(async move {
            let data = pattern(1000 + i as u64, SIZE);
            let mut d = store.begin();
            for c in data.chunks(4096) {
                d.write(c).await.unwrap();
            }
            // Every delivery is in flight at once here.
            written.wait().await;
            go.wait().await;
            (d.commit(meta("bob")).await.unwrap(), data)
        }));
    }
    written.wait().await;
    let held = store.inline_reserved();
    assert!(
        held <= BUDGET,
        "{held} bytes reserved over a {BUDGET} budget"
    );
    go.wait().await;
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    assert_eq!(store.inline_reserved(), 0, "a reservation was not released");
    let st = store.stats().unwrap();
    assert_eq!(st.messages, N as u64);
    // At most BUDGET / SIZE deliveries can have stayed in memory; the rest spilled.
    assert!(
        st.blobs >= (N - BUDGET as usize / SIZE) as u64,
        "only {} of {N} spilled",
        st.blobs
    );
    for (id, data) in &done {
        assert_eq!(&read_all(&*store, "bob", *id).await.unwrap(), data);
    }
    drop(store);
    // And after a reopen (blob files named apart from ids).
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    for (id, data) in &done {
        assert_eq!(&read_all(&store, "bob", *id).await.unwrap(), data);
    }
}

/// Ids ascend in log (arrival) order: a large message started first and committed last
/// gets the highest id; ids survive a reopen and are never reused, even when the
/// message with the highest id was deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_ascend_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 4096,
        ..Options::default()
    };
    let big = pattern(7, 300_000);
    let (order, deleted) = {
        let store = LogMail::open(dir.path(), opts.clone()).unwrap();
        let mut large = store.begin();
        large.write(&big[..150_000]).await.unwrap(); // spilling already
        let mut order = Vec::new();
        for i in 0..3u64 {
            order.push(deliver(&store, "bob", &pattern(i, 100), 10).await);
        }
        let mut small = store.begin();
        small
            .write(b"started before the large one finished")
            .await
            .unwrap();
        large.write(&big[150_000..]).await.unwrap();
        order.push(large.commit(meta("bob")).await.unwrap());
        order.push(small.commit(meta("bob")).await.unwrap());
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "ids not in commit order: {order:?}"
        );
        let listed = listed_ids(&store, "bob").await;
        assert_eq!(listed, order);
        assert_eq!(read_all(&store, "bob", order[3]).await.unwrap(), big);
        // The highest id is deleted: its tombstone keeps it from being reused.
        let last = *order.last().unwrap();
        assert!(store.delete("bob", last).await.unwrap());
        order.pop();
        (order, last)
    };
    let store = LogMail::open(dir.path(), opts).unwrap();
    let listed = listed_ids(&store, "bob").await;
    assert_eq!(listed, order);
    assert_eq!(read_all(&store, "bob", order[3]).await.unwrap(), big);
    let next = deliver(&store, "bob", b"after reopen", 4).await;
    assert!(next > deleted, "id {next} reused (highest was {deleted})");
}

/// Segments, blobs, the lock file and user files are private (0600) whatever the umask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 1000,
        segment_size: 4096,
        ..Options::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts).unwrap();
    for i in 0..10 {
        deliver(&store, "bob", &pattern(i, 700 + 100 * i as usize), 300).await;
    }
    assert!(store.stats().unwrap().segments > 1 && store.stats().unwrap().blobs > 0);
    cmtp_store::UserStore::add(
        &store,
        &UserRecord {
            name: "bob".into(),
            public_key: [7; 32],
            xzibit: vec![1, 2, 3],
            created: 1,
        },
    )
    .unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    // 2+ segments, 1+ blobs, LOCK, 3 user files.
    assert!(files.len() >= 7, "{files:?}");
    for f in &files {
        let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", f.display());
    }
}

/// `mailbox_usage` follows deliveries and deletes (also after a reopen and read-only),
/// and `list_range` pages through a mailbox exactly as `list` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_usage_and_list_range() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 2000,
        ..Options::default()
    };
    let store = EmbeddedStore::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(store.mailbox_usage("bob").unwrap(), (0, 0));
    let mut bob = Vec::new();
    let mut bytes = 0u64;
    for i in 0..25u64 {
        let size = 100 + 150 * i as usize; // some inline, some blobs
        bob.push(deliver(&store, "bob", &pattern(i, size), 500).await);
        bytes += size as u64;
        deliver(&store, "carol", b"x", 1).await;
    }
    assert_eq!(store.mailbox_usage("bob").unwrap(), (25, bytes));
    assert_eq!(store.mailbox_usage("carol").unwrap(), (25, 25));
    assert_eq!(store.mailbox_usage("nobody").unwrap(), (0, 0));
    let gone = bob.remove(3);
    assert!(store.delete("bob", gone).await.unwrap());
    bytes -= 100 + 150 * 3;
    assert_eq!(store.mailbox_usage("bob").unwrap(), (24, bytes));
    let st = store.stats().unwrap();
    assert_eq!(
        (st.mailboxes["bob"].messages, st.mailboxes["bob"].bytes),
        (24, bytes)
    );

    let full = store.list("bob").await.unwrap();
    assert_eq!(full.iter().map(|i| i.id).collect::<Vec<_>>(), bob);
    for page in [1usize, 7, 24, 100] {
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let batch = store.list_range("bob", after, page).await.unwrap();
            assert!(batch.len() <= page);
            let Some(last) = batch.last() else { break };
            after = last.id;
            got.extend(batch);
        }
        assert_eq!(got, full, "page size {page}");
    }
    assert!(store.list_range("bob", 0, 0).await.unwrap().is_empty());
    assert!(
        store
            .list_range("bob", bob[23], 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_range("bob", bob[10], 2).await.unwrap(),
        full[11..13]
    );
    assert!(store.list_range("nobody", 0, 5).await.unwrap().is_empty());

    let ro = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.mailbox_usage("bob").unwrap(), (24, bytes));
    assert_eq!(
        ro.list_range("bob", bob[10], 2).await.unwrap(),
        full[11..13]
    );
    drop(ro);
    drop(store);
    let store = LogMail::open(dir.path(), opts).unwrap();
    assert_eq!(store.mailbox_usage("bob").unwrap(), (24, bytes));
    assert_eq!(store.mailbox_usage("carol").unwrap(), (25, 25));
}

/// A write cancelled while it switches to a blob file (the server dropped the future on
/// a timeout) must not let a commit log a record whose data differs from what was
/// written: the commit fails and the log stays valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_write_never_commits_partial_data() {
    use std::future::Future;
    use std::task::Poll;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 4096,
        ..Options::default()
    };
    let store = LogMail::open(dir.path(), opts.clone()).unwrap();
    let mut d = store.begin();
    d.write(&pattern(1, 1000)).await.unwrap();
    let big = pattern(2, 100_000);
    let first_poll = {
        let mut fut = std::pin::pin!(d.write(&big));
        std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).map(|r| r.is_ok()))).await
    }; // dropped here, after one poll
    let r = d.commit(meta("bob")).await;
    match first_poll {
        // The usual case: the spill was still running when the write was dropped.
        Poll::Pending => {
            assert!(r.is_err(), "committed after a cancelled write: {r:?}");
            assert_eq!(store.stats().unwrap().messages, 0);
        }
        // The blocking part won the race: the write completed, so must the commit.
        Poll::Ready(ok) => {
            assert!(ok);
            let id = r.unwrap();
            let mut all = pattern(1, 1000);
            all.extend_from_slice(&big);
            assert_eq!(read_all(&store, "bob", id).await.unwrap(), all);
        }
    }
    assert_eq!(store.inline_reserved(), 0);
    drop(store);
    let store = LogMail::open(dir.path(), opts).unwrap();
    let d = deliver(&store, "bob", b"still writable", 3).await;
    assert_eq!(read_all(&store, "bob", d).await.unwrap(), b"still writable");
}
