//! Federation (issue 8): three real `cmtpd` processes for three domains on loopback,
//! routes from the configuration or from a real in-process DNS server, mail relayed
//! A → B and read back, retries, bounces, loops, crashes, key relay and pinning.

use std::path::Path;
use std::time::Duration;

use cmtp_crypto::KeyPair;
use cmtp_testkit::dns::Rr;
use cmtp_testkit::*;

mod fed;
use fed::*;

/// A message from alice@a.test to `to` as a.test relays it, with relay id `id`.
fn relayed_message(id: [u8; 16], to: (&str, &str)) -> Vec<u8> {
    let entry = cmtp_proto::log::RelayEntry {
        by: "a.test".into(),
        from: "127.0.0.1".into(),
        at: now(),
        id,
        for_account: to.0.into(),
        for_domain: to.1.into(),
    };
    let mut log = Vec::new();
    cmtp_proto::log::append_entry(b"\0", &entry.encode().unwrap(), &mut log);
    message(1, to, ("alice", "a.test"), &log, b"once", &[])
}

/// Messages in `mailbox` of the server's store (admin, read-only).
fn count(srv: &TestServer, mailbox: &str) -> u64 {
    let s = srv.admin(&["mailbox", "stats", "--json"], b"").json();
    s["mailboxes"][mailbox]["messages"].as_u64().unwrap_or(0)
}

/// The id of the first message in `mailbox`.
fn first_id(srv: &TestServer, mailbox: &str) -> String {
    let l = srv.admin(&["mailbox", "list", mailbox, "--json"], b"");
    l.json()[0]["id"].as_u64().expect("a message").to_string()
}

/// Messages waiting in the relay queue.
fn queued(srv: &TestServer) -> usize {
    let q = srv.admin(&["queue", "list", "--json"], b"").json();
    q.as_array().map_or(0, |a| a.len())
}

/// Logs in with --remember (testkit's [`cmtp_testkit::login`]).
fn login(home: &Path, profile: &Path, addr: &str, server: &str, pw: &str) {
    cmtp_testkit::login(home, profile, addr, server, pw, true);
}

#[test]
fn static_route_relays_a_signed_submission_and_the_recipient_reads_it() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let b = server("b.test", b_addr, config(&[], ""));
    let a = server("a.test", a_addr, config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "alice pw");
    b.add_user("bob", "bob pw");

    // The client path: `cmtp send` from alice's profile signs a SUBMIT; A relays.
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let (pa, pb) = (home.join("pa"), home.join("pb"));
    login(home, &pa, "alice@a.test", &a.server_arg(), "alice pw");
    login(home, &pb, "bob@b.test", &b.server_arg(), "bob pw");
    let sent = cmtp(
        home,
        &pa,
        &[
            "send",
            "--to",
            "bob@b.test",
            "--subject",
            "over the wire",
            "--json",
        ],
        b"hello from a.test\n",
    )
    .json();
    assert_eq!(sent[0]["status"], "queued", "{sent}");
    wait_until("bob's copy at B", DELIVERY, || count(&b, "bob") == 1);
    wait_until("A's queue empty", DELIVERY, || queued(&a) == 0);
    let inbox = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    assert_eq!(inbox[0]["from"], "alice@a.test", "{inbox}");
    assert_eq!(inbox[0]["subject"], "over the wire");

    // The log of the stored message carries A's relay entry.
    let shown = b.admin(
        &["mailbox", "show", &first_id(&b, "bob"), "--account", "bob"],
        b"",
    );
    assert!(
        shown.stdout.contains("cmtp-relay/1 by=a.test"),
        "{}",
        shown.stdout
    );

    // A raw SUBMIT too, and metrics count both deliveries.
    let mut c = a.client();
    let msg = mail(("bob", "b.test"), ("alice", "a.test"), b"second");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    wait_until("two at B", DELIVERY, || count(&b, "bob") == 2);
    wait_until("delivered counted", DELIVERY, || {
        a.metric("cmtpd_relay_delivered_total") == 2
    });
    // A pinned B's key on first contact.
    let keys = a.admin(&["domain", "keys", "--json"], b"").json();
    assert_eq!(keys[0]["domain"], "b.test");
    assert_eq!(keys[0]["public_key"], b.key.to_hex());
}

