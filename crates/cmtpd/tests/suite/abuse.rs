//! Defects found by outside attack runs, each pinned by a test: sender names, MAIL
//! floods (per address and per mailbox), quotas under concurrency, trusted networks,
//! monitoring under held-open sockets, and internal errors that must close.
//!
//! On the backend of the including target (`BACKEND`): tests/abuse.rs runs these on the
//! embedded store, tests/suite_pg.rs on PostgreSQL.

use std::io::Read;
use std::net::TcpStream;

use cmtp_crypto::KeyPair;
use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_testkit::*;

use super::BACKEND;

/// The ids in `user`'s mailbox (signed MBOXLIST).
fn count(c: &mut Client, user: &str, key: &KeyPair) -> usize {
    let payload = c
        .mbox(
            MboxKind::List,
            MboxRequest::list(user, now()),
            key,
            "localhost",
        )
        .expect("list");
    cmtp_proto::mbox::decode_list(&payload, u32::MAX)
        .unwrap()
        .len()
}

#[test]
fn hostile_sender_names_are_refused_and_never_stored() {
    let srv = TestServer::on(BACKEND);
    let bob = srv.add_user("bob", "pw");
    let mut c = srv.client();
    for (acct, dom) in [
        ("../../etc/passwd", "x.example"),
        ("eve", "a/b"),
        ("eve\u{1b}]0;owned\u{7}", "x.example"),
        ("eve", "x\r\n.example"),
        ("..", "x.example"),
        ("eve", ".."),
    ] {
        let m = message(0, ("bob", ""), (acct, dom), b"", b"hi", &[]);
        assert_eq!(c.mail(&m), "v0:DELIVERYFAILURE", "{acct:?}@{dom:?}");
    }
    // Empty sender names stay allowed (the server itself, an anonymous 2016 client),
    // and so do ordinary ones.
    let m = message(0, ("bob", ""), ("", ""), b"", b"hi", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    let m = message(0, ("bob", ""), ("alice", "x.example"), b"", b"hi", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(count(&mut c, "bob", &bob), 2);
    assert_eq!(srv.metric("cmtpd_failures_total{reason=\"bad_sender\"}"), 6);
}

#[test]
fn quota_holds_under_concurrent_deliveries() {
    const QUOTA: usize = 40;
    let srv = TestServer::start_with(Opts {
        config: format!(
            "[limits]\nmax_mailbox_messages = {QUOTA}\n[rate]\nmailbox_mail_per_sec = 0\n"
        ),
        ..Opts::on(BACKEND)
    });
    let bob = srv.add_user("bob", "pw");
    // Large enough that each delivery spends a while between its quota check (at the
    // envelope) and its commit, so many are in flight at once.
    let m = message(0, ("bob", ""), ("a", "b"), b"", &vec![7u8; 256 * 1024], &[]);
    let (addr, key) = (srv.addr, srv.key);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
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
    let ok = replies.iter().filter(|r| *r == "SUCCESS").count();
    assert!(
        replies
            .iter()
            .all(|r| r == "SUCCESS" || r == "v0:DELIVERYFAILURE"),
        "{replies:?}"
    );
    let stored = count(&mut srv.client(), "bob", &bob);
    assert_eq!(stored, ok, "every SUCCESS is stored, nothing else");
    assert_eq!(stored, QUOTA, "the quota is reached and never exceeded");
}

#[test]
fn a_flood_at_one_mailbox_is_slowed_and_the_connection_stays_usable() {
    let srv = TestServer::start_with(Opts {
        config: "[rate]\nmailbox_mail_per_sec = 1\nmailbox_mail_burst = 5\n".into(),
        ..Opts::on(BACKEND)
    });
    let bob = srv.add_user("bob", "pw");
    srv.add_user("carol", "pw");
    let mut c = srv.client();
    let m = message(0, ("bob", ""), ("a", "b"), b"", b"spam", &[]);
    let mut w = Vec::new();
    for _ in 0..20 {
        w.extend_from_slice(b"MAIL\0");
        w.extend_from_slice(&m);
    }
    c.send(&w);
    let replies: Vec<String> = (0..20).map(|_| c.status()).collect();
    let ok = replies.iter().filter(|r| *r == "SUCCESS").count();
    // The burst, plus at most a token or two refilled meanwhile.
    assert!((5..=7).contains(&ok), "{replies:?}");
    assert!(replies[ok..].iter().all(|r| r == "FAILURE"), "{replies:?}");
    // Another mailbox is not affected, and the connection still works.
    let m = message(0, ("carol", ""), ("a", "b"), b"", b"hello", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(count(&mut c, "bob", &bob), ok);
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"mailbox_rate_limited\"}"),
        (20 - ok) as i64
    );
}

#[test]
fn mail_from_one_address_is_rate_limited_unless_exempt() {
    let limited = TestServer::start_with(Opts {
        config: "[limits]\nexempt_networks = []\n[rate]\nmail_per_sec = 1\nmail_burst = 3\nmailbox_mail_per_sec = 0\n"
            .into(),
        ..Opts::on(BACKEND)
    });
    limited.add_user("bob", "pw");
    let m = message(0, ("bob", ""), ("a", "b"), b"", b"x", &[]);
    let mut c = limited.client();
    let mut ok = 0;
    let last = loop {
        let r = c.mail(&m);
        if r != "SUCCESS" {
            break r;
        }
        ok += 1;
        assert!(ok < 10, "never limited");
    };
    assert!((3..=4).contains(&ok), "{ok}");
    // The refused message was not read: framing is lost, so the server closes.
    assert_eq!(last, "FAILURE");
    c.expect_eof();

    // The same from loopback with the default exemption: not limited.
    let exempt = TestServer::start_with(Opts {
        config: "[rate]\nmail_per_sec = 1\nmail_burst = 3\nmailbox_mail_per_sec = 0\n".into(),
        ..Opts::on(BACKEND)
    });
    exempt.add_user("bob", "pw");
    let mut c = exempt.client();
    for _ in 0..10 {
        assert_eq!(c.mail(&m), "SUCCESS");
    }
}

#[test]
fn loopback_clients_are_exempt_from_per_address_connection_limits() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections_per_ip = 4\nmax_connections = 400\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut held: Vec<Client> = (0..300).map(|_| srv.client()).collect();
    for c in held.iter_mut() {
        c.send(b"NOOP\0");
        assert_eq!(c.general(), "SUCCESS");
    }
    // Still bounded by the global limit: the 401st connection is refused.
    let more: Vec<Client> = (0..100).map(|_| srv.client()).collect();
    let mut over = Client::connect(srv.addr, srv.key);
    assert_eq!(over.general(), "FAILURE");
    over.expect_eof();
    drop(more);

    // Without the exemption, one address gets max_connections_per_ip.
    let strict = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections_per_ip = 4\nexempt_networks = []\n".into(),
        ..Opts::on(BACKEND)
    });
    let _four: Vec<Client> = (0..4).map(|_| strict.client()).collect();
    let mut fifth = strict.client();
    assert_eq!(fifth.general(), "FAILURE");
}

