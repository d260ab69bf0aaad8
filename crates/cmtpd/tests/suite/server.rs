//! The real `cmtpd` binary over real TCP on 127.0.0.1: every command and error path, on
//! the backend of the including test target (`BACKEND`: tests/server.rs runs these on
//! the embedded store, tests/suite_pg.rs on PostgreSQL).

use std::time::Duration;

use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_testkit::*;

use super::BACKEND;

#[test]
fn greeting_and_pipelined_simple_commands_in_order() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    // One packet, many commands: answered in order.
    c.send(b"OHAI\0NOOP\0\0KEYREQUEST\0\0KEYREQUEST\0\0\0HELP\0NOOP\0");
    let ohai = {
        let mut v = Vec::new();
        loop {
            let b = c.read_n(1)[0];
            if b == 0 {
                break;
            }
            v.push(b);
        }
        String::from_utf8(v).unwrap()
    };
    assert!(ohai.starts_with("OHAI CMTP/1 cmtpd/"), "{ohai}");
    assert_eq!(c.general(), "SUCCESS");
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(
        c.v0(),
        "Commands: OHAI NOOP KEYREQUEST LOGIN MAIL SUBMIT OBAI HELP MBOXLIST MBOXFETCH MBOXDEL"
    );
    assert_eq!(c.general(), "SUCCESS");
    c.send(b"OBAI\0");
    c.expect_eof();
}

#[test]
fn greeting_names_the_primary_domain() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"Mail.Example\", \"other.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = Client::connect_raw(srv.addr, srv.key);
    assert_eq!(c.read_line(), "220 Mail.Example CMTP/1 ready\r\n");
}

#[test]
fn keyrequest_users_unknown_foreign_and_hostile_names() {
    let srv = TestServer::on(BACKEND);
    let alice = srv.add_user("alice", "pw");
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0alice\0\0KEYREQUEST\0alice\0localhost\0");
    assert_eq!(c.key_reply(), *alice.public().as_bytes());
    assert_eq!(c.key_reply(), *alice.public().as_bytes());
    for name in ["nobody", "../x", "..", "a/b", "a\\b", "x\u{1}y"] {
        let mut cmd = b"KEYREQUEST\0".to_vec();
        cmd.extend_from_slice(name.as_bytes());
        cmd.extend_from_slice(b"\0\0");
        c.send(&cmd);
        assert_eq!(c.key_or_none(), None, "{name}");
    }
    // Foreign domain: no key (the relay finds no server). Domains are DNS names,
    // compared case-insensitively (protocol.md §4): LOCALHOST is ours.
    c.send(b"KEYREQUEST\0alice\0elsewhere.example\0KEYREQUEST\0alice\0LOCALHOST\0");
    assert_eq!(c.key_or_none(), None);
    assert_eq!(c.key_or_none(), Some(*alice.public().as_bytes()));
    assert!(!srv.dir.path().join("x").exists());
    assert!(!srv.data.join("x").exists());
}

#[test]
fn keynotavailable_has_exact_length_then_next_reply_follows() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0nobody\0\0NOOP\0");
    // u32 0 + "KEYNOTAVAILABLE" NUL + sig(64) NUL = 4 + 16 + 65.
    let r = c.read_n(85);
    assert_eq!(&r[..20], b"\0\0\0\0KEYNOTAVAILABLE\0");
    c.verify(b"KEYNOTAVAILABLE", &r[20..84]);
    assert_eq!(r[84], 0);
    // The very next bytes are NOOP's SUCCESS.
    assert_eq!(c.read_n(8), b"SUCCESS\0");
}

#[test]
fn server_key_request_followed_by_domain_is_unknown_command() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0\0example.org\0");
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}

#[test]
fn login_known_unknown_and_hostile() {
    let srv = TestServer::on(BACKEND);
    srv.add_user("bob", "secret");
    let mut c = srv.client();
    c.send(b"LOGIN\0bob\0LOGIN\0nobody\0LOGIN\0../bob\0NOOP\0");
    let xz = c.login_reply().expect("bob's xzibit");
    let kp = cmtp_crypto::Xzibit::parse(&xz)
        .unwrap()
        .open(b"secret")
        .unwrap();
    assert_eq!(kp.public(), {
        let k = srv.with_users(|u| u.public_key("bob")).unwrap().unwrap();
        cmtp_crypto::PublicKey::from_array(k)
    });
    // The 2016 server hung here; we answer the version-0 FAILURE.
    assert_eq!(c.login_reply(), None);
    assert_eq!(c.login_reply(), None);
    assert_eq!(c.general(), "SUCCESS");
    // An oversized name is a framing error: FAILURE and close.
    let mut long = b"LOGIN\0".to_vec();
    long.extend(std::iter::repeat_n(b'a', 300));
    c.send(&long);
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}