#[test]
fn srv_and_mx_routes_from_dns() {
    let (b_addr, c_addr) = (free_addr(), free_addr());
    let b = server("b.test", b_addr, config(&[], ""));
    let c3 = server("c.test", c_addr, config(&[], ""));
    let dns = cmtp_testkit::dns::start(vec![
        (
            "_cmtp._tcp.b.test".into(),
            vec![Rr::Srv(10, 0, b_addr.port(), "mail.b.test".into())],
        ),
        ("mail.b.test".into(), vec![Rr::A([127, 0, 0, 1].into())]),
        // c.test has no SRV: its MX host, on the MX port (25, here c's test port).
        ("c.test".into(), vec![Rr::Mx(10, "mx.c.test".into())]),
        ("mx.c.test".into(), vec![Rr::A([127, 0, 0, 1].into())]),
        // A null MX (RFC 7505): no mail at all.
        ("nomail.test".into(), vec![Rr::Mx(0, ".".into())]),
    ]);
    let extra = format!("dns = \"{}\"\nmx_port = {}\n", dns.addr, c_addr.port());
    let a = server("a.test", free_addr(), config(&[], &extra));
    let alice = a.add_user("alice", "pw");
    b.add_user("bob", "pw");
    c3.add_user("carol", "pw");
    let mut c = a.client();
    let to_b = mail(("bob", "b.test"), ("alice", "a.test"), b"via SRV");
    let to_c = mail(("carol", "c.test"), ("alice", "a.test"), b"via MX");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &to_b), "SUCCESS");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &to_c), "SUCCESS");
    wait_until("bob's copy (SRV)", DELIVERY, || count(&b, "bob") == 1);
    wait_until("carol's copy (MX)", DELIVERY, || count(&c3, "carol") == 1);
    // Null MX and NXDOMAIN are permanent: refused at once.
    let nomail = mail(("x", "nomail.test"), ("alice", "a.test"), b"x");
    assert_eq!(
        submit(&mut c, &alice, "alice", "a.test", &nomail),
        "v0:DELIVERYFAILURE"
    );
    let nx = mail(("x", "nowhere.test"), ("alice", "a.test"), b"x");
    assert_eq!(
        submit(&mut c, &alice, "alice", "a.test", &nx),
        "v0:DELIVERYFAILURE"
    );
    // A removes a message from its queue once the remote's SUCCESS is in, just after
    // the remote stored it: wait, do not race it.
    wait_until("A's queue empty", DELIVERY, || queued(&a) == 0);
}

#[test]
fn only_proven_local_senders_are_relayed() {
    let b_addr = free_addr();
    let _b = server("b.test", b_addr, config(&[], ""));
    let a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "pw");
    let mallory = KeyPair::generate().unwrap();
    let msg = mail(("bob", "b.test"), ("alice", "a.test"), b"x");
    let mut c = a.client();
    // Plain MAIL for a foreign domain from an untrusted network (none is trusted).
    assert_eq!(c.mail(&msg), "v0:DELIVERYFAILURE");
    // Signed by the wrong key.
    assert_eq!(
        submit(&mut c, &mallory, "alice", "a.test", &msg),
        "v0:DELIVERYFAILURE"
    );
    // Signed by alice, but the envelope claims another sender.
    let other = mail(("bob", "b.test"), ("eve", "a.test"), b"x");
    assert_eq!(
        submit(&mut c, &alice, "alice", "a.test", &other),
        "v0:DELIVERYFAILURE"
    );
    // A stale timestamp.
    c.send(&submit_bytes(&alice, "alice", "a.test", now() - 3600, &msg));
    assert_eq!(c.status(), "v0:DELIVERYFAILURE");
    // A signature over other bytes (the message was changed in transit).
    let mut w = submit_bytes(&alice, "alice", "a.test", now(), &msg);
    let last = w.len() - 1;
    w[last] ^= 1;
    c.send(&w);
    assert_eq!(c.status(), "v0:DELIVERYFAILURE");
    assert_eq!(queued(&a), 0);
    assert_eq!(a.metric("cmtpd_relay_refused_total"), 5);
    // The connection is still usable, and the right signature works.
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
}