#[test]
fn idle_sockets_cannot_blind_monitoring() {
    let srv = TestServer::on(BACKEND);
    // Far more idle connections than the endpoint serves at once, none sending a byte.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(srv.metrics).unwrap())
        .collect();
    let (status, body) = srv.http_get("/health");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(body, "ok");
    let (status, _) = srv.http_get("/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    // An idle socket is closed by the server (the oldest made room, or its timeout).
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut b = [0u8; 16];
    assert!(matches!(first.read(&mut b), Ok(0) | Err(_)));
}

#[test]
fn an_internal_error_answers_failure_and_closes() {
    let srv = TestServer::on(BACKEND);
    srv.add_user("bob", "pw");
    // A damaged account record: the store fails when MAIL looks the recipient up.
    damage_account(&srv, "bob");
    let mut c = srv.client();
    let m = message(0, ("bob", ""), ("a", "b"), b"", b"x", &[]);
    c.send(b"MAIL\0");
    c.send(&m);
    c.send(b"NOOP\0");
    assert_eq!(c.status(), "FAILURE");
    c.expect_eof();
    assert_eq!(srv.metric("cmtpd_failures_total{reason=\"internal\"}"), 1);
    // Everyone else is served.
    let mut other = srv.client();
    other.send(b"NOOP\0");
    assert_eq!(other.general(), "SUCCESS");
}

#[test]
fn key_request_for_a_damaged_account_fails_and_closes() {
    let srv = TestServer::on(BACKEND);
    srv.add_user("bob", "pw");
    damage_account(&srv, "bob");
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0bob\0\0NOOP\0");
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}

/// Damages `user`'s record so that reading it fails in the store: a short public key
/// file in the data directory, or (the database's CHECK dropped) a short key in its row.
fn damage_account(srv: &TestServer, user: &str) {
    match srv.backend {
        Backend::Embedded => {
            std::fs::write(srv.data.join(format!("users/{user}/public.key")), b"short").unwrap()
        }
        Backend::Postgres => {
            let url = srv.database.as_deref().unwrap();
            let db = url.rsplit('/').next().unwrap();
            PgCluster::shared().psql(
                db,
                &format!(
                    "ALTER TABLE users DROP CONSTRAINT users_public_key_check; \
                     UPDATE users SET public_key = 'short' WHERE name = '{user}'"
                ),
            );
        }
    }
}