#[test]
fn smtp_clients_are_refused_in_smtp() {
    let srv = TestServer::on(BACKEND);
    for hello in [&b"EHLO client.example\r\n"[..], b"helo x\r\n", b"QUIT\r\n"] {
        let mut c = srv.client();
        c.send(hello);
        assert_eq!(
            c.read_line(),
            "554 5.5.1 this is a CMTP server; say OHAI\r\n"
        );
        c.expect_eof();
    }
    assert!(srv.metric("cmtpd_failures_total{reason=\"smtp\"}") >= 3);
}

#[test]
fn unknown_and_malformed_commands_fail_and_close() {
    let srv = TestServer::on(BACKEND);
    for bad in [
        &b"FOO\0"[..],
        b"KEYREQUESTX\0",
        b"BLAH x\r\n",
        b"NO\x01OP\0",
    ] {
        let mut c = srv.client();
        c.send(bad);
        assert_eq!(c.general(), "FAILURE", "{bad:?}");
        c.expect_eof();
    }
}

#[test]
fn mail_to_user_postmaster_unknown_foreign_and_hostile() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"a.example\", \"b.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let carol = srv.add_user("carol", "pw");
    let mut c = srv.client();
    let m1 = message(
        1,
        ("carol", "a.example"),
        ("x", "y.example"),
        b"\0",
        b"sealed?",
        &[],
    );
    assert_eq!(c.mail(&m1), "SUCCESS");
    // Second local domain and an empty domain both mean here.
    let m2 = message(
        0,
        ("carol", "b.example"),
        ("x", "y"),
        b"",
        b"two",
        &[b"att"],
    );
    assert_eq!(c.mail(&m2), "SUCCESS");
    let m3 = message(0, ("carol", ""), ("x", "y"), b"", b"three", &[]);
    assert_eq!(c.mail(&m3), "SUCCESS");
    // Postmaster.
    let pm = message(0, ("", ""), ("x", "y"), b"", b"hello server", &[]);
    assert_eq!(c.mail(&pm), "SUCCESS");
    // Unknown account, foreign domain, hostile names: DELIVERYFAILURE after the whole
    // message was read; the connection stays usable.
    for (acct, dom) in [
        ("nobody", "a.example"),
        ("carol", "elsewhere.example"),
        ("../x", ""),
        ("..", ""),
        ("carol", "../x"),
    ] {
        let m = message(0, (acct, dom), ("x", "y"), b"", &[7u8; 100_000], &[b"a"]);
        assert_eq!(c.mail(&m), "v0:DELIVERYFAILURE", "{acct}@{dom}");
        c.send(b"NOOP\0");
        assert_eq!(c.general(), "SUCCESS");
    }
    assert!(!srv.dir.path().join("x").exists());
    assert!(!srv.data.join("x").exists());
    // What was stored is byte-identical.
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("carol", now()),
            &carol,
            "a.example",
        )
        .unwrap();
    let entries = cmtp_proto::mbox::decode_list(&list, 100).unwrap();
    assert_eq!(entries.len(), 3);
    for (e, m) in entries.iter().zip([&m1, &m2, &m3]) {
        assert_eq!(e.size, m.len() as u64);
        let got = c
            .mbox(
                MboxKind::Fetch,
                MboxRequest::fetch("carol", now(), e.id, FetchPart::Full),
                &carol,
                "a.example",
            )
            .unwrap();
        assert_eq!(&got, m);
    }
    assert_eq!(srv.metric("cmtpd_deliveries_total{result=\"ok\"}"), 4);
    assert_eq!(srv.metric("cmtpd_deliveries_total{result=\"failed\"}"), 5);
    // The store's durability work shows in the metrics.
    assert!(srv.metric("cmtpd_store_fsync_seconds_count") >= 1);
    assert!(srv.metric("cmtpd_store_commits_total") >= 1);
    // Domains are case-insensitive (protocol.md §4): A.EXAMPLE is a.example.
    let m = message(0, ("carol", "A.EXAMPLE"), ("x", "y"), b"", b"four", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
}

