//! `[store] backend = "postgres"`: two cmtpd processes on one PostgreSQL database (a
//! real cluster started by the test process) serve one domain; `cmtpd db migrate`
//! creates the schema and `serve` refuses a database without it.

use std::process::Command;

use cmtp_crypto::KeyPair;
use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_store::{UserRecord, UserStore};
use cmtp_store_pg::{PgOptions, PgStore};
use cmtp_testkit::*;

fn postgres_config(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
}

/// `cmtpd --data-dir DATA ARGS` with the database given by `$CMTPD_DATABASE_URL`.
fn cmtpd_with_url(data: &std::path::Path, url: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(cmtpd_bin());
    cmd.env("CMTPD_DATABASE_URL", url)
        .arg("--data-dir")
        .arg(data)
        .args(args);
    run(cmd, b"")
}

#[test]
fn two_nodes_on_one_database_serve_one_domain() {
    let url = PgCluster::shared().database("cmtpd two nodes");
    // The nodes share the server key: one data directory here, a copied key file in a
    // real deployment.
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    admin(&data, &["init"], b"").ok();

    // No schema yet: serve refuses, naming the fix.
    let refused = run(
        {
            let mut c = Command::new(cmtpd_bin());
            c.env("CMTPD_DATABASE_URL", &url)
                .arg("--data-dir")
                .arg(&data);
            // `[store]` comes from a file: the backend has no command-line flag.
            let cfg = shared.path().join("pg.toml");
            std::fs::write(&cfg, "[store]\nbackend = \"postgres\"\n").unwrap();
            c.arg("--config").arg(&cfg).arg("serve");
            c.args(["--listen", "127.0.0.1:0", "--no-metrics"]);
            c
        },
        b"",
    );
    assert!(!refused.success(), "served on a database without schema");
    assert!(
        refused.stderr.contains("cmtpd db migrate"),
        "{}",
        refused.stderr
    );

    let out = cmtpd_with_url(&data, &url, &["db", "migrate"]);
    assert!(
        out.ok().contains("migrated from version 0"),
        "{}",
        out.stdout
    );
    let again = cmtpd_with_url(&data, &url, &["db", "migrate"]);
    assert!(
        again.ok().contains("already at version"),
        "{}",
        again.stdout
    );

    // bob, written straight into the database (with a key the test knows; `user add` on
    // postgres is tested in admin_pg.rs).
    let bob = KeyPair::generate().unwrap();
    PgStore::connect(&url, PgOptions::default())
        .unwrap()
        .add(&UserRecord {
            name: "bob".into(),
            public_key: *bob.public().as_bytes(),
            xzibit: b"not used by this test".to_vec(),
            created: now(),
        })
        .unwrap();

    let start = || {
        TestServer::start_with(Opts {
            data: Some(data.clone()),
            config: postgres_config(&url),
            ..Opts::default()
        })
    };
    let node1 = start();
    let node2 = start();
    assert_eq!(node1.key, node2.key, "the nodes must share the server key");
    for n in [&node1, &node2] {
        assert_eq!(n.http_get("/health").0, "HTTP/1.0 200 OK");
    }

    // Delivered through node 1 …
    let small = message(0, ("bob", ""), ("x", "y"), b"", b"hello from node 1", &[]);
    let big = message(
        0,
        ("bob", ""),
        ("x", "y"),
        b"",
        &noise(1_500_000, 3),
        &[b"att"],
    );
    let mut c1 = node1.client();
    assert_eq!(c1.mail(&small), "SUCCESS");
    assert_eq!(c1.mail(&big), "SUCCESS");
    // … listed and fetched through node 2 at once, byte for byte …
    let mut c2 = node2.client();
    let entries = c2.list_mailbox("bob", &bob);
    assert_eq!(entries.len(), 2);
    assert!(entries[0].id < entries[1].id);
    for (e, m) in entries.iter().zip([&small, &big]) {
        assert_eq!(e.size, m.len() as u64);
        assert_eq!(&c2.fetch_message("bob", &bob, e.id), m);
    }
    // … deleted through node 2, gone on node 1.
    c2.mbox(
        MboxKind::Delete,
        MboxRequest::delete("bob", now(), entries[0].id),
        &bob,
        "localhost",
    )
    .unwrap();
    let left = c1.list_mailbox("bob", &bob);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, entries[1].id);
    // The next message through node 2 goes on after node 1's ids.
    assert_eq!(c2.mail(&small), "SUCCESS");
    let after = c1.list_mailbox("bob", &bob);
    assert_eq!(after.last().unwrap().id, entries[1].id + 1);
    assert!(node1.metric("cmtpd_store_commits_total") >= 1);
    // The database side in the metrics: group commits by size, operations by latency,
    // the pool.
    for n in [&node1, &node2] {
        assert!(n.metric("cmtpd_store_commit_batch_size_count") >= 1);
        assert!(n.metric("cmtpd_store_commit_batch_size_bucket{le=\"+Inf\"}") >= 1);
        assert!(n.metric("cmtpd_store_query_seconds_count") >= 3);
        assert_eq!(n.metric("cmtpd_store_pool_max_connections"), 16);
        let open = n.metric("cmtpd_store_pool_open_connections");
        assert!((1..=16).contains(&open), "{open}");
        assert!(n.metric("cmtpd_store_pool_idle_connections") <= open);
        assert_eq!(n.metric("cmtpd_store_pool_waiting"), 0);
    }
}

/// The mailbox quota holds across nodes: many deliveries in flight at once through two
/// nodes to one mailbox store exactly the quota, never more (each node's own
/// reservations cannot see the other node's deliveries in flight).
#[test]
fn quota_holds_across_two_nodes_under_concurrent_deliveries() {
    const QUOTA: usize = 40;
    let config =
        format!("[limits]\nmax_mailbox_messages = {QUOTA}\n[rate]\nmailbox_mail_per_sec = 0\n");
    let node1 = TestServer::start_with(Opts {
        config: config.clone(),
        ..Opts::on(Backend::Postgres)
    });
    let node2 = TestServer::start_with(Opts {
        config,
        database: node1.database.clone(),
        data: Some(node1.data.clone()),
        ..Opts::on(Backend::Postgres)
    });
    let bob = node1.add_user("bob", "pw");
    let m = message(0, ("bob", ""), ("a", "b"), b"", &vec![7u8; 256 * 1024], &[]);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            let (addr, key) = if i % 2 == 0 {
                (node1.addr, node1.key)
            } else {
                (node2.addr, node2.key)
            };
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, key);
                c.mail_pipelined(&m, 12)
            })
        })
        .collect();
    let replies: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        replies
            .iter()
            .all(|r| r == "SUCCESS" || r == "v0:DELIVERYFAILURE"),
        "{replies:?}"
    );
    let ok = replies.iter().filter(|r| *r == "SUCCESS").count();
    let stored = node2.client().list_mailbox("bob", &bob).len();
    assert_eq!(stored, ok, "every SUCCESS is stored, nothing else");
    assert_eq!(stored, QUOTA, "the quota is reached and never exceeded");
}
