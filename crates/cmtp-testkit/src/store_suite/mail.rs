//! The mail checks of the suite ([`cmtp_store::MailStore`]).

use super::*;

/// Messages of many sizes (empty, small, around and across chunk boundaries) come back
/// byte for byte, listed in order with their metadata, also after a reopen; a wrong
/// mailbox finds nothing; ids go on per mailbox after the reopen.
pub async fn round_trip_and_reopen<S: MailStore>(open: impl Fn() -> S) {
    let msgs: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        Vec::new(),
        noise(100_000, 1),
        noise(256 * 1024, 2),
        noise(256 * 1024 + 1, 3),
        noise(700_000, 4),
    ];
    let mut ids = Vec::new();
    {
        let store = open();
        for (i, m) in msgs.iter().enumerate() {
            ids.push(deliver(&store, "bob", m, [777, 65_536, 1 << 20][i % 3]).await);
        }
        let pm = deliver(&store, "", b"to the postmaster", 3).await;
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let list = store.list("bob").await.unwrap();
        assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
        assert_eq!(list[2].size, 100_000);
        assert_eq!(list[0].meta, meta("bob"));
        assert!(list.iter().all(|i| i.received > 1_600_000_000));
        assert_eq!(store.list("").await.unwrap()[0].id, pm);
        assert!(store.list("nobody").await.unwrap().is_empty());
        for (id, m) in ids.iter().zip(&msgs) {
            assert_eq!(&read_all(&store, "bob", *id).await.unwrap(), m);
        }
        assert!(store.open("carol", ids[0]).await.unwrap().is_none());
        let st = store.stats().unwrap();
        assert_eq!(st.messages, msgs.len() as u64 + 1);
        assert_eq!(st.mailboxes["bob"].messages, msgs.len() as u64);
        assert_eq!(
            st.mailboxes["bob"].bytes,
            msgs.iter().map(|m| m.len() as u64).sum::<u64>()
        );
        assert_eq!(st.mailboxes[""].messages, 1);
    }
    let store = open();
    assert_eq!(listed_ids(&store, "bob").await, ids);
    for (id, m) in ids.iter().zip(&msgs) {
        assert_eq!(&read_all(&store, "bob", *id).await.unwrap(), m);
    }
    let next = deliver(&store, "bob", b"x", 1).await;
    assert_eq!(next, *ids.iter().max().unwrap() + 1);
}

/// Many concurrent commits share commits (group commit): fewer batches than records,
/// the histograms add up, every message is there and intact.
pub async fn concurrent_deliveries_are_group_committed<S: MailStore>(store: S) {
    let store = Arc::new(store);
    const N: usize = 256;
    let before = store.metrics();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let data = noise(10 * 1024, i as u64);
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
    assert_eq!(m.records - before.records, N as u64);
    let batches = m.batches - before.batches;
    assert!(batches < N as u64, "no group commit: {m:?}");
    assert_eq!(m.batch_hist.iter().sum::<u64>(), m.batches);
    assert_eq!(m.fsync_hist.iter().sum::<u64>(), m.fsyncs);
    let mut ids: Vec<u64> = done.iter().map(|d| d.0).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N, "an id given twice");
    assert_eq!(store.list("bob").await.unwrap().len(), N);
    for (id, data) in done {
        assert_eq!(read_all(&*store, "bob", id).await.unwrap(), data);
    }
}

/// Deletes are durable, only in the right mailbox, once; a delivery dropped before its
/// commit (small or large) leaves nothing visible.
pub async fn delete_and_abort<S: MailStore>(open: impl Fn() -> S) {
    let (a, b) = {
        let store = open();
        let a = deliver(&store, "bob", b"one", 2).await;
        let b = deliver(&store, "bob", b"two", 2).await;
        assert!(!store.delete("carol", a).await.unwrap(), "wrong mailbox");
        assert!(store.delete("bob", a).await.unwrap());
        assert!(!store.delete("bob", a).await.unwrap(), "deleting twice");
        assert!(!store.delete("bob", 9999).await.unwrap());
        for size in [10, 600_000] {
            let mut d = store.begin();
            d.write(&noise(size, 9)).await.unwrap();
            drop(d);
        }
        let st = store.stats().unwrap();
        assert_eq!(st.messages, 1);
        assert_eq!(st.mailboxes["bob"].bytes, 3);
        (a, b)
    };
    let store = open();
    assert_eq!(listed_ids(&store, "bob").await, vec![b]);
    assert!(store.open("bob", a).await.unwrap().is_none());
    assert_eq!(store.mailbox_usage("bob").unwrap(), (1, 3));
}

