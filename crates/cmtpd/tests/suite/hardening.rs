//! Hardening over real TCP: mailbox quotas, command and transfer deadlines, the
//! load-only key path (a re-added account not seeing its name's previous holder's mail:
//! tests/hardening.rs, as it needs the admin commands).
//!
//! On the backend of the including target (`BACKEND`): tests/hardening.rs runs these on the
//! embedded store, tests/suite_pg.rs on PostgreSQL.

use std::io::Write;
use std::time::Duration;

use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_testkit::*;

use super::BACKEND;

#[test]
fn mailbox_quota_refuses_delivery_and_list_stays_bounded() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_mailbox_messages = 2\nmax_mailbox_bytes = 100000\n".into(),
        ..Opts::on(BACKEND)
    });
    let ann = srv.add_user("ann", "pw");
    let bob = srv.add_user("bob", "pw");
    let mut c = srv.client();
    let m = message(0, ("ann", ""), ("x", "y"), b"", b"hello", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(c.mail(&m), "SUCCESS");
    // Full by count: DELIVERYFAILURE after the message was read; the connection goes on.
    assert_eq!(c.mail(&m), "v0:DELIVERYFAILURE");
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    let entries = c.list_mailbox("ann", &ann);
    assert_eq!(entries.len(), 2);
    // Deleting one makes room again.
    c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("ann", now(), entries[0].id),
        &ann,
        "localhost",
    )
    .unwrap();
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(c.mail(&m), "v0:DELIVERYFAILURE");

    // Full by bytes: the message that crosses the quota is taken, the next is not.
    let big = message(0, ("bob", ""), ("x", "y"), b"", &[7; 120_000], &[]);
    assert_eq!(c.mail(&big), "SUCCESS");
    let small = message(0, ("bob", ""), ("x", "y"), b"", b"hi", &[]);
    assert_eq!(c.mail(&small), "v0:DELIVERYFAILURE");
    assert_eq!(c.list_mailbox("bob", &bob).len(), 1);
    // Other mailboxes are not affected.
    let pm = message(0, ("", ""), ("x", "y"), b"", b"hi", &[]);
    assert_eq!(c.mail(&pm), "SUCCESS");
}

#[test]
fn list_of_many_messages_is_complete_and_ordered() {
    // 2100 messages to one mailbox at once: over its default MAIL burst (2000).
    let srv = TestServer::start_with(Opts {
        config: "[rate]\nmailbox_mail_per_sec = 0\n".into(),
        ..Opts::on(BACKEND)
    });
    let cy = srv.add_user("cy", "pw");
    let mut c = srv.client();
    // More than one store batch (1024 entries per batch), pipelined in one write.
    let n = 2100;
    let mut w = Vec::new();
    for i in 0..n {
        let m = message(0, ("cy", ""), (&format!("s{i}"), "y"), b"", b"b", &[]);
        w.extend_from_slice(b"MAIL\0");
        w.extend_from_slice(&m);
    }
    c.send(&w);
    for _ in 0..n {
        assert_eq!(c.status(), "SUCCESS");
    }
    let payload = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("cy", now()),
            &cy,
            "localhost",
        )
        .unwrap();
    let entries = cmtp_proto::mbox::decode_list(&payload, 10_000).unwrap();
    assert_eq!(entries.len(), n);
    assert!(entries.windows(2).all(|w| w[0].id < w[1].id));
    let senders: Vec<String> = entries.iter().map(|e| e.src_account.clone()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    assert_eq!(senders, expected);
}

#[test]
fn trickled_command_is_cut_by_the_command_timeout() {
    // The idle timeout alone (300 s) would never fire: a byte arrives every 50 ms.
    let srv = TestServer::start_with(Opts {
        config: "[limits]\ncommand_timeout_secs = 1\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = srv.client();
    let mut w = c.s.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        // A user name of up to 255 bytes is a legal command in progress for 12 s.
        let mut bytes = b"KEYREQUEST\0".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 200));
        for b in bytes {
            if w.write_all(&[b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    // Waiting for the server's FAILURE and close is the synchronisation.
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    let _ = trickler.join();
    // A normal command right after connecting is unaffected.
    let mut c = srv.client();
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
}

#[test]
fn slow_mail_is_cut_by_the_transfer_rate_and_fast_mail_passes() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmin_transfer_rate = 2000\ntransfer_grace_secs = 1\n".into(),
        ..Opts::on(BACKEND)
    });
    let dee = srv.add_user("dee", "pw");
    let m = message(0, ("dee", ""), ("x", "y"), b"", &[5; 20_000], &[]);
    // At full speed: stored.
    let mut c = srv.client();
    assert_eq!(c.mail(&m), "SUCCESS");
    // About 500 bytes/s, a quarter of the minimum: FAILURE and close, nothing stored.
    let mut c = srv.client();
    let mut w = c.s.try_clone().unwrap();
    let mut data = b"MAIL\0".to_vec();
    data.extend_from_slice(&m);
    let trickler = std::thread::spawn(move || {
        for chunk in data.chunks(25) {
            if w.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    let _ = trickler.join();
    let mut c = srv.client();
    assert_eq!(c.list_mailbox("dee", &dee).len(), 1);
}

#[test]
fn full_address_table_refuses_new_addresses_with_greeting_then_failure() {
    let srv = TestServer::start_with(Opts {
        // Loopback is exempt from per-address limits by default; this test needs them.
        config: "[limits]\nmax_tracked_ips = 1\nexempt_networks = []\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut held = srv.client();
    held.send(b"NOOP\0");
    assert_eq!(held.general(), "SUCCESS");
    // Another loopback address: the table (one entry, in use) has no room for it.
    let mut other = connect_from([127, 0, 0, 2].into(), srv.addr, srv.key);
    let g = other.read_line();
    assert!(
        g.starts_with("220 ") && g.ends_with(" CMTP/1 ready\r\n"),
        "{g:?}"
    );
    assert_eq!(other.general(), "FAILURE");
    other.expect_eof();
    // The known address still gets in.
    let mut again = srv.client();
    again.send(b"NOOP\0");
    assert_eq!(again.general(), "SUCCESS");
}

#[test]
fn peer_that_does_not_read_is_closed() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nidle_timeout_secs = 1\n".into(),
        ..Opts::on(BACKEND)
    });
    let fay = srv.add_user("fay", "pw");
    let mut c = srv.client();
    let m = message(0, ("fay", ""), ("x", "y"), b"", &[9; 1 << 20], &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    let id = c.list_mailbox("fay", &fay)[0].id;
    // 64 MiB of replies asked for in one write, none read: more than the socket buffers
    // hold, so the server's write stalls and it must give up on the connection.
    let mut w = Vec::new();
    for _ in 0..64 {
        let mut req = MboxRequest::fetch("fay", now(), id, FetchPart::Full);
        req.signature = *fay
            .sign(&req.signing_bytes(MboxKind::Fetch, "localhost"))
            .as_bytes();
        w.extend_from_slice(&cmtp_proto::Command::MboxFetch(req).to_bytes());
    }
    c.send(&w);
    wait_until(
        "the server to drop the connection",
        Duration::from_secs(30),
        || srv.metric("cmtpd_connections_open") == 0,
    );
    drop(c);
}

/// Connects from `from` (a loopback address) to `to`.
fn connect_from(
    from: std::net::IpAddr,
    to: std::net::SocketAddr,
    key: cmtp_crypto::PublicKey,
) -> Client {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(std::net::SocketAddr::new(from, 0)).unwrap();
        sock.connect(to).await.unwrap().into_std().unwrap()
    });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    Client { s, key }
}
