//! What the relay needs from the mail log: notes (`set_note`), relay ids
//! (`seen_relay_id`), the relay queue's mailbox, and data directories written before
//! notes and relay ids existed. Real files, real fsync.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use cmtp_store::{
    Delivery, EmbeddedStore, LogMail, MAX_NOTE, MailStore, MessageMeta, MessageRead, Options,
    RELAY_QUEUE, StoreError, ensure_path_safe,
};

fn meta(mailbox: &str, note: &[u8], relay_id: Option<[u8; 16]>) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 0,
        body_end: 3,
        note: note.to_vec(),
        relay_id,
    }
}

async fn deliver<S: MailStore>(store: &S, meta: MessageMeta, data: &[u8]) -> u64 {
    let mut d = store.begin();
    for c in data.chunks(4096) {
        d.write(c).await.unwrap();
    }
    d.commit(meta).await.unwrap()
}

async fn read_all<S: MailStore>(store: &S, mailbox: &str, id: u64) -> Vec<u8> {
    let (_, mut r) = store.open(mailbox, id).await.unwrap().unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.read_chunk(65536).await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

async fn note_of<S: MailStore>(store: &S, mailbox: &str, id: u64) -> Option<Vec<u8>> {
    store
        .list(mailbox)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == id)
        .map(|i| i.meta.note)
}

/// Notes and relay ids come back from `list` and `open`, for inline messages and blobs,
/// and survive a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_and_relay_id_are_stored_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        inline_threshold: 1024,
        ..Options::default()
    };
    let big = vec![7u8; 5000];
    let (inline, blob) = {
        let store = LogMail::open(dir.path(), opts.clone()).unwrap();
        let inline = deliver(&store, meta("bob", b"n1", Some([1; 16])), b"abc").await;
        let blob = deliver(&store, meta("bob", &[9; MAX_NOTE], None), &big).await;
        assert_eq!(store.stats().unwrap().blobs, 1);
        (inline, blob)
    };
    let store = LogMail::open(dir.path(), opts).unwrap();
    let list = store.list("bob").await.unwrap();
    assert_eq!(list[0].meta, meta("bob", b"n1", Some([1; 16])));
    assert_eq!(list[1].meta, meta("bob", &[9; MAX_NOTE], None));
    let (info, _) = store.open("bob", inline).await.unwrap().unwrap();
    assert_eq!(info.meta.relay_id, Some([1; 16]));
    assert_eq!(read_all(&store, "bob", inline).await, b"abc");
    assert_eq!(read_all(&store, "bob", blob).await, big);
}

