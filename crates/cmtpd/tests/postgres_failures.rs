//! Failures under load on the PostgreSQL backend, through real cmtpd processes: a node
//! killed with SIGKILL while two nodes take mail, and the database stopped and started
//! again while a node takes mail. What must hold: no message acknowledged with SUCCESS
//! is lost (each is listed and fetched byte for byte afterwards), no SUCCESS while the
//! database is down, and service goes on (on the other node; on the same node once the
//! database is back, without restarting it).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmtp_crypto::KeyPair;
use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_testkit::*;

/// Sends `MAIL` with `msg` and reads the reply ("SUCCESS", "FAILURE", "v0:…"; its
/// signature checked), or the I/O error that ended the connection (a killed node).
fn try_mail(c: &mut Client, msg: &[u8]) -> std::io::Result<String> {
    let mut w = b"MAIL\0".to_vec();
    w.extend_from_slice(msg);
    c.s.write_all(&w)?;
    let mut b = [0u8; 1];
    c.s.read_exact(&mut b)?;
    // A version-0 reply starts with u32 0, a general reply with its text.
    let v0 = b[0] == 0;
    let mut text = Vec::new();
    if v0 {
        let mut z = [0u8; 3];
        c.s.read_exact(&mut z)?;
    } else {
        text.push(b[0]);
    }
    loop {
        c.s.read_exact(&mut b)?;
        if b[0] == 0 {
            break;
        }
        text.push(b[0]);
        if text.len() > 200 {
            return Err(std::io::Error::other("not a reply"));
        }
    }
    let mut sig = [0u8; 65];
    c.s.read_exact(&mut sig)?;
    c.verify(&text, &sig[..64]);
    let text = String::from_utf8_lossy(&text).into_owned();
    Ok(if v0 { format!("v0:{text}") } else { text })
}

/// The message a load thread sends as its `seq`th: to mailbox `to`, unique by its
/// body (noise seeded by thread and sequence); every tenth one spans several of the
/// database's 256 KiB chunks.
fn load_message(to: &str, thread: u64, seq: u64) -> Vec<u8> {
    let size = if seq.is_multiple_of(10) {
        600_000
    } else {
        2_000
    };
    let body = noise(size, thread << 32 | seq);
    message(0, (to, ""), ("load", "test.example"), b"", &body, &[])
}

/// What the load threads saw, shared with the test.
#[derive(Default)]
struct Tally {
    /// Messages acknowledged with SUCCESS, per mailbox.
    acked: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    /// Every message sent (acknowledged or not), per mailbox: anything stored must be one.
    sent: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    oks: AtomicU64,
    failures: AtomicU64,
    /// Connections that ended with an I/O error (a killed node, a closed connection).
    broken: AtomicU64,
    stop: AtomicBool,
}

impl Tally {
    /// "oks/failures/broken", for the test's output.
    fn summary(&self) -> String {
        format!(
            "{} acknowledged, {} FAILURE, {} connections broken",
            self.oks.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
            self.broken.load(Ordering::SeqCst)
        )
    }