#[test]
fn huge_announced_body_is_refused_before_reading() {
    let srv = TestServer::on(BACKEND);
    srv.add_user("dave", "pw");
    let mut c = srv.client();
    let mut m = Vec::new();
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(&(1u64 << 62).to_be_bytes());
    m.extend_from_slice(b"dave\0\0x\0y\0");
    // No body byte is sent: the answer must come anyway.
    assert_eq!(c.mail(&m), "FAILURE");
    c.expect_eof();
    assert!(srv.metric("cmtpd_failures_total{reason=\"too_large\"}") >= 1);
}

#[test]
fn size_attachment_and_log_limits() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_message_size = 100000\nmax_attachments = 2\nmax_log_size = 10\n"
            .into(),
        ..Opts::on(BACKEND)
    });
    srv.add_user("erin", "pw");
    let ok = message(
        0,
        ("erin", ""),
        ("x", "y"),
        b"0123456789",
        &[1; 1000],
        &[b"a", b"b"],
    );
    let big = message(0, ("erin", ""), ("x", "y"), b"", &[1; 100_001], &[]);
    let atts = message(0, ("erin", ""), ("x", "y"), b"", b"", &[b"a", b"b", b"c"]);
    let log = message(0, ("erin", ""), ("x", "y"), b"01234567890", b"", &[]);
    let mut c = srv.client();
    assert_eq!(c.mail(&ok), "SUCCESS");
    for m in [big, atts, log] {
        let mut c = srv.client();
        // Only the envelope goes out: the refusal comes before any body byte.
        let env_len = 24 + 14;
        c.send(b"MAIL\0");
        c.send(&m[..env_len]);
        assert_eq!(c.status(), "FAILURE");
        c.expect_eof();
    }
}

#[test]
fn truncated_mail_stores_nothing_and_frees_the_connection() {
    let srv = TestServer::on(BACKEND);
    let fay = srv.add_user("fay", "pw");
    {
        let mut c = srv.client();
        let m = message(0, ("fay", ""), ("x", "y"), b"", &[9; 200_000], &[]);
        c.send(b"MAIL\0");
        c.send(&m[..150_000]);
        // Disconnect mid-body.
    }
    wait_until("connections to close", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    let mut c = srv.client();
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("fay", now()),
            &fay,
            "localhost",
        )
        .unwrap();
    assert_eq!(list, 0u32.to_be_bytes());
    assert_eq!(srv.metric("cmtpd_deliveries_total{result=\"ok\"}"), 0);
}

#[test]
fn disconnect_without_obai_frees_everything() {
    let srv = TestServer::on(BACKEND);
    let clients: Vec<Client> = (0..20).map(|_| srv.client()).collect();
    wait_until("20 open connections", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 20
    });
    drop(clients);
    wait_until("connections to close", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    // Half a command, then gone.
    {
        let mut c = srv.client();
        c.send(b"KEYREQUEST\0ali");
    }
    wait_until("connections to close", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    assert_eq!(srv.metric("cmtpd_connections_total"), 21);
}

#[test]
fn large_message_streams_in_and_out() {
    let srv = TestServer::on(BACKEND);
    let gus = srv.add_user("gus", "pw");
    let body: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let m = message(
        1,
        ("gus", ""),
        ("x", "y"),
        b"hop\0",
        &body,
        &[&body[..1000]],
    );
    let mut c = srv.client();
    assert_eq!(c.mail(&m), "SUCCESS");
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("gus", now()),
            &gus,
            "localhost",
        )
        .unwrap();
    let e = &cmtp_proto::mbox::decode_list(&list, 10).unwrap()[0];
    assert_eq!(e.size, m.len() as u64);
    assert_eq!(e.attachment_count, 1);
    let full = c
        .mbox(
            MboxKind::Fetch,
            MboxRequest::fetch("gus", now(), e.id, FetchPart::Full),
            &gus,
            "localhost",
        )
        .unwrap();
    assert!(full == m, "full fetch differs");
    let head = c
        .mbox(
            MboxKind::Fetch,
            MboxRequest::fetch("gus", now(), e.id, FetchPart::Head),
            &gus,
            "localhost",
        )
        .unwrap();
    assert_eq!(head.len() as u64, e.body_end);
    assert!(head[..] == m[..head.len()]);
    // Envelope: 24-byte header + "gus\0" "\0" "x\0" "y\0"; then log and body.
    assert_eq!(e.body_end, (24 + 9 + 4 + body.len()) as u64);
}

