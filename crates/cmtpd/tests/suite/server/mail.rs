//! MAIL: local, postmaster, unknown and hostile recipients, size limits, truncated
//! and large messages, the 2016 wire vectors stored byte for byte.

use std::time::Duration;

use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_testkit::*;

use crate::BACKEND;

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
