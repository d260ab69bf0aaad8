//! Hardening tests that run admin commands (`user remove`, `mailbox list/show`): a
//! re-added account not seeing its name's previous holder's mail, `mailbox show` never
//! creating a server key. On the backend of the including target (`BACKEND`); only
//! tests/hardening.rs (embedded) includes them until the admin commands work on
//! PostgreSQL, then tests/suite_pg.rs includes them too.

use std::time::Duration;

use cmtp_crypto::KeyPair;
use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_store::UserRecord;
use cmtp_testkit::*;

use crate::BACKEND;

#[test]
fn readded_account_does_not_see_the_previous_holders_mail() {
    let srv = TestServer::on(BACKEND);
    let old = srv.add_user("eve", "pw");
    let mut c = srv.client();
    let m = message(0, ("eve", ""), ("x", "y"), b"", b"for the old eve", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    let entries = c.list_mailbox("eve", &old);
    assert_eq!(entries.len(), 1);
    let (old_id, received) = (entries[0].id, entries[0].received);
    let out = srv.admin(&["user", "remove", "eve"], b"");
    assert!(out.success(), "{out:?}");
    // `created` has second resolution and a message received in the creation second
    // counts as the new holder's: wait for the clock to pass it (a real event, polled).
    wait_until("the next second", Duration::from_secs(5), || {
        now() > received
    });
    let new = KeyPair::generate().unwrap();
    srv.with_users(|u| {
        u.add(&UserRecord {
            name: "eve".into(),
            public_key: *new.public().as_bytes(),
            xzibit: Vec::new(),
            created: now(),
        })
    })
    .unwrap();
    assert!(c.list_mailbox("eve", &new).is_empty());
    let fetch = c.mbox(
        MboxKind::Fetch,
        MboxRequest::fetch("eve", now(), old_id, FetchPart::Full),
        &new,
        "localhost",
    );
    assert_eq!(fetch.unwrap_err(), "NOSUCHMESSAGE");
    let del = c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("eve", now(), old_id),
        &new,
        "localhost",
    );
    assert_eq!(del.unwrap_err(), "NOSUCHMESSAGE");
    // New mail for the new holder is seen.
    let m2 = message(0, ("eve", ""), ("x", "y"), b"", b"for the new eve", &[]);
    assert_eq!(c.mail(&m2), "SUCCESS");
    let entries = c.list_mailbox("eve", &new);
    assert_eq!(entries.len(), 1);
    assert_ne!(entries[0].id, old_id);
}

#[test]
fn mailbox_show_never_creates_a_server_key() {
    let mut srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    let pm = message(0, ("", ""), ("x", "y"), b"", b"hello server", &[]);
    assert_eq!(c.mail(&pm), "SUCCESS");
    drop(c);
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
    let key = srv.data.join("server.key");
    std::fs::remove_file(&key).unwrap();
    let out = srv.admin(&["mailbox", "list", "--json"], b"");
    let id = out.json()[0]["id"].as_u64().unwrap().to_string();
    let out = srv.admin(&["mailbox", "show", &id], b"");
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("no server key"));
    assert!(!key.exists());
}