#[test]
fn mailbox_auth_window_keys_users_domains() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"a.example\", \"b.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let hal = srv.add_user("hal", "pw");
    let ivy = srv.add_user("ivy", "pw");
    let mut c = srv.client();
    assert_eq!(
        c.mail(&message(
            0,
            ("hal", ""),
            ("ivy", "a.example"),
            b"",
            b"hi",
            &[]
        )),
        "SUCCESS"
    );
    let list = |c: &mut Client, ts: u64, key, dom| {
        c.mbox(MboxKind::List, MboxRequest::list("hal", ts), key, dom)
    };
    assert!(list(&mut c, now(), &hal, "a.example").is_ok());
    assert!(list(&mut c, now(), &hal, "b.example").is_ok());
    assert!(list(&mut c, now() - 250, &hal, "a.example").is_ok());
    // Replay outside the window, both sides.
    assert_eq!(
        list(&mut c, now() - 400, &hal, "a.example"),
        Err("AUTHFAILURE".into())
    );
    assert_eq!(
        list(&mut c, now() + 400, &hal, "a.example"),
        Err("AUTHFAILURE".into())
    );
    // Wrong key (ivy signs a request for hal's mailbox).
    assert_eq!(
        list(&mut c, now(), &ivy, "a.example"),
        Err("AUTHFAILURE".into())
    );
    // Foreign domain in the signed bytes.
    assert_eq!(
        list(&mut c, now(), &hal, "evil.example"),
        Err("AUTHFAILURE".into())
    );
    // Unknown and hostile users.
    for u in ["nobody", "../hal"] {
        let r = c.mbox(
            MboxKind::List,
            MboxRequest::list(u, now()),
            &hal,
            "a.example",
        );
        assert_eq!(r, Err("AUTHFAILURE".into()));
    }
    // Ivy's own mailbox is empty: hal's message is not hers.
    let l = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("ivy", now()),
            &ivy,
            "a.example",
        )
        .unwrap();
    assert_eq!(l, 0u32.to_be_bytes());
    let entries =
        cmtp_proto::mbox::decode_list(&list(&mut c, now(), &hal, "a.example").unwrap(), 9).unwrap();
    let id = entries[0].id;
    assert_eq!(entries[0].src_account, "ivy");
    // Ivy cannot fetch or delete hal's message by id through her own mailbox.
    let r = c.mbox(
        MboxKind::Fetch,
        MboxRequest::fetch("ivy", now(), id, FetchPart::Full),
        &ivy,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("ivy", now(), id),
        &ivy,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    // A signature for FETCH does not authorise DEL of the same id.
    let mut req = MboxRequest::delete("hal", now(), id);
    req.signature = *hal
        .sign(
            &MboxRequest::fetch("hal", req.timestamp, id, FetchPart::Full)
                .signing_bytes(MboxKind::Fetch, "a.example"),
        )
        .as_bytes();
    c.send(&cmtp_proto::Command::MboxDelete(req.clone()).to_bytes());
    assert_eq!(c.mbox_reply(&req.signature), Err("AUTHFAILURE".into()));
    // Delete for real, then it is gone; DEL again → NOSUCHMESSAGE.
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("hal", now(), id),
        &hal,
        "a.example",
    );
    assert_eq!(r, Ok(vec![]));
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("hal", now(), id),
        &hal,
        "a.example",
    );
    assert_eq!(r, Err("NOSUCHMESSAGE".into()));
    assert_eq!(
        list(&mut c, now(), &hal, "a.example").unwrap(),
        0u32.to_be_bytes()
    );
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
}

