//! Tests of the log's threads against real files: group commit across rotations, and a
//! failed fdatasync.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{LogMail, Options};
use crate::{Delivery, MailStore, MessageMeta, MessageRead, Result, StoreError, StoreHealth};

/// The ids a mailbox lists, in order.
async fn listed_ids(store: &LogMail, mailbox: &str) -> Vec<u64> {
    store
        .list(mailbox)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect()
}

fn meta(mailbox: &str) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.into(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 0,
        body_end: 3,
        note: Vec::new(),
        relay_id: None,
    }
}

fn body(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(131)) as u8)
        .collect()
}

async fn deliver(store: &LogMail, mailbox: &str, data: &[u8]) -> Result<u64> {
    let mut d = store.begin();
    for c in data.chunks(4096) {
        d.write(c).await?;
    }
    d.commit(meta(mailbox)).await
}

async fn read(store: &LogMail, mailbox: &str, id: u64) -> Vec<u8> {
    let (_, mut r) = store.open(mailbox, id).await.unwrap().unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.read_chunk(1 << 20).await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

/// Many connections delivering at once through the pipelined writer, across several
/// segment rotations and preallocation steps: far fewer log fsyncs than messages,
/// every message acknowledged is listed and readable, ids ascend in log order, and
/// all of it survives a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commits_share_fsyncs_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 3 << 20,
        ..Options::default()
    };
    let store = Arc::new(LogMail::open(dir.path(), opts.clone()).unwrap());
    const CONNS: u64 = 32;
    const EACH: u64 = 25;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for k in 0..EACH {
                let seed = c * 1000 + k;
                let data = body(seed, 10 * 1024 + (seed as usize % 3000));
                let id = deliver(&store, "bob", &data).await.unwrap();
                // Visible once acknowledged.
                assert!(store.inner.shared.index.lock().get("bob", id).is_some());
                out.push((id, data));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = CONNS * EACH;
    let m = store.metrics();
    assert_eq!(m.records, n);
    assert!(m.batches < n, "no group commit: {m:?}");
    assert!(m.fsyncs < n, "an fsync per message: {m:?}");
    assert_eq!(m.fsync_hist.iter().sum::<u64>(), m.fsyncs);
    let stats = store.stats().unwrap();
    assert!(stats.segments >= 3, "{stats:?}");
    let listed = listed_ids(&store, "bob").await;
    assert_eq!(listed.len() as u64, n);
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
    for (id, data) in &all {
        assert_eq!(&read(&store, "bob", *id).await, data);
    }
    drop(store);
    let store = LogMail::open(dir.path(), opts).unwrap();
    assert_eq!(store.list("bob").await.unwrap().len() as u64, n);
    for (id, data) in all.iter().step_by(7) {
        assert_eq!(&read(&store, "bob", *id).await, data);
    }
}

/// A failing log fdatasync (injected: the syncer's call returns an error) fails every
/// waiter of that sync and makes nothing of it visible; while it fails, every commit
/// fails and the store reports degraded. Once fsyncs work again the store repairs
/// itself without a restart: deliveries succeed, and the failed batches — written to
/// the page cache, never acknowledged — are gone from the file too (not even a reopen
/// finds them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_fails_its_batch_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LogMail::open(dir.path(), Options::default()).unwrap());
    let first = deliver(&store, "bob", b"durable").await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
    store
        .inner
        .shared
        .inject_sync_error
        .store(true, Ordering::Release);
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            deliver(&store, "bob", &body(i, 5000)).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Err(StoreError::Io(_))), "{r:?}");
    }
    assert!(matches!(
        deliver(&store, "bob", b"later").await,
        Err(StoreError::Io(_))
    ));
    assert!(matches!(
        store.delete("bob", first).await,
        Err(StoreError::Io(_))
    ));
    match store.health() {
        StoreHealth::Degraded { reason, since } => {
            assert!(reason.contains("injected fdatasync error"), "{reason}");
            assert!(since > 0);
        }
        StoreHealth::Ok => panic!("healthy while every fdatasync fails"),
    }
    assert!(store.metrics().write_failures >= 1);
    assert_eq!(listed_ids(&store, "bob").await, vec![first]);

    // fsyncs work again: no restart needed.
    store
        .inner
        .shared
        .inject_sync_error
        .store(false, Ordering::Release);
    let second = deliver(&store, "bob", b"after the failure").await.unwrap();
    assert!(second > first);
    assert_eq!(store.health(), StoreHealth::Ok);
    assert_eq!(listed_ids(&store, "bob").await, vec![first, second]);
    drop(store);
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    assert_eq!(listed_ids(&store, "bob").await, vec![first, second]);
    assert_eq!(read(&store, "bob", first).await, b"durable");
    assert_eq!(read(&store, "bob", second).await, b"after the failure");
}
