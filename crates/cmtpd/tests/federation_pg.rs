//! Federation with several nodes on one PostgreSQL database (issue 10): domain a.test is
//! served by two cmtpd processes sharing a database and a server key; b.test is an
//! ordinary server. The relay queue is shared: each queued message is claimed by one
//! node at a time (`MailStore::claim`, leases in the database), every node learns of the
//! others' messages, and a dead node's messages are delivered by the one left.

use std::net::SocketAddr;
use std::path::Path;

use cmtp_crypto::KeyPair;
use cmtp_store::{MailStore, RELAY_QUEUE, UserRecord, UserStore};
use cmtp_store_pg::{PgOptions, PgStore};
use cmtp_testkit::*;

mod fed;
use fed::*;

/// The nodes of a.test, their database and the sender alice's key. The second node's
/// data directory holds a copy of the first one's keys, as an operator would copy them.
struct SharedDomain {
    url: String,
    nodes: Vec<TestServer>,
    alice: KeyPair,
    _data: tempfile::TempDir,
}

fn shared_domain(name: &str, b_addr: SocketAddr, nodes: usize) -> SharedDomain {
    let url = PgCluster::shared().database(name);
    cmtp_store_pg::migrate(&url).unwrap();
    let alice = KeyPair::generate().unwrap();
    PgStore::connect(&url, PgOptions::default())
        .unwrap()
        .add(&UserRecord {
            name: "alice".into(),
            public_key: *alice.public().as_bytes(),
            xzibit: b"not used by this test".to_vec(),
            created: now(),
        })
        .unwrap();
    // Short leases and rescans, so that a takeover happens within the test's patience.
    let mut cfg = config(
        &[("b.test", b_addr)],
        "queue_lease_secs = 2\nqueue_rescan_secs = 1\n",
    );
    cfg.push_str(&format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ));
    let data = tempfile::tempdir().unwrap();
    let mut started: Vec<TestServer> = Vec::new();
    for i in 0..nodes {
        let dir = data.path().join(format!("node{i}"));
        if let Some(first) = started.first() {
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["server.key", "opaque.key"] {
                copy_key(&first.data.join(f), &dir.join(f));
            }
        }
        started.push(TestServer::start_with(Opts {
            data: Some(dir),
            config: cfg.clone(),
            global_args: vec!["--domain".into(), "a.test".into()],
            ..Opts::default()
        }));
    }
    assert!(started.iter().all(|n| n.key == started[0].key));
    SharedDomain {
        url,
        nodes: started,
        alice,
        _data: data,
    }
}

fn copy_key(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Messages in a.test's shared relay queue, read from the database.
fn queue_len(url: &str) -> usize {
    let store = PgStore::connect(url, PgOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store.list(RELAY_QUEUE)).unwrap().len()
}

/// Messages in `mailbox` of an embedded server (admin, read-only).
fn count(srv: &TestServer, mailbox: &str) -> u64 {
    let s = srv.admin(&["mailbox", "stats", "--json"], b"").json();
    s["mailboxes"][mailbox]["messages"].as_u64().unwrap_or(0)
}

fn sum(nodes: &[TestServer], series: &str) -> i64 {
    nodes.iter().map(|n| n.metric(series)).sum()
}

/// Queues `n` messages to bob@b.test through `node`, each acknowledged.
fn queue_through(node: &TestServer, alice: &KeyPair, n: u8, tag: u8) {
    let mut c = node.client();
    for i in 0..n {
        let msg = mail(("bob", "b.test"), ("alice", "a.test"), &[tag, i, 7, 7]);
        assert_eq!(submit(&mut c, alice, "alice", "a.test", &msg), "SUCCESS");
    }
}

#[test]
fn two_nodes_share_the_relay_queue_and_deliver_each_message_once() {
    let b_addr = free_addr();
    let a = shared_domain("relay shared", b_addr, 2);
    queue_through(&a.nodes[0], &a.alice, 15, 0);
    queue_through(&a.nodes[1], &a.alice, 15, 1);
    // b.test is down. Each node tries its own messages and keeps them (a lease past the
    // next attempt); each also learns of the other's, finds them claimed and leaves
    // them alone: the queue is one, not two.
    wait_until("each node met the other's claims", DELIVERY, || {
        a.nodes
            .iter()
            .all(|n| n.metric("cmtpd_relay_claims_held_total") > 0)
    });
    assert_eq!(queue_len(&a.url), 30);

    let b = server("b.test", b_addr, config(&[], ""));
    b.add_user("bob", "pw");
    wait_until("all 30 at B", DELIVERY, || count(&b, "bob") == 30);
    wait_until("the shared queue empty", DELIVERY, || {
        queue_len(&a.url) == 0
    });
    assert_eq!(count(&b, "bob"), 30);
    // Nothing was sent twice: B recognises a repeat by its relay id and counts it.
    assert_eq!(b.metric("cmtpd_relay_duplicates_total"), 0);
    wait_until("both nodes' verdicts counted", DELIVERY, || {
        sum(&a.nodes, "cmtpd_relay_delivered_total") >= 30
    });
    assert_eq!(sum(&a.nodes, "cmtpd_relay_delivered_total"), 30);
}

#[test]
fn a_dead_nodes_queued_mail_is_delivered_by_the_other_node() {
    let b_addr = free_addr();
    let mut a = shared_domain("relay takeover", b_addr, 2);
    queue_through(&a.nodes[0], &a.alice, 20, 0);
    // Node 0 has tried each message (b.test is down) and holds them; node 1 knows them.
    wait_until("node 0 tried all, node 1 met its claims", DELIVERY, || {
        a.nodes[0].metric("cmtpd_relay_deferred_total") >= 20
            && a.nodes[1].metric("cmtpd_relay_claims_held_total") > 0
    });
    a.nodes[0].kill();

    let b = server("b.test", b_addr, config(&[], ""));
    b.add_user("bob", "pw");
    // Node 0's leases end and node 1 takes the messages over.
    wait_until("all 20 at B", DELIVERY, || count(&b, "bob") == 20);
    wait_until("the shared queue empty", DELIVERY, || {
        queue_len(&a.url) == 0
    });
    assert_eq!(b.metric("cmtpd_relay_duplicates_total"), 0);
    assert_eq!(a.nodes[1].metric("cmtpd_relay_delivered_total"), 20);
}