/// `set_note` replaces the note durably: the running store and a reopen see the last
/// one; the message's data and other fields are untouched; missing or deleted ids give
/// `false`; a note over the limit is a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_note_replaces_the_note_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, stats) = {
        let store = LogMail::open(dir.path(), Options::default()).unwrap();
        let a = deliver(&store, meta(RELAY_QUEUE, b"first", Some([3; 16])), b"aaa").await;
        let b = deliver(&store, meta(RELAY_QUEUE, b"", None), b"bbb").await;
        assert!(
            store
                .set_note(RELAY_QUEUE, a, b"second".to_vec())
                .await
                .unwrap()
        );
        assert!(
            store
                .set_note(RELAY_QUEUE, a, b"third".to_vec())
                .await
                .unwrap()
        );
        assert!(
            store
                .set_note(RELAY_QUEUE, b, vec![1; MAX_NOTE])
                .await
                .unwrap()
        );
        assert_eq!(note_of(&store, RELAY_QUEUE, a).await.unwrap(), b"third");
        let (info, _) = store.open(RELAY_QUEUE, a).await.unwrap().unwrap();
        assert_eq!(info.meta, meta(RELAY_QUEUE, b"third", Some([3; 16])));

        // No such message: false, and nothing changes.
        assert!(
            !store
                .set_note(RELAY_QUEUE, 999, b"x".to_vec())
                .await
                .unwrap()
        );
        assert!(!store.set_note("bob", a, b"x".to_vec()).await.unwrap());
        let gone = deliver(&store, meta(RELAY_QUEUE, b"", None), b"ccc").await;
        assert!(store.delete(RELAY_QUEUE, gone).await.unwrap());
        assert!(
            !store
                .set_note(RELAY_QUEUE, gone, b"x".to_vec())
                .await
                .unwrap()
        );

        assert!(matches!(
            store.set_note(RELAY_QUEUE, a, vec![0; MAX_NOTE + 1]).await,
            Err(StoreError::InvalidMeta(_))
        ));
        assert!(matches!(
            store.set_note("a/b", a, Vec::new()).await,
            Err(StoreError::InvalidName(_))
        ));
        let mut d = store.begin();
        d.write(b"x").await.unwrap();
        assert!(matches!(
            d.commit(meta("bob", &[0; MAX_NOTE + 1], None)).await,
            Err(StoreError::InvalidMeta(_))
        ));
        (a, b, store.stats().unwrap())
    };
    // Two notes of `a` were superseded, and the deleted message is dead: the recovered
    // accounting is the running one.
    assert!(stats.dead_bytes > 0 && stats.live_bytes > 0);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stats().unwrap(), stats);
    assert_eq!(note_of(&store, RELAY_QUEUE, a).await.unwrap(), b"third");
    assert_eq!(
        note_of(&store, RELAY_QUEUE, b).await.unwrap(),
        vec![1; MAX_NOTE]
    );
    assert_eq!(read_all(&store, RELAY_QUEUE, a).await, b"aaa");
    // The admin's read-only view applies notes too, including ones written after it
    // opened.
    let ro = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(note_of(&ro, RELAY_QUEUE, a).await.unwrap(), b"third");
    assert!(
        store
            .set_note(RELAY_QUEUE, a, b"fourth".to_vec())
            .await
            .unwrap()
    );
    assert_eq!(note_of(&ro, RELAY_QUEUE, a).await.unwrap(), b"fourth");
    assert_eq!(ro.stats().unwrap(), store.stats().unwrap());
    assert!(matches!(
        ro.set_note(RELAY_QUEUE, a, Vec::new()).await,
        Err(StoreError::ReadOnly)
    ));
    // A note and a delete racing: whichever the log has first wins, on reopen too.
    let (n, d) = tokio::join!(
        store.set_note(RELAY_QUEUE, b, b"racing".to_vec()),
        store.delete(RELAY_QUEUE, b)
    );
    assert!(d.unwrap());
    let noted = n.unwrap();
    drop(store);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert!(
        note_of(&store, RELAY_QUEUE, b).await.is_none(),
        "noted: {noted}"
    );
    assert!(!store.set_note(RELAY_QUEUE, b, b"x".to_vec()).await.unwrap());
}

/// The relay queue is a mailbox like any other for the store: path-safe, listed in the
/// stats, counted by `mailbox_usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_queue_is_an_ordinary_mailbox_to_the_store() {
    assert_eq!(RELAY_QUEUE, "\\queue");
    ensure_path_safe(RELAY_QUEUE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
    deliver(
        &store,
        meta(RELAY_QUEUE, b"to example.net", None),
        b"queued",
    )
    .await;
    deliver(&store, meta("bob", b"", None), b"local").await;
    let st = store.stats().unwrap();
    assert_eq!(st.mailboxes[RELAY_QUEUE].messages, 1);
    assert_eq!(st.mailboxes[RELAY_QUEUE].bytes, 6);
    assert_eq!(st.messages, 2);
    assert_eq!(store.mailbox_usage(RELAY_QUEUE).unwrap(), (1, 6));
}

/// A relay id is seen once its message is committed, still after the message is
/// deleted, and after a reopen (rebuilt from the log); an unknown one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ids_are_remembered_through_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r1 = [0x11; 16];
    let r2 = *b"0123456789abcdef";
    {
        let store = EmbeddedStore::open(dir.path(), Options::default()).unwrap();
        assert!(!store.seen_relay_id(&r1));
        let id = deliver(&store, meta("bob", b"", Some(r1)), b"hello").await;
        assert!(store.seen_relay_id(&r1));
        assert!(!store.seen_relay_id(&r2));
        assert!(store.delete("bob", id).await.unwrap());
        assert!(store.seen_relay_id(&r1), "a deleted message's relay id");
        deliver(&store, meta(RELAY_QUEUE, b"", Some(r2)), b"x").await;
        assert!(store.seen_relay_id(&r2));
    }
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert!(store.seen_relay_id(&r1));
    assert!(store.seen_relay_id(&r2));
    assert!(!store.seen_relay_id(&[0x22; 16]));
}

