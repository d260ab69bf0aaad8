//! Two store instances ("nodes") on one database: what one commits the other lists,
//! reads and deletes at once; ids stay unique and ascending per mailbox under
//! concurrent commits from both; quotas and relay ids agree across nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cmtp_store::{Delivery, MailStore, StoreHealth};
use cmtp_store_pg::{PgOptions, PgStore, migrate};
use cmtp_testkit::store_suite::{deliver, deliver_meta, listed_ids, meta, read_all};
use cmtp_testkit::{PgCluster, noise, wait_until};

fn two_nodes(name: &str) -> (String, PgStore, PgStore) {
    let url = PgCluster::shared().database(name);
    migrate(&url).unwrap();
    let a = PgStore::connect(&url, PgOptions::default()).unwrap();
    // The second node commits with three transactions at once, as a busier node might.
    let b = PgStore::connect(
        &url,
        PgOptions {
            committers: 3,
            ..PgOptions::default()
        },
    )
    .unwrap();
    (url, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_commits_the_other_serves_at_once() {
    let (_, a, b) = two_nodes("serve across");
    let big = noise(900_000, 1);
    let x = deliver(&a, "bob", b"hello from a", 5).await;
    let y = deliver(&a, "bob", &big, 100_000).await;
    // No cache to wait for: the next call on b sees the commit.
    assert_eq!(listed_ids(&b, "bob").await, [x, y]);
    assert_eq!(read_all(&b, "bob", y).await.unwrap(), big);
    assert_eq!(b.mailbox_usage("bob").unwrap(), (2, 12 + 900_000));
    assert!(b.delete("bob", x).await.unwrap());
    assert!(!a.delete("bob", x).await.unwrap(), "deleted twice");
    assert_eq!(listed_ids(&a, "bob").await, [y]);
    assert_eq!(a.mailbox_usage("bob").unwrap(), (1, 900_000));
    // The next id on either node goes on after the highest, never reusing x.
    assert_eq!(deliver(&b, "bob", b"z", 1).await, y + 1);

    let mut m = meta("\\queue");
    m.relay_id = Some([9; 16]);
    deliver_meta(&a, m, b"relayed", 3).await;
    assert!(b.seen_relay_id(&[9; 16]));
    assert!(!b.seen_relay_id(&[8; 16]));
    assert_eq!(a.health(), StoreHealth::Ok);
    assert_eq!(b.health(), StoreHealth::Ok);
}

/// Both nodes commit concurrently into the same mailboxes. Per mailbox the ids are
/// exactly 1..=n (unique, no gaps), each node's own ids ascend in its commit order,
/// and the listing on either node is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_unique_and_ascending_under_concurrent_commits_from_both() {
    let (_, a, b) = two_nodes("ids across");
    let nodes = [Arc::new(a), Arc::new(b)];
    const PER_TASK: u64 = 40;
    let boxes = ["bob", "carol", "dave"];
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for t in 0..6u64 {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..PER_TASK {
                    let mb = boxes[((t + i) % 3) as usize];
                    let data = noise(64 + i as usize, (n as u64) << 32 | t << 16 | i);
                    let id = deliver(&*node, mb, &data, 17).await;
                    got.push((mb, id, data));
                }
                got
            }));
        }
    }
    let mut per_box: BTreeMap<&str, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for t in tasks {
        let got = t.await.unwrap();
        // One task commits one after another: its ids in each mailbox ascend.
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for (mb, id, data) in got {
            let prev = last.insert(mb, id).unwrap_or(0);
            assert!(id > prev, "{mb}: id {id} after {prev}");
            per_box.entry(mb).or_default().push((id, data));
        }
    }
    for (mb, mut msgs) in per_box {
        msgs.sort_by_key(|m| m.0);
        let ids: Vec<u64> = msgs.iter().map(|m| m.0).collect();
        let expect: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, expect, "{mb}: ids not exactly 1..=n");
        assert_eq!(listed_ids(&*nodes[0], mb).await, ids);
        assert_eq!(listed_ids(&*nodes[1], mb).await, ids);
        for (id, data) in msgs.iter().step_by(7) {
            assert_eq!(&read_all(&*nodes[1], mb, *id).await.unwrap(), data);
        }
        let bytes: u64 = msgs.iter().map(|m| m.1.len() as u64).sum();
        let usage = (ids.len() as u64, bytes);
        assert_eq!(nodes[0].mailbox_usage(mb).unwrap(), usage);
        assert_eq!(nodes[1].mailbox_usage(mb).unwrap(), usage);
    }
    // Group commit happened on the nodes (fewer transactions than messages).
    for n in &nodes {
        let m = n.metrics();
        assert!(m.batches < m.records, "{m:?}");
    }
}