/// Bad metadata is a typed error and stores nothing.
pub async fn bad_metadata_is_a_typed_error<S: MailStore>(store: S) {
    for mb in ["../x", "a/b", ".", "..", "\u{0}"] {
        let r = store.begin().commit(meta(mb)).await;
        assert!(
            matches!(r, Err(StoreError::InvalidName(_))),
            "{mb:?}: {r:?}"
        );
    }
    assert!(store.begin().commit(meta("a\\b")).await.is_ok());
    let mut m = meta("bob");
    m.src_domain = "d".repeat(256);
    assert!(matches!(
        store.begin().commit(m).await,
        Err(StoreError::InvalidMeta(_))
    ));
    let mut m = meta("bob");
    m.note = vec![0; cmtp_store::MAX_NOTE + 1];
    assert!(matches!(
        store.begin().commit(m).await,
        Err(StoreError::InvalidMeta(_))
    ));
    assert_eq!(store.stats().unwrap().messages, 1);
}

/// Ids ascend in commit order: a large message started first and committed late gets
/// a higher id than those committed before it; the highest id, deleted, is never given
/// again, also after a reopen.
pub async fn ids_ascend_in_commit_order<S: MailStore>(open: impl Fn() -> S) {
    let big = noise(600_000, 7);
    let (order, deleted) = {
        let store = open();
        let mut large = store.begin();
        large.write(&big[..300_000]).await.unwrap();
        let mut order = Vec::new();
        for i in 0..3u64 {
            order.push(deliver(&store, "bob", &noise(100, i), 10).await);
        }
        let mut small = store.begin();
        small
            .write(b"started before the large one finished")
            .await
            .unwrap();
        large.write(&big[300_000..]).await.unwrap();
        order.push(large.commit(meta("bob")).await.unwrap());
        order.push(small.commit(meta("bob")).await.unwrap());
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(listed_ids(&store, "bob").await, order);
        assert_eq!(read_all(&store, "bob", order[3]).await.unwrap(), big);
        let last = *order.last().unwrap();
        assert!(store.delete("bob", last).await.unwrap());
        order.pop();
        (order, last)
    };
    let store = open();
    assert_eq!(listed_ids(&store, "bob").await, order);
    assert_eq!(read_all(&store, "bob", order[3]).await.unwrap(), big);
    let next = deliver(&store, "bob", b"after reopen", 4).await;
    assert!(next > deleted, "id {next} reused (highest was {deleted})");
}

/// Each mailbox counts 1, 2, 3, … on its own; emptying one never lets an id be given
/// again; the postmaster's and the relay queue's mailboxes count on their own too.
pub async fn each_mailbox_has_its_own_id_sequence<S: MailStore>(open: impl Fn() -> S) {
    let boxes = ["bob", "carol", "", RELAY_QUEUE];
    {
        let store = open();
        for round in 1..=3u64 {
            for mb in boxes {
                let id = deliver(&store, mb, &noise(50, round), 16).await;
                assert_eq!(id, round, "mailbox {mb:?}: ids have gaps");
            }
        }
        assert!(store.delete("carol", 3).await.unwrap());
        assert_eq!(deliver(&store, "carol", b"four", 4).await, 4);
        for id in [1, 2, 4] {
            assert!(store.delete("carol", id).await.unwrap());
        }
        assert!(listed_ids(&store, "carol").await.is_empty());
    }
    let store = open();
    assert_eq!(listed_ids(&store, "bob").await, [1, 2, 3]);
    assert_eq!(deliver(&store, "carol", b"five", 4).await, 5);
    assert_eq!(deliver(&store, "bob", b"four", 4).await, 4);
    assert_eq!(deliver(&store, "dave", b"first", 4).await, 1);
    assert_eq!(listed_ids(&store, "").await, [1, 2, 3]);
}

/// `mailbox_usage` follows deliveries and deletes (also after a reopen) and agrees with
/// `stats`; `list_range` pages through a mailbox exactly as `list` shows it.
pub async fn mailbox_usage_and_list_range<S: MailStore>(open: impl Fn() -> S) {
    let store = open();
    assert_eq!(store.mailbox_usage("bob").unwrap(), (0, 0));
    let mut bob = Vec::new();
    let mut bytes = 0u64;
    for i in 0..25u64 {
        let size = 100 + 150 * i as usize;
        bob.push(deliver(&store, "bob", &noise(size, i), 500).await);
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
    drop(store);
    let store = open();
    assert_eq!(store.mailbox_usage("bob").unwrap(), (24, bytes));
    assert_eq!(store.mailbox_usage("carol").unwrap(), (25, 25));
}

/// A write cancelled midway (the server dropped the future on a timeout) never lets a
/// commit store data that differs from what was written; the store stays writable.
pub async fn cancelled_write_never_commits_partial_data<S: MailStore>(store: S) {
    use std::future::Future;
    use std::task::Poll;
    let mut d = store.begin();
    d.write(&noise(1000, 1)).await.unwrap();
    let big = noise(700_000, 2);
    let first_poll = {
        let mut fut = std::pin::pin!(d.write(&big));
        std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).map(|r| r.is_ok()))).await
    };
    let r = d.commit(meta("bob")).await;
    match first_poll {
        Poll::Pending => {
            assert!(r.is_err(), "committed after a cancelled write: {r:?}");
            assert_eq!(store.stats().unwrap().messages, 0);
        }
        Poll::Ready(ok) => {
            assert!(ok);
            let id = r.unwrap();
            let mut all = noise(1000, 1);
            all.extend_from_slice(&big);
            assert_eq!(read_all(&store, "bob", id).await.unwrap(), all);
        }
    }
    let d = deliver(&store, "bob", b"still writable", 3).await;
    assert_eq!(read_all(&store, "bob", d).await.unwrap(), b"still writable");
}

