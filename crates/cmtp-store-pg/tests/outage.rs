//! The database lost and restarted while deliveries run: no acknowledged message is
//! lost, no commit succeeds while the database is down, health says so, and the same
//! store instance recovers without being reopened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cmtp_store::{Delivery, MailStore, StoreHealth};
use cmtp_store_pg::{PgOptions, PgStore, migrate};
use cmtp_testkit::store_suite::{meta, read_all};
use cmtp_testkit::{PgCluster, noise, poll};

fn opts() -> PgOptions {
    PgOptions {
        op_timeout: Duration::from_secs(3),
        ..PgOptions::default()
    }
}

async fn try_deliver(store: &PgStore, data: &[u8]) -> cmtp_store::Result<u64> {
    let mut d = store.begin();
    d.write(data).await?;
    d.commit(meta("bob")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_fail_while_the_database_is_down_and_recover_without_reopen() {
    // A cluster of this test's own: it is stopped and started.
    let c = PgCluster::start();
    let url = c.database("outage");
    migrate(&url).unwrap();
    let store = PgStore::connect(&url, opts()).unwrap();
    let before = try_deliver(&store, b"before").await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);

    c.stop("fast");
    for size in [10, 700_000] {
        let r = try_deliver(&store, &noise(size, 1)).await;
        assert!(
            r.is_err(),
            "a commit succeeded with the database down: {r:?}"
        );
    }
    let StoreHealth::Degraded { reason, since } = store.health() else {
        panic!("health still Ok with the database down");
    };
    assert!(!reason.is_empty() && since > 0);
    assert!(
        store.mailbox_usage("bob").is_err(),
        "usage must fail closed"
    );

    c.start_again();
    // The pool reconnects: the next deliveries succeed on the same instance.
    let after = poll(
        "a commit after the restart",
        Duration::from_secs(30),
        || {
            let r = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(try_deliver(&store, b"after"))
            });
            r.ok()
        },
    );
    assert!(after > before);
    poll("health back to Ok", Duration::from_secs(10), || {
        (store.health() == StoreHealth::Ok).then_some(())
    });
    assert_eq!(read_all(&store, "bob", before).await.unwrap(), b"before");
    assert_eq!(read_all(&store, "bob", after).await.unwrap(), b"after");
    // The failed deliveries left nothing visible.
    assert_eq!(store.mailbox_usage("bob").unwrap(), (2, 11));
}

/// Deliveries keep running while the database restarts (`pg_ctl restart -m fast`):
/// every acknowledged message is there afterwards, byte for byte; some commits failed
/// during the restart; deliveries succeed again without reopening the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_loses_no_acknowledged_message() {
    let c = PgCluster::start();
    let url = c.database("restart load");
    migrate(&url).unwrap();
    let store = Arc::new(PgStore::connect(&url, opts()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let ok_count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (store, stop, ok_count, failed) = (
            store.clone(),
            stop.clone(),
            ok_count.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Every fifth message spans several chunks.
                let size = if i.is_multiple_of(5) { 300_000 } else { 2_000 };
                let data = noise(size, w << 32 | i);
                match try_deliver(&store, &data).await {
                    Ok(id) => {
                        ok_count.fetch_add(1, Ordering::Relaxed);
                        acked.push((id, data));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // Back off a little, as a sender retries later.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
            acked
        }));
    }
    let n0 = poll("deliveries under way", Duration::from_secs(30), || {
        let n = ok_count.load(Ordering::Relaxed);
        (n >= 50).then_some(n)
    });
    tokio::task::block_in_place(|| c.restart());
    // Load goes on after the restart: more acknowledged messages than before it.
    let f = failed.load(Ordering::Relaxed);
    poll(
        "deliveries after the restart",
        Duration::from_secs(60),
        || (ok_count.load(Ordering::Relaxed) >= n0 + 100).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        f > 0,
        "no commit failed across a restart: the test saw no outage"
    );
    let listed = store.list("bob").await.unwrap();
    let mut ids: Vec<u64> = acked.iter().map(|a| a.0).collect();
    ids.sort_unstable();
    let before_dedup = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before_dedup, "an id acknowledged twice");
    let listed_ids: std::collections::BTreeSet<u64> = listed.iter().map(|i| i.id).collect();
    for (id, data) in &acked {
        assert!(listed_ids.contains(id), "acknowledged message {id} lost");
        if id.is_multiple_of(3) {
            assert_eq!(&read_all(&*store, "bob", *id).await.unwrap(), data);
        }
    }
    // A failed commit may still have committed (the answer was lost): at most as many
    // extra messages as failures, never fewer than acknowledged.
    assert!(listed.len() >= acked.len());
    assert_eq!(store.health(), StoreHealth::Ok);
}