/// Deletes on one node and deliveries on the other at the same time keep the quota
/// totals exact on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_agree_across_nodes_under_concurrent_deletes() {
    let (_, a, b) = two_nodes("quota across");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut first = Vec::new();
    for i in 0..50u64 {
        first.push(deliver(&*a, "bob", &noise(100, i), 100).await);
    }
    let deleter = {
        let b = b.clone();
        let ids = first.clone();
        tokio::spawn(async move {
            for id in ids.iter().step_by(2) {
                assert!(b.delete("bob", *id).await.unwrap());
            }
        })
    };
    let adder = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..30u64 {
                deliver(&*a, "bob", &noise(1000, 100 + i), 1000).await;
            }
        })
    };
    deleter.await.unwrap();
    adder.await.unwrap();
    let expect = (25 + 30, 25 * 100 + 30 * 1000);
    assert_eq!(a.mailbox_usage("bob").unwrap(), expect);
    assert_eq!(b.mailbox_usage("bob").unwrap(), expect);
    let listed = b.list("bob").await.unwrap();
    assert_eq!(listed.len() as u64, expect.0);
    assert_eq!(listed.iter().map(|i| i.size).sum::<u64>(), expect.1);
}

/// A large delivery dropped before its commit leaves no chunk and no upload row behind
/// (the cleanup runs in the background: polled with a deadline); a delivery of a node
/// that died (its upload row left) is removed by the sweep once old enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_and_abandoned_uploads_leave_nothing() {
    let c = PgCluster::shared();
    let url = c.database("uploads");
    migrate(&url).unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let mut d = store.begin();
    d.write(&noise(1_000_000, 1)).await.unwrap();
    assert_eq!(c.psql(&db, "SELECT count(*) FROM uploads"), "1");
    assert_ne!(c.psql(&db, "SELECT count(*) FROM message_chunks"), "0");
    drop(d);
    wait_until(
        "the aborted upload's removal",
        Duration::from_secs(10),
        || {
            c.psql(&db, "SELECT count(*) FROM message_chunks") == "0"
                && c.psql(&db, "SELECT count(*) FROM uploads") == "0"
        },
    );

    // A node "dies" mid-delivery: the delivery is leaked, never dropped.
    let mut d = store.begin();
    d.write(&noise(600_000, 2)).await.unwrap();
    std::mem::forget(d);
    assert_eq!(store.sweep().unwrap(), 0, "a fresh upload was swept");
    // `started < now - 0` needs the clock to move past the upload's second.
    wait_until("the upload to age", Duration::from_secs(5), || {
        c.psql(
            &db,
            "SELECT count(*) FROM uploads WHERE started < floor(extract(epoch FROM now()))::bigint",
        ) == "1"
    });
    // A node whose abandonment age is 0 s: its sweeper (at start, then hourly) or an
    // explicit sweep removes the upload, chunks and all.
    let aged = PgStore::connect(
        &url,
        PgOptions {
            abandoned_upload_secs: 0,
            ..PgOptions::default()
        },
    )
    .unwrap();
    assert!(aged.sweep().unwrap() <= 1);
    assert_eq!(c.psql(&db, "SELECT count(*) FROM uploads"), "0");
    assert_eq!(c.psql(&db, "SELECT count(*) FROM message_chunks"), "0");
    // A committed message is never swept.
    let id = deliver(&store, "bob", &noise(600_000, 3), 50_000).await;
    assert_eq!(aged.sweep().unwrap(), 0);
    assert_eq!(
        read_all(&store, "bob", id).await.unwrap(),
        noise(600_000, 3)
    );
}