/// Notes and relay ids are stored with the message and come back from `list` and
/// `open` (also after a reopen); `set_note` replaces a note durably, leaves the bytes
/// alone, answers `false` for a missing message and refuses an overlong note.
pub async fn notes_and_relay_ids<S: MailStore>(open: impl Fn() -> S) {
    let rid = [7u8; 16];
    let (small, large) = {
        let store = open();
        let mut m = meta(RELAY_QUEUE);
        m.note = b"dest=example.net attempts=0".to_vec();
        m.relay_id = Some(rid);
        let small = deliver_meta(&store, m.clone(), b"queued", 2).await;
        let large = deliver_meta(&store, m.clone(), &noise(300_000, 5), 70_000).await;
        let listed = store.list(RELAY_QUEUE).await.unwrap();
        assert_eq!(listed[0].meta, m);
        assert_eq!(
            store
                .open(RELAY_QUEUE, large)
                .await
                .unwrap()
                .unwrap()
                .0
                .meta,
            m
        );
        assert!(store.seen_relay_id(&rid));
        assert!(!store.seen_relay_id(&[8u8; 16]));
        assert!(
            store
                .set_note(RELAY_QUEUE, small, b"attempts=1".to_vec())
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_note(RELAY_QUEUE, 999, b"x".to_vec())
                .await
                .unwrap()
        );
        assert!(!store.set_note("bob", small, b"x".to_vec()).await.unwrap());
        let r = store
            .set_note(RELAY_QUEUE, small, vec![0; cmtp_store::MAX_NOTE + 1])
            .await;
        assert!(matches!(r, Err(StoreError::InvalidMeta(_))), "{r:?}");
        assert_eq!(store.mailbox_usage(RELAY_QUEUE).unwrap(), (2, 300_006));
        // Deleted, the relay id is still remembered.
        assert!(store.delete(RELAY_QUEUE, large).await.unwrap());
        assert!(
            !store
                .set_note(RELAY_QUEUE, large, b"x".to_vec())
                .await
                .unwrap()
        );
        assert!(store.seen_relay_id(&rid));
        (small, large)
    };
    let store = open();
    assert!(store.seen_relay_id(&rid));
    let (info, _) = store.open(RELAY_QUEUE, small).await.unwrap().unwrap();
    assert_eq!(info.meta.note, b"attempts=1");
    assert_eq!(info.meta.relay_id, Some(rid));
    assert_eq!(
        read_all(&store, RELAY_QUEUE, small).await.unwrap(),
        b"queued"
    );
    assert!(store.open(RELAY_QUEUE, large).await.unwrap().is_none());
    assert!(store.stats().unwrap().mailboxes.contains_key(RELAY_QUEUE));
}

/// Claims of queued messages: existing ones are granted with their current metadata
/// (the note as last written), missing ones are `Gone`, answers come in the order
/// asked, and a message deleted after its claim is `Gone` at the next. (Leases held by
/// another node are the shared backends' own tests: a single-process store has nobody
/// to share with.)
pub async fn claims_grant_existing_messages<S: MailStore>(store: S) {
    let mut m = meta(RELAY_QUEUE);
    m.note = b"attempts=0".to_vec();
    let a = deliver_meta(&store, m.clone(), b"first", 2).await;
    let b = deliver_meta(&store, m.clone(), b"second", 3).await;
    assert!(
        store
            .set_note(RELAY_QUEUE, b, b"attempts=1".to_vec())
            .await
            .unwrap()
    );
    let got = store
        .claim(RELAY_QUEUE, &[b, 999, a], "node-1", 2_000, 1_000)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    match (&got[0], &got[1], &got[2]) {
        (Claim::Granted(ib), Claim::Gone, Claim::Granted(ia)) => {
            assert_eq!((ib.id, ib.size), (b, 6));
            assert_eq!(ib.meta.note, b"attempts=1");
            assert_eq!((ia.id, &ia.meta.note), (a, &m.note));
        }
        other => panic!("unexpected claims {other:?}"),
    }
    // The same owner may claim again (a renewed lease).
    let again = store
        .claim(RELAY_QUEUE, &[a], "node-1", 3_000, 1_500)
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [Claim::Granted(i)] if i.id == a),
        "{again:?}"
    );
    assert!(store.delete(RELAY_QUEUE, a).await.unwrap());
    let gone = store
        .claim(RELAY_QUEUE, &[a, b], "node-1", 3_000, 1_500)
        .await
        .unwrap();
    assert!(
        matches!(&gone[..], [Claim::Gone, Claim::Granted(_)]),
        "{gone:?}"
    );
    assert!(
        store
            .claim(RELAY_QUEUE, &[], "node-1", 1, 1)
            .await
            .unwrap()
            .is_empty()
    );
}