#[test]
fn trusted_network_relays_plain_mail() {
    let b_addr = free_addr();
    let b = server("b.test", b_addr, config(&[], ""));
    b.add_user("bob", "pw");
    let a = server(
        "a.test",
        free_addr(),
        config(
            &[("b.test", b_addr)],
            "trusted_networks = [\"127.0.0.0/8\"]\n",
        ),
    );
    let mut c = a.client();
    let msg = mail(("bob", "b.test"), ("app", "a.test"), b"from a trusted host");
    assert_eq!(c.mail(&msg), "SUCCESS");
    wait_until("bob's copy", DELIVERY, || count(&b, "bob") == 1);
}

#[test]
fn down_then_up_is_retried_and_delivered_once() {
    let b_addr = free_addr();
    let a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "pw");
    let mut c = a.client();
    for i in 0..20u8 {
        let msg = mail(("bob", "b.test"), ("alice", "a.test"), &[i; 100]);
        assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    }
    // B is down: attempts fail, state is saved after each.
    wait_until("a failed attempt recorded", DELIVERY, || {
        let q = a.admin(&["queue", "list", "--json"], b"").json();
        q.as_array()
            .unwrap()
            .iter()
            .all(|e| e["attempts"].as_u64() >= Some(1))
            && q.as_array().unwrap().len() == 20
    });
    let q = a.admin(&["queue", "list", "--json"], b"").json();
    assert!(
        q[0]["last_error"].as_str().unwrap().contains("connect"),
        "{q}"
    );
    let b = server("b.test", b_addr, config(&[], ""));
    b.add_user("bob", "pw");
    a.admin(&["queue", "retry", "--all"], b"").ok();
    wait_until("all 20 at B", DELIVERY, || count(&b, "bob") == 20);
    wait_until("A's queue empty", DELIVERY, || queued(&a) == 0);
    assert_eq!(count(&b, "bob"), 20, "each delivered once");
    assert!(a.metric("cmtpd_relay_deferred_total") >= 20);
}

#[test]
fn never_up_bounces_to_the_sender_after_the_window() {
    let b_addr = free_addr();
    let a = server(
        "a.test",
        free_addr(),
        config(&[("b.test", b_addr)], "max_queue_age_secs = 3\n"),
    );
    let alice = a.add_user("alice", "alice pw");
    // (With b.test down its users' keys cannot be fetched: `cmtp send` would refuse, so
    // the message is submitted raw.)
    let mut c = a.client();
    let msg = mail(("bob", "b.test"), ("alice", "a.test"), b"into the void");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    wait_until("the bounce", DELIVERY, || count(&a, "alice") == 1);
    assert_eq!(queued(&a), 0);
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let pa = home.join("pa");
    login(home, &pa, "alice@a.test", &a.server_arg(), "alice pw");
    let inbox = cmtp(home, &pa, &["inbox", "--json"], b"").json();
    assert_eq!(inbox[0]["from"], "postmaster@a.test", "{inbox}");
    let id = inbox[0]["id"].as_u64().unwrap().to_string();
    let read = cmtp(home, &pa, &["read", &id], b"").ok().to_owned();
    assert!(read.contains("bob@b.test"), "{read}");
    assert!(read.contains("no delivery within"), "{read}");
}

#[test]
fn remote_delivery_failure_bounces_at_once() {
    let b_addr = free_addr();
    let _b = server("b.test", b_addr, config(&[], ""));
    let a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "pw");
    let mut c = a.client();
    // B has no account "nobody": DELIVERYFAILURE from B, a notice for alice.
    let msg = mail(("nobody", "b.test"), ("alice", "a.test"), b"x");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    wait_until("the bounce", DELIVERY, || count(&a, "alice") == 1);
    assert_eq!(queued(&a), 0);
    assert_eq!(a.metric("cmtpd_relay_bounces_total"), 1);
    // The notice comes from postmaster and its log marks it as a notice.
    let shown = a.admin(
        &[
            "mailbox",
            "show",
            &first_id(&a, "alice"),
            "--account",
            "alice",
        ],
        b"",
    );
    assert!(
        shown.stdout.contains("cmtp-bounce/1 by=a.test"),
        "{}",
        shown.stdout
    );
    assert!(shown.stdout.contains("postmaster"), "{}", shown.stdout);
    // A failing message that is itself a notice is never bounced.
    let mut log = Vec::new();
    let entry = cmtp_proto::log::BounceEntry {
        by: "x.test".into(),
        at: now(),
    };
    cmtp_proto::log::append_entry(b"", &entry.encode().unwrap(), &mut log);
    let notice = message(
        1,
        ("nobody", "b.test"),
        ("alice", "a.test"),
        &log,
        b"x",
        &[],
    );
    assert_eq!(
        submit(&mut c, &alice, "alice", "a.test", &notice),
        "SUCCESS"
    );
    wait_until("the notice given up", DELIVERY, || {
        a.metric("cmtpd_relay_failed_total") == 2
    });
    assert_eq!(queued(&a), 0);
    assert_eq!(count(&a, "alice"), 1, "no notice for a notice");
    assert_eq!(a.metric("cmtpd_relay_bounces_total"), 1);
}