    fn record(&self, to: &str, msg: &[u8], reply: &std::io::Result<String>) {
        self.sent
            .lock()
            .unwrap()
            .entry(to.to_owned())
            .or_default()
            .push(msg.to_vec());
        match reply {
            Ok(r) if r == "SUCCESS" => {
                self.acked
                    .lock()
                    .unwrap()
                    .entry(to.to_owned())
                    .or_default()
                    .push(msg.to_vec());
                self.oks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.broken.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Every message of `user`'s mailbox through `srv`, fetched in full (signed requests).
fn mailbox(srv: &TestServer, user: &str, key: &KeyPair) -> Vec<Vec<u8>> {
    let mut c = srv.client();
    let entries = c.list_mailbox(user, key);
    entries
        .iter()
        .map(|e| {
            let m = c.fetch_message(user, key, e.id);
            assert_eq!(m.len() as u64, e.size, "message {} of {user}", e.id);
            m
        })
        .collect()
}

/// Asserts that every acknowledged message of `tally` is in its mailbox as read through
/// `srv`, byte for byte, and that everything stored is a message that was sent (a
/// delivery cut short leaves nothing, never a torn message).
fn check_nothing_acked_is_lost(srv: &TestServer, users: &[(String, KeyPair)], tally: &Tally) {
    let acked = tally.acked.lock().unwrap();
    let sent = tally.sent.lock().unwrap();
    let mut total = 0;
    for (user, key) in users {
        let stored = mailbox(srv, user, key);
        let mut left = stored.clone();
        for m in acked.get(user).into_iter().flatten() {
            let i = left.iter().position(|s| s == m).unwrap_or_else(|| {
                panic!(
                    "a message acknowledged with SUCCESS is missing from {user}'s mailbox \
                     ({} bytes)",
                    m.len()
                )
            });
            left.swap_remove(i);
            total += 1;
        }
        let sent = sent.get(user).map(Vec::as_slice).unwrap_or_default();
        for extra in &left {
            assert!(
                sent.contains(extra),
                "{user}'s mailbox holds a message nobody sent ({} bytes)",
                extra.len()
            );
        }
    }
    assert_eq!(total, tally.oks.load(Ordering::SeqCst) as usize);
}

/// Starts a load thread: delivers to `to` through `addr` until told to stop or
/// (with `stop_when_broken`) until its connection breaks; reconnects after a FAILURE
/// (the server closes after a store error).
fn load_thread(
    addr: std::net::SocketAddr,
    key: cmtp_crypto::PublicKey,
    to: String,
    thread: u64,
    tally: Arc<Tally>,
    stop_when_broken: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = 0;
        let mut conn: Option<Client> = None;
        while !tally.stop.load(Ordering::SeqCst) {
            // (The node is up whenever a thread connects: node 1's threads connect once.)
            let c = conn.get_or_insert_with(|| Client::connect(addr, key));
            let msg = load_message(&to, thread, seq);
            seq += 1;
            let r = try_mail(c, &msg);
            tally.record(&to, &msg, &r);
            match r {
                Ok(r) if r == "SUCCESS" => {}
                Err(_) if stop_when_broken => return,
                // FAILURE closes the connection: the sender comes back a little later.
                _ => {
                    conn = None;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    })
}

fn postgres_opts(database: Option<String>, data: Option<std::path::PathBuf>) -> Opts {
    Opts {
        database,
        data,
        ..Opts::on(Backend::Postgres)
    }
}

/// Two nodes on one database take mail from several client threads each; node 1 is
/// killed with SIGKILL mid-load. Node 2 goes on serving throughout, and every message
/// either node acknowledged is there afterwards, through node 2 and through node 1
/// restarted.
#[test]
fn sigkill_of_a_node_under_load_loses_nothing_acknowledged() {
    let mut node1 = TestServer::start_with(postgres_opts(None, None));
    // Node 2 shares the database and (as deployed) the server key.
    let node2 = TestServer::start_with(postgres_opts(
        node1.database.clone(),
        Some(node1.data.clone()),
    ));
    assert_eq!(node1.key, node2.key);
    let users: Vec<(String, KeyPair)> = (0..4)
        .map(|i| {
            let name = format!("u{i}");
            let kp = node1.add_user(&name, "pw");
            (name, kp)
        })
        .collect();
    // A large delivery to node 1 stopped halfway, its first chunks in the database
    // (an `uploads` row): SIGKILL will cut it for certain, whatever the load threads do.
    let db = node1.database.clone().unwrap();
    let db = db.rsplit('/').next().unwrap();
    let uploads = || {
        PgCluster::shared()
            .psql(db, "SELECT count(*) FROM uploads")
            .parse::<u64>()
            .unwrap()
    };
    let cut = load_message("u0", 99, 0);
    let mut half = node1.client();
    half.send(b"MAIL\0");
    half.send(&cut[..cut.len() / 2]);
    wait_until("the cut delivery's upload", Duration::from_secs(30), || {
        uploads() == 1
    });
    // Each thread has its mailbox; threads 0 and 1 go through node 1, 2 and 3 through
    // node 2.
    let on1 = Arc::new(Tally::default());
    let on2 = Arc::new(Tally::default());
    let mut threads = Vec::new();
    for (i, (name, _)) in users.iter().enumerate() {
        let (node, tally, on_node1) = if i < 2 {
            (&node1, &on1, true)
        } else {
            (&node2, &on2, false)
        };
        threads.push(load_thread(
            node.addr,
            node.key,
            name.clone(),
            i as u64,
            tally.clone(),
            on_node1,
        ));
    }
    wait_until(
        "100 acknowledged on node 1",
        Duration::from_secs(60),
        || on1.oks.load(Ordering::SeqCst) >= 100,
    );
    let before_kill = on2.oks.load(Ordering::SeqCst);
    node1.kill();
    // Node 2 keeps serving after the kill: more acknowledged, health ok.
    wait_until(
        "50 more acknowledged on node 2 after the kill",
        Duration::from_secs(60),
        || on2.oks.load(Ordering::SeqCst) >= before_kill + 50,
    );
    assert_eq!(node2.http_get("/health").0, "HTTP/1.0 200 OK");
    // Node 1's threads saw their connections break and stopped.
    wait_until("node 1's threads to stop", Duration::from_secs(30), || {
        threads[..2].iter().all(|t| t.is_finished())
    });
    on2.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        on2.failures.load(Ordering::SeqCst) + on2.broken.load(Ordering::SeqCst),
        0,
        "node 2 failed a delivery while node 1 died"
    );
    assert!(on1.broken.load(Ordering::SeqCst) >= 1);
    // The dead node could not clean up its cut deliveries (the sweeper's job, after a
    // day); none of them is visible (checked below: nothing stored that was not sent).
    assert!(uploads() >= 1);
    half.expect_eof();
    eprintln!("node 1: {}; node 2: {}", on1.summary(), on2.summary());

    // Everything acknowledged by either node, read through node 2 …
    check_nothing_acked_is_lost(&node2, &users[..2], &on1);
    check_nothing_acked_is_lost(&node2, &users[2..], &on2);
    // … and through node 1, restarted on the same address.
    node1.spawn(Some(node1.addr), &[]);
    check_nothing_acked_is_lost(&node1, &users[..2], &on1);
    check_nothing_acked_is_lost(&node1, &users[2..], &on2);
    let mut c = node1.client();
    let m = message(0, ("u0", ""), ("x", "y"), b"", b"after the restart", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
}

/// The database stopped and started again (`pg_ctl stop -m fast`, then start; later a
/// `pg_ctl restart`) while client threads deliver through one node: during the outage
/// deliveries get FAILURE and `/health` answers 503; once the database is back the same
/// process answers 200 and acknowledges mail again; nothing acknowledged is lost.
#[test]
fn database_restart_under_load_fails_deliveries_and_recovers() {
    // A cluster of this test's own: stopping the shared one would fail other tests.
    let cluster = PgCluster::start();
    let mut srv = TestServer::start_with(postgres_opts(Some(cluster.database("restart")), None));
    let users: Vec<(String, KeyPair)> = (0..3)
        .map(|i| {
            let name = format!("u{i}");
            let kp = srv.add_user(&name, "pw");
            (name, kp)
        })
        .collect();
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            load_thread(
                srv.addr,
                srv.key,
                name.clone(),
                i as u64,
                tally.clone(),
                false,
            )
        })
        .collect();
    wait_until("50 acknowledged", Duration::from_secs(60), || {
        tally.oks.load(Ordering::SeqCst) >= 50
    });

    cluster.stop("fast");
    let (status, body) = poll(
        "/health to report the outage",
        Duration::from_secs(30),
        || {
            let (s, b) = srv.http_get("/health");
            (s != "HTTP/1.0 200 OK").then_some((s, b))
        },
    );
    assert_eq!(status, "HTTP/1.0 503 Service Unavailable", "{body}");
    assert!(!body.is_empty());
    // Deliveries go on being tried and fail; none is acknowledged while it is down.
    let (oks, failures) = (
        tally.oks.load(Ordering::SeqCst),
        tally.failures.load(Ordering::SeqCst),
    );
    wait_until("20 failed deliveries", Duration::from_secs(60), || {
        tally.failures.load(Ordering::SeqCst) >= failures + 20
    });
    let mut c = srv.client();
    let m = message(0, ("u0", ""), ("x", "y"), b"", b"during the outage", &[]);
    assert_eq!(c.mail(&m), "FAILURE");
    // Nor does the outage pass for "no such key" or "not your mailbox".
    let mut k = srv.client();
    k.send(b"KEYREQUEST\0u0\0\0");
    assert_eq!(k.status(), "FAILURE");
    let mut req = MboxRequest::list("u0", now());
    req.signature = *users[0]
        .1
        .sign(&req.signing_bytes(MboxKind::List, "localhost"))
        .as_bytes();
    let mut l = srv.client();
    l.send(&cmtp_proto::Command::MboxList(req).to_bytes());
    // (Mailbox replies are versioned: the version-0 FAILURE, not AUTHFAILURE.)
    assert_eq!(l.status(), "v0:FAILURE");
    assert_eq!(
        tally.oks.load(Ordering::SeqCst),
        oks,
        "SUCCESS while the database was down"
    );
    assert_eq!(
        srv.http_get("/health").0,
        "HTTP/1.0 503 Service Unavailable"
    );

    cluster.start_again();
    wait_until("/health back to 200", Duration::from_secs(30), || {
        srv.http_get("/health").0 == "HTTP/1.0 200 OK"
    });
    wait_until(
        "50 acknowledged after the restart",
        Duration::from_secs(60),
        || tally.oks.load(Ordering::SeqCst) >= oks + 50,
    );
    // And a plain restart (`pg_ctl restart -m fast`) in the middle of the load: the
    // sessions are cut, deliveries go on afterwards.
    cluster.restart();
    let after = tally.oks.load(Ordering::SeqCst);
    wait_until(
        "50 acknowledged after the second restart",
        Duration::from_secs(60),
        || tally.oks.load(Ordering::SeqCst) >= after + 50,
    );
    tally.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("{}", tally.summary());
    // The same process served throughout: no restart of cmtpd.
    assert!(
        srv.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "cmtpd exited"
    );
    check_nothing_acked_is_lost(&srv, &users, &tally);
}