/// Relay ids older than the window are forgotten: with a one-second window an id is
/// seen right after its commit and no longer once two seconds passed (polled with a
/// deadline), neither by the running store nor after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_ids_older_than_the_window_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        relay_id_window_secs: 1,
        ..Options::default()
    };
    let r = [0x42; 16];
    let store = LogMail::open(dir.path(), opts.clone()).unwrap();
    deliver(&store, meta("bob", b"", Some(r)), b"hello").await;
    let committed = Instant::now();
    assert!(store.seen_relay_id(&r));
    let deadline = committed + Duration::from_secs(10);
    while store.seen_relay_id(&r) {
        assert!(Instant::now() < deadline, "still seen after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Forgotten within the window's second plus the clock's granularity, not before the
    // window passed.
    let took = committed.elapsed();
    assert!(took <= Duration::from_secs(3), "{took:?}");
    drop(store);
    let store = LogMail::open(dir.path(), opts).unwrap();
    assert!(!store.seen_relay_id(&r));
    // With the default window the same log still knows it.
    drop(store);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert!(store.seen_relay_id(&r));
}

/// Writes one record (header + payload) of the given kind, as any version did.
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut rec = b"CMRC".to_vec();
    rec.extend_from_slice(&[kind, 0, 0, 0]);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[4..12]);
    h.update(payload);
    rec.extend_from_slice(&h.finalize().to_le_bytes());
    rec.extend_from_slice(payload);
    rec
}

/// The metadata part of a first-layout (kind 1 / 2) Message or BlobRef payload.
fn old_meta(id: u64, size: u64, mailbox: &str) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&1_700_000_000u64.to_le_bytes()); // received
    p.extend_from_slice(&size.to_le_bytes());
    p.extend_from_slice(&2u32.to_le_bytes()); // version
    p.extend_from_slice(&0u32.to_le_bytes()); // attachment_count
    p.extend_from_slice(&3u64.to_le_bytes()); // body_end
    for s in [mailbox, "alice", "example.org"] {
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    }
    p
}

/// A data directory written before notes and relay ids (kinds 1, 2, 3 only), built byte
/// by byte: it opens, its messages read back with an empty note and no relay id, a note
/// can be set on them, new messages go on after them, and all of it survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_first_layout_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    fs::create_dir_all(mail.join("blobs/tmp")).unwrap();
    let mut seg = b"CMTPLOG1".to_vec();
    seg.extend_from_slice(&1u64.to_le_bytes());
    let mut p = old_meta(1, 5, "bob");
    p.extend_from_slice(b"hello");
    seg.extend(record(1, &p));
    let blob = vec![5u8; 3000];
    fs::write(mail.join("blobs").join(format!("{:016x}", 7)), &blob).unwrap();
    let mut p = old_meta(2, blob.len() as u64, "bob");
    p.extend_from_slice(&crc32fast::hash(&blob).to_le_bytes());
    p.extend_from_slice(&7u64.to_le_bytes());
    seg.extend(record(2, &p));
    let mut p = old_meta(3, 3, "carol");
    p.extend_from_slice(b"bye");
    seg.extend(record(1, &p));
    let mut p = 3u64.to_le_bytes().to_vec();
    p.push(5);
    p.extend_from_slice(b"carol");
    seg.extend(record(3, &p));
    fs::write(mail.join("segment-00000001.log"), &seg).unwrap();

    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert!(store.set_note("bob", 1, b"noted".to_vec()).await.unwrap());
    // That layout had one store-wide id counter; each mailbox now goes on from its own
    // highest id, carol's from her tombstone's.
    assert_eq!(
        deliver(&store, meta("bob", b"new", Some([4; 16])), b"n").await,
        3,
        "bob's ids go on above his old records"
    );
    assert_eq!(
        deliver(&store, meta("carol", b"", None), b"c").await,
        4,
        "carol's deleted id 3 is not given again"
    );
    check_old_layout(&store, &blob).await;
    drop(store);
    assert_first_segment_starts_with(&mail, &seg);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    check_old_layout(&store, &blob).await;
}

/// What `a_data_directory_of_the_first_layout_keeps_working` expects to find.
async fn check_old_layout(store: &LogMail, blob: &[u8]) {
    let list = store.list("bob").await.unwrap();
    assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(list[0].meta, meta("bob", b"noted", None));
    assert_eq!(list[1].meta, meta("bob", b"", None));
    assert_eq!(list[1].received, 1_700_000_000);
    assert_eq!(list[2].meta, meta("bob", b"new", Some([4; 16])));
    assert_eq!(read_all(store, "bob", 1).await, b"hello");
    assert_eq!(read_all(store, "bob", 2).await, blob);
    let carol = store.list("carol").await.unwrap();
    assert_eq!(carol.iter().map(|i| i.id).collect::<Vec<_>>(), [4]);
}

/// The old records are left as they were: new ones are appended after them.
fn assert_first_segment_starts_with(mail: &Path, old: &[u8]) {
    let now = fs::read(mail.join("segment-00000001.log")).unwrap();
    assert!(now.len() > old.len());
    assert_eq!(&now[..old.len()], old);
}