/// Each mailbox has its own id sequence (issue 9): mail to hal and ivy interleaved gives
/// each 1, 2, 3 (on the old store-wide counter hal saw 1, 3, 5: ivy's traffic in the
/// gaps), and a deleted newest id is not given again.
#[test]
fn each_mailbox_lists_its_own_id_sequence() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"a.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let hal = srv.add_user("hal", "pw");
    let ivy = srv.add_user("ivy", "pw");
    let dom = "a.example";
    let mut c = srv.client();
    for _ in 0..3 {
        for to in ["hal", "ivy"] {
            let m = message(0, (to, dom), ("gus", "x.example"), b"", b"hi", &[]);
            assert_eq!(c.mail(&m), "SUCCESS");
        }
    }
    let ids = |c: &mut Client, user: &str, key| {
        let l = c
            .mbox(MboxKind::List, MboxRequest::list(user, now()), key, dom)
            .unwrap();
        cmtp_proto::mbox::decode_list(&l, 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&mut c, "hal", &hal), [1, 2, 3]);
    assert_eq!(ids(&mut c, "ivy", &ivy), [1, 2, 3]);
    let r = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("ivy", now(), 3),
        &ivy,
        dom,
    );
    assert_eq!(r, Ok(vec![]));
    let m = message(0, ("ivy", dom), ("gus", "x.example"), b"", b"again", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(ids(&mut c, "ivy", &ivy), [1, 2, 4]);
    assert_eq!(ids(&mut c, "hal", &hal), [1, 2, 3]);
}

#[test]
fn login_rate_limit_answers_failure_and_keeps_the_connection() {
    let srv = TestServer::start_with(Opts {
        // Loopback is exempt from per-address limits by default; these tests need them.
        config: "[limits]\nexempt_networks = []\n[rate]\nlogin_per_sec = 1\nlogin_burst = 3\nkeyrequest_per_sec = 1\nkeyrequest_burst = 2\n"
            .into(),
        ..Opts::on(BACKEND)
    });
    srv.add_user("jo", "pw");
    let mut c = srv.client();
    c.send(&b"LOGIN\0jo\0".repeat(10));
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..10 {
        let v = c.read_n(4);
        if v == *b"FAIL" {
            let rest = c.read_n(4);
            assert_eq!(&rest, b"URE\0");
            let sig = c.read_n(65);
            c.verify(b"FAILURE", &sig[..64]);
            refused += 1;
        } else {
            assert_eq!(v, [0, 0, 0, 1]);
            let len = u32::from_be_bytes(c.read_n(4).try_into().unwrap()) as usize;
            c.read_n(len + 64);
            ok += 1;
        }
    }
    assert!((3..=4).contains(&ok), "ok={ok}");
    assert_eq!(ok + refused, 10);
    // Another connection from the same IP shares the bucket.
    let mut c2 = srv.client();
    c2.send(b"KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0");
    c2.key_reply();
    c2.key_reply();
    let mut failures = 0;
    for _ in 0..2 {
        if c2.status() == "FAILURE" {
            failures += 1;
        }
    }
    assert!(failures >= 1);
    // The server key and NOOP are not limited by these buckets.
    c2.send(b"KEYREQUEST\0\0NOOP\0");
    c2.key_reply();
    assert_eq!(c2.general(), "SUCCESS");
    assert!(srv.metric("cmtpd_failures_total{reason=\"rate_limited\"}") >= 7);
}

#[test]
fn connection_limits_answer_failure() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections_per_ip = 3\nexempt_networks = []\n".into(),
        ..Opts::on(BACKEND)
    });
    let held: Vec<Client> = (0..3).map(|_| srv.client()).collect();
    let mut extra = srv.client(); // the greeting comes first (a busy CMTP server)
    assert_eq!(extra.general(), "FAILURE");
    extra.expect_eof();
    drop(held);
    wait_until("slots to free", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    let mut c = srv.client();
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");

    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections = 2\n".into(),
        ..Opts::on(BACKEND)
    });
    let _held: Vec<Client> = (0..2).map(|_| srv.client()).collect();
    let mut extra = srv.client(); // the greeting comes first (a busy CMTP server)
    assert_eq!(extra.general(), "FAILURE");
    extra.expect_eof();
    assert!(srv.metric("cmtpd_failures_total{reason=\"connection_limit\"}") >= 1);
}

#[test]
fn idle_connections_time_out() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nidle_timeout_secs = 1\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = srv.client();
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    // The server closes the silent connection (EOF arrives, the read does not hang).
    c.expect_eof();
    // Stalled in the middle of a message: FAILURE, then close; nothing stored.
    let lu = srv.add_user("lu", "pw");
    let mut c = srv.client();
    let m = message(0, ("lu", ""), ("x", "y"), b"", &[1; 5000], &[]);
    c.send(b"MAIL\0");
    c.send(&m[..3000]);
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    // Half a command word: FAILURE too.
    let mut c = srv.client();
    c.send(b"KEYREQ");
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"idle_timeout\"}"),
        3
    );
    let mut c = srv.client();
    let l = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("lu", now()),
            &lu,
            "localhost",
        )
        .unwrap();
    assert_eq!(l, 0u32.to_be_bytes());
}