#[test]
fn a_routing_loop_is_stopped_by_the_hop_limit() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let trust = "trusted_networks = [\"127.0.0.0/8\"]\n";
    // Each routes loop.test to the other.
    let b = server("b.test", b_addr, config(&[("loop.test", a_addr)], trust));
    let a = server("a.test", a_addr, config(&[("loop.test", b_addr)], trust));
    let alice = a.add_user("alice", "pw");
    let mut c = a.client();
    let msg = mail(("x", "loop.test"), ("alice", "a.test"), b"round and round");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    wait_until("the loop refused", DELIVERY, || {
        a.metric("cmtpd_failures_total{reason=\"hop_limit\"}")
            + b.metric("cmtpd_failures_total{reason=\"hop_limit\"}")
            == 1
    });
    wait_until("both queues empty", DELIVERY, || {
        queued(&a) == 0 && queued(&b) == 0
    });
    // 25 hops: A relayed it 13 times, B 12 times, then B refused the 26th.
    assert_eq!(
        a.metric("cmtpd_relay_queued_total") + b.metric("cmtpd_relay_queued_total"),
        25
    );
    wait_until("alice's notice", DELIVERY, || count(&a, "alice") == 1);
}

#[test]
fn a_repeated_relay_id_is_stored_once() {
    let mut b = server("b.test", free_addr(), config(&[], ""));
    b.add_user("bob", "pw");
    let msg = relayed_message([7; 16], ("bob", "b.test"));
    let mut c = b.client();
    assert_eq!(c.mail(&msg), "SUCCESS");
    assert_eq!(c.mail(&msg), "SUCCESS", "a repeat is acknowledged");
    assert_eq!(count(&b, "bob"), 1, "and stored once");
    b.restart();
    let mut c = b.client();
    assert_eq!(c.mail(&msg), "SUCCESS");
    assert_eq!(count(&b, "bob"), 1, "also after a restart");
}

#[test]
fn a_relay_queues_a_repeated_relay_id_once() {
    // B relays for A's network to c.test (down): a repeat of the same hop is queued once.
    let b = server(
        "b.test",
        free_addr(),
        config(
            &[("c.test", free_addr())],
            "trusted_networks = [\"127.0.0.0/8\"]\n",
        ),
    );
    let msg = relayed_message([9; 16], ("carol", "c.test"));
    let mut c = b.client();
    assert_eq!(c.mail(&msg), "SUCCESS");
    assert_eq!(c.mail(&msg), "SUCCESS");
    assert_eq!(queued(&b), 1);
    assert_eq!(b.metric("cmtpd_relay_duplicates_total"), 1);
    // The queued copy carries both hops: A's entry, then B's with a new id.
    let q = b.admin(&["queue", "list", "--json"], b"").json();
    let id = q[0]["id"].as_u64().unwrap().to_string();
    let shown = b.admin(&["queue", "show", &id], b"").ok().to_owned();
    assert!(shown.contains("cmtp-relay/1 by=a.test"), "{shown}");
    assert!(shown.contains("cmtp-relay/1 by=b.test"), "{shown}");
    assert!(shown.contains("to carol@c.test"), "{shown}");
    // The operator drops it.
    assert!(
        b.admin(&["queue", "drop", &id], b"")
            .ok()
            .contains("dropped")
    );
    assert_eq!(queued(&b), 0);
    let gone = b.admin(&["queue", "drop", &id], b"");
    assert!(
        !gone.success() && gone.stderr.contains("no message"),
        "{gone:?}"
    );
}