/// The relay queue's claim across nodes: both nodes claim the same 40 queued messages
/// at once, over and over; each message is granted to exactly one of them. The loser
/// sees who holds it and until when; once that lease has ended (a dead node), the
/// other node takes the message over; a deleted message is gone for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queued_message_is_claimed_by_one_node_and_taken_over_after_its_lease() {
    use cmtp_store::{Claim, RELAY_QUEUE};
    let (_, a, b) = two_nodes("claims");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut ids = Vec::new();
    for i in 0..40u8 {
        ids.push(deliver(&*a, RELAY_QUEUE, &[i; 10], 10).await);
    }
    let now = 1_000_000;
    let claim = |store: Arc<PgStore>, owner: &'static str, ids: Vec<u64>| {
        tokio::spawn(async move {
            store
                .claim(RELAY_QUEUE, &ids, owner, now + 60, now)
                .await
                .unwrap()
        })
    };
    // Overlapping batches in different orders, so the claims race row by row.
    let mut reversed = ids.clone();
    reversed.reverse();
    let (x, y) = (
        claim(a.clone(), "node-a", ids.clone()),
        claim(b.clone(), "node-b", reversed),
    );
    let (x, mut y) = (x.await.unwrap(), y.await.unwrap());
    y.reverse();
    let mut winners = BTreeMap::new();
    for ((id, ca), cb) in ids.iter().zip(&x).zip(&y) {
        let w = match (ca, cb) {
            (Claim::Granted(_), Claim::Held { owner, until }) => {
                assert_eq!((owner.as_str(), *until), ("node-a", now + 60));
                "a"
            }
            (Claim::Held { owner, until }, Claim::Granted(_)) => {
                assert_eq!((owner.as_str(), *until), ("node-b", now + 60));
                "b"
            }
            other => panic!("message {id}: not exactly one winner: {other:?}"),
        };
        winners.insert(*id, w);
    }
    // Node b, before a's lease ends: refused; a renews its own.
    let a_won: Vec<u64> = ids.iter().copied().filter(|i| winners[i] == "a").collect();
    let later = b
        .claim(RELAY_QUEUE, &a_won, "node-b", now + 120, now + 59)
        .await
        .unwrap();
    assert!(
        later.iter().all(|c| matches!(c, Claim::Held { .. })),
        "{later:?}"
    );
    // a "dies": at the end of its lease, b takes every one of them over.
    let taken = b
        .claim(RELAY_QUEUE, &a_won, "node-b", now + 120, now + 60)
        .await
        .unwrap();
    assert!(
        taken.iter().all(|c| matches!(c, Claim::Granted(_))),
        "{taken:?}"
    );
    // Delivered and deleted by b: gone for a too.
    if let Some(&first) = a_won.first() {
        assert!(b.delete(RELAY_QUEUE, first).await.unwrap());
        let g = a
            .claim(RELAY_QUEUE, &[first], "node-a", now + 500, now + 400)
            .await
            .unwrap();
        assert_eq!(g, [Claim::Gone]);
    }
}

/// `commit_within` holds a mailbox's quota across nodes: deliveries committed
/// concurrently through both (one-chunk and chunked ones, each admitted by its node
/// alone) store exactly the limit; the rest fail with `OverQuota`, leave nothing
/// visible and their chunks are removed. A mailbox's byte limit is checked as the
/// quota gate does (the message that crosses it goes in, the next does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_within_holds_the_quota_across_nodes() {
    use cmtp_store::{MailboxLimit, StoreError};
    let (url, a, b) = two_nodes("quota across");
    let (a, b) = (Arc::new(a), Arc::new(b));
    let limit = MailboxLimit {
        messages: 10,
        bytes: u64::MAX,
    };
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            // Every fourth one spans several chunks (an upload before its commit).
            let size = if i % 4 == 0 { 600_000 } else { 1_000 };
            let mut d = store.begin();
            d.write(&noise(size, i)).await.unwrap();
            d.commit_within(meta("bob"), limit).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::OverQuota) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(listed_ids(&*a, "bob").await, (1..=10).collect::<Vec<_>>());
    assert_eq!(a.mailbox_usage("bob").unwrap().0, 10);
    // The refused uploads are deleted in the background.
    let db = url.rsplit('/').next().unwrap().to_owned();
    wait_until("refused uploads removed", Duration::from_secs(30), || {
        PgCluster::shared().psql(&db, "SELECT count(*) FROM uploads") == "0"
    });
    let chunks: u64 = PgCluster::shared()
        .psql(&db, "SELECT count(DISTINCT key) FROM message_chunks")
        .parse()
        .unwrap();
    assert_eq!(chunks, 10, "chunks of refused messages left behind");

    // Bytes: under the limit, in; at or over it, out.
    let small = MailboxLimit {
        messages: 100,
        bytes: 2_500,
    };
    for (want_ok, size) in [(true, 2_000), (true, 2_000), (false, 10)] {
        let mut d = b.begin();
        d.write(&noise(size, 7)).await.unwrap();
        let r = d.commit_within(meta("carol"), small).await;
        assert_eq!(r.is_ok(), want_ok, "{size}: {r:?}");
    }
    assert_eq!(a.mailbox_usage("carol").unwrap(), (2, 4_000));
}