#[test]
fn metrics_and_health_endpoints() {
    let srv = TestServer::on(BACKEND);
    let (status, body) = srv.http_get("/health");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(body, "ok");
    let (status, _) = srv.http_get("/nope");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    let mut c = srv.client();
    c.send(b"NOOP\0NOOP\0");
    c.general();
    c.general();
    let (_, m) = srv.http_get("/metrics");
    assert!(
        m.contains("cmtpd_commands_total{command=\"NOOP\"} 2\n"),
        "{m}"
    );
    assert!(m.contains("# TYPE cmtpd_store_fsync_seconds histogram"));
    assert!(m.contains("cmtpd_bytes_in_total 10\n"), "{m}");
    assert!(srv.metric("cmtpd_bytes_out_total") >= 2 * 73);
}

#[test]
fn sigterm_is_graceful_and_restart_binds_at_once() {
    let mut srv = TestServer::on(BACKEND);
    let kim = srv.add_user("kim", "pw");
    let addr = srv.addr;
    // A delivery in flight when SIGTERM arrives completes.
    let m = message(0, ("kim", ""), ("x", "y"), b"", &[5; 300_000], &[]);
    let mut c = srv.client();
    c.send(b"MAIL\0");
    c.send(&m[..100_000]);
    let mut idle = srv.client();
    srv.signal(libc::SIGTERM);
    // Shutdown has begun once the listener is gone (connections are refused).
    wait_until("the listener to close", Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_err()
    });
    c.send(&m[100_000..]);
    assert_eq!(c.status(), "SUCCESS");
    // An idle connection is closed by the shutdown.
    idle.expect_eof();
    drop(c);
    let st = srv.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    // Immediate restart on the same port and data.
    srv.restart();
    assert_eq!(srv.addr, addr);
    let mut c = srv.client();
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("kim", now()),
            &kim,
            "localhost",
        )
        .unwrap();
    assert_eq!(cmtp_proto::mbox::decode_list(&list, 9).unwrap().len(), 1);
    srv.signal(libc::SIGINT);
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn logs_never_show_secrets_or_bodies_and_json_lines_parse() {
    let mut srv = TestServer::start_with(Opts {
        global_args: vec!["--log-format".into(), "json".into()],
        // Everything, even the database client's statements when asked for by name.
        rust_log: Some("trace,tokio_postgres=trace,tokio_postgres::query=trace".into()),
        ..Opts::on(BACKEND)
    });
    let data = srv.data.clone();
    srv.add_user("mia", "hunter2");
    let mut c = srv.client();
    let marker = b"BODY-MARKER-7f3a";
    assert_eq!(
        c.mail(&message(0, ("mia", ""), ("x", "y"), b"", marker, &[])),
        "SUCCESS"
    );
    c.send(b"LOGIN\0mia\0");
    let xz = c.login_reply().unwrap();
    c.send(b"FOO\0");
    assert_eq!(c.general(), "FAILURE");
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let sk = std::fs::read(data.join("server.key")).unwrap();
    assert!(!log.contains("BODY-MARKER"), "a body reached the log");
    // Nor in the forms a debug print of bytes takes (hex, a list of numbers).
    let as_list = format!("{:?}", &marker[..]);
    for (form, text) in [
        ("a list of bytes", &as_list[1..as_list.len() - 1]),
        ("hex", &hex::encode(marker)),
    ] {
        let line = log.lines().find(|l| l.contains(text));
        assert!(
            line.is_none(),
            "a body reached the log as {form}: {}",
            &line.unwrap_or_default()[..300.min(line.unwrap_or_default().len())]
        );
    }
    assert!(
        !log.contains(&hex::encode(&sk[..32])),
        "the server secret reached the log"
    );
    assert!(
        !log.contains(&hex::encode(&xz[4..40])),
        "an xzibit reached the log"
    );
    assert!(!log.contains("hunter2"));
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        assert!(v.get("level").is_some());
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(log.contains("framing error"));
}