#[test]
fn sigkill_with_a_full_queue_loses_nothing() {
    let b_addr = free_addr();
    let mut a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "pw");
    let mut c = a.client();
    let n = 500;
    for i in 0..n {
        let msg = mail(
            ("bob", "b.test"),
            ("alice", "a.test"),
            format!("m{i}").as_bytes(),
        );
        assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    }
    drop(c);
    a.kill(); // SIGKILL
    let b = server(
        "b.test",
        b_addr,
        config(&[], "[rate]\nmailbox_mail_per_sec = 0\n"),
    );
    b.add_user("bob", "pw");
    a.restart();
    wait_until("all delivered", DELIVERY, || count(&b, "bob") == n);
    wait_until("A's queue empty", DELIVERY, || queued(&a) == 0);
    assert_eq!(count(&b, "bob"), n);
}

#[test]
fn keys_are_relayed_and_a_changed_remote_key_is_refused() {
    let b_addr = free_addr();
    let mut b = server("b.test", b_addr, config(&[], ""));
    let bob = b.add_user("bob", "pw");
    let a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let mut c = a.client();
    c.send(b"KEYREQUEST\0bob\0b.test\0");
    assert_eq!(
        c.key_reply(),
        *bob.public().as_bytes(),
        "signed by A, checked by Client"
    );
    c.send(b"KEYREQUEST\0nobody\0b.test\0");
    assert_eq!(c.key_or_none(), None);
    assert_eq!(a.metric("cmtpd_relay_key_lookups_total"), 2);
    // Cached.
    c.send(b"KEYREQUEST\0bob\0b.test\0");
    assert_eq!(c.key_reply(), *bob.public().as_bytes());
    assert_eq!(a.metric("cmtpd_relay_key_cache_hits_total"), 1);

    // B's server key changes (a new data directory's key, same address).
    b.kill();
    std::fs::remove_file(b.data.join("server.key")).unwrap();
    b.spawn(Some(b_addr), &[]);
    c.send(b"KEYREQUEST\0carol\0b.test\0");
    assert_eq!(c.key_or_none(), None, "refused: the pinned key differs");
    assert_eq!(a.metric("cmtpd_relay_remote_key_changes_total"), 1);
    let keys = a.admin(&["domain", "keys", "--json"], b"").json();
    assert_eq!(keys[0]["offered"]["public_key"], b.key.to_hex(), "{keys}");
    // Mail waits too.
    let alice = a.add_user("alice", "pw");
    let msg = mail(("bob", "b.test"), ("alice", "a.test"), b"x");
    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
    wait_until("deferred on the key", DELIVERY, || {
        let q = a.admin(&["queue", "list", "--json"], b"").json();
        q[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("domain trust"))
    });
    // The operator checks and accepts it.
    a.admin(&["domain", "trust", "b.test"], b"").ok();
    a.admin(&["queue", "retry", "--all"], b"").ok();
    wait_until("delivered after trust", DELIVERY, || count(&b, "bob") == 1);
}

#[test]
fn ten_thousand_messages_drain() {
    let b_addr = free_addr();
    let b = server(
        "b.test",
        b_addr,
        config(&[], "[rate]\nmailbox_mail_per_sec = 0\n"),
    );
    b.add_user("bob", "pw");
    let a = server("a.test", free_addr(), config(&[("b.test", b_addr)], ""));
    let alice = a.add_user("alice", "pw");
    let n = 10_000u64;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, key, alice) = (a.addr, a.key, alice.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, key);
                for i in 0..n / 4 {
                    let body = format!("message {t}-{i}");
                    let msg = mail(("bob", "b.test"), ("alice", "a.test"), body.as_bytes());
                    assert_eq!(submit(&mut c, &alice, "alice", "a.test", &msg), "SUCCESS");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_until("10,000 at B", Duration::from_secs(180), || {
        count(&b, "bob") == n
    });
    wait_until("A's queue empty", DELIVERY, || queued(&a) == 0);
    assert_eq!(count(&b, "bob"), n);
    assert_eq!(a.metric("cmtpd_relay_delivered_total"), n as i64);
}