#[test]
fn reference_2016_wire_messages_are_stored_byte_identical() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"hawaii.edu\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    for u in ["bob", "carol", "üser"] {
        srv.add_user(u, "pw");
    }
    let text = std::fs::read_to_string(vectors_dir().join("message.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = json["vectors"].as_array().unwrap();
    // Every vector's 2016 wire form ("MAIL\0" + message + the 64-byte nonce only the 2016
    // server read) in one packet: the nonce's NULs are empty commands, ignored.
    let mut wire = Vec::new();
    let mut expected: std::collections::HashMap<String, Vec<Vec<u8>>> = Default::default();
    for v in vectors {
        wire.extend(hex::decode(v["wire"].as_str().unwrap()).unwrap());
        let acct = v["dest_account"].as_str().unwrap().to_owned();
        expected
            .entry(acct)
            .or_default()
            .push(hex::decode(v["message"].as_str().unwrap()).unwrap());
    }
    let mut c = srv.client();
    c.send(&wire);
    for _ in vectors {
        assert_eq!(c.status(), "SUCCESS");
    }
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    // Read back with a store of the test's own while serving: the data directory's
    // read-only view (as the admin CLI does), or a connection to the database.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for (acct, msgs) in &expected {
            let got = match srv.backend {
                Backend::Embedded => {
                    let store = cmtp_store::EmbeddedStore::open_read_only(&srv.data).unwrap();
                    read_mailbox(&store, acct).await
                }
                Backend::Postgres => read_mailbox(srv.pg_store(), acct).await,
            };
            assert_eq!(got.len(), msgs.len(), "mailbox {acct:?}");
            for ((id, got), want) in got.iter().zip(msgs) {
                assert_eq!(got, want, "mailbox {acct:?} message {id}");
            }
        }
    });
}

/// Every message of `mailbox` with its id, read through `store` in chunks.
async fn read_mailbox<S: cmtp_store::MailStore>(store: &S, mailbox: &str) -> Vec<(u64, Vec<u8>)> {
    use cmtp_store::MessageRead;
    let mut out = Vec::new();
    for info in store.list(mailbox).await.unwrap() {
        let (_, mut r) = store.open(mailbox, info.id).await.unwrap().unwrap();
        let mut got = Vec::new();
        while let Some(ch) = r.read_chunk(4096).await.unwrap() {
            got.extend(ch);
        }
        out.push((info.id, got));
    }
    out
}

#[test]
fn mailbox_auth_failures_are_rate_limited() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nexempt_networks = []\n[rate]\nmbox_auth_failures_per_sec = 1\nmbox_auth_failures_burst = 2\n".into(),
        ..Opts::on(BACKEND)
    });
    let pat = srv.add_user("pat", "pw");
    let other = cmtp_crypto::KeyPair::generate().unwrap();
    let mut c = srv.client();
    // Authorised requests never spend the failure budget.
    for _ in 0..5 {
        let r = c.mbox(
            MboxKind::List,
            MboxRequest::list("pat", now()),
            &pat,
            "localhost",
        );
        assert!(r.is_ok());
    }
    // Three refused requests in one packet (processed together, so no refill between).
    let mut wire = Vec::new();
    for _ in 0..3 {
        let mut req = MboxRequest::list("pat", now());
        req.signature = *other
            .sign(&req.signing_bytes(MboxKind::List, "localhost"))
            .as_bytes();
        wire.extend(cmtp_proto::Command::MboxList(req).to_bytes());
    }
    c.send(&wire);
    assert_eq!(c.status(), "v0:AUTHFAILURE");
    assert_eq!(c.status(), "v0:AUTHFAILURE");
    // Budget spent: refused without the signature check, connection still usable.
    assert_eq!(c.status(), "FAILURE");
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    assert!(srv.metric("cmtpd_failures_total{reason=\"rate_limited\"}") >= 1);
}

#[test]
fn malformed_mailbox_parameters_are_framing_errors() {
    let srv = TestServer::on(BACKEND);
    let upper_hex = format!("MBOXLIST\0quin\0{}\0{}\0", now(), "AB".repeat(64));
    let leading_zero = format!("MBOXDEL\0quin\0{}\0007\0{}\0", now(), "ab".repeat(64));
    let bad_part = format!("MBOXFETCH\0quin\0{}\01\0all\0{}\0", now(), "ab".repeat(64));
    for wire in [upper_hex, leading_zero, bad_part] {
        let mut c = srv.client();
        c.send(wire.as_bytes());
        assert_eq!(c.general(), "FAILURE", "{wire:?}");
        c.expect_eof();
    }
}
