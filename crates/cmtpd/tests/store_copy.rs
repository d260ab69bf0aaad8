//! `cmtpd store copy --from embedded --to postgres` and `store verify`, run as the real
//! binary against a real PostgreSQL cluster started by the test process.

use std::path::Path;
use std::process::Command;

use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_store::{MailStore, MessageMeta, PeerStore, RELAY_QUEUE, UserStore};
use cmtp_store_pg::{PgOptions, PgStore};
use cmtp_testkit::*;
use cmtpd::relay::QueueNote;

fn pg_config(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// `cmtpd --data-dir DATA ARGS` with the database in `$CMTPD_DATABASE_URL` (the
/// configuration keeps the embedded backend: the source of a copy).
fn with_url(data: &Path, url: &str, args: &[&str]) -> Out {
    let mut c = Command::new(cmtpd_bin());
    c.env("CMTPD_DATABASE_URL", url)
        .arg("--data-dir")
        .arg(data)
        .args(args);
    run(c, b"")
}

fn mbox_list(c: &mut Client, user: &str, key: &cmtp_crypto::KeyPair) -> Vec<(u64, u64)> {
    let entries = c.list_mailbox(user, key);
    entries.iter().map(|e| (e.id, e.size)).collect()
}

/// An embedded installation (users with and without an OPAQUE login, several
/// mailboxes, a deleted message, a message of several MiB, a note, a queued relay
/// message with a relay id, a pinned peer with a TLS mark) is copied into PostgreSQL; a
/// server on the database then serves the same listing and bytes, logins work, ids go
/// on after the deleted ones, and `store verify` catches one corrupted byte.
#[test]
fn store_copy_moves_an_embedded_installation_to_postgres() {
    let mut srv = TestServer::start();
    add_user(&srv.data, "alice", "alice password");
    let bob = srv.add_user("bob", "pw");
    let mut c = srv.client();
    let big = message(
        0,
        ("bob", ""),
        ("x", "y"),
        b"",
        &noise(5 << 20, 9),
        &[b"att"],
    );
    let small = message(0, ("bob", ""), ("x", "y"), b"hop\0", b"hello bob", &[]);
    let gone = message(0, ("bob", ""), ("x", "y"), b"", b"deleted later", &[]);
    for m in [&small, &big, &gone] {
        assert_eq!(c.mail(m), "SUCCESS");
    }
    let to_alice = message(0, ("alice", ""), ("x", "y"), b"", b"hi alice", &[]);
    let to_server = message(0, ("", ""), ("x", "y"), b"", b"hi postmaster", &[]);
    assert_eq!(c.mail(&to_alice), "SUCCESS");
    assert_eq!(c.mail(&to_server), "SUCCESS");
    // The last of bob's messages is deleted: its id must not be given again.
    let before = mbox_list(&mut c, "bob", &bob);
    assert_eq!(before.len(), 3);
    let last_id = before[2].0;
    c.mbox(
        MboxKind::Delete,
        MboxRequest::delete("bob", now(), last_id),
        &bob,
        "localhost",
    )
    .unwrap();
    let before = mbox_list(&mut c, "bob", &bob);
    assert_eq!(before.len(), 2);
    drop(c);

    let url = PgCluster::shared().database("store copy");
    with_url(&srv.data, &url, &["db", "migrate"]).ok();
    // The server holds the store: the copy refuses.
    let e = with_url(
        &srv.data,
        &url,
        &["store", "copy", "--from", "embedded", "--to", "postgres"],
    )
    .failed()
    .to_owned();
    assert!(e.contains("stop the server"), "{e}");
    srv.kill();

    // What the server would have written meanwhile: a queued relay message with a note
    // and a relay id, a pinned peer with its TLS mark.
    let note = QueueNote::new("carol", "far.example", now(), false);
    let relay_id = [5u8; 16];
    let qid = rt().block_on(async {
        let store =
            cmtp_store::EmbeddedStore::open(&srv.data, cmtp_store::Options::default()).unwrap();
        let mut d = store.begin();
        cmtp_store::Delivery::write(&mut d, &small).await.unwrap();
        cmtp_store::Delivery::commit(
            d,
            MessageMeta {
                mailbox: RELAY_QUEUE.into(),
                src_account: "bob".into(),
                src_domain: "localhost".into(),
                version: 0,
                attachment_count: 0,
                body_end: 3,
                note: note.encode(),
                relay_id: Some(relay_id),
            },
        )
        .await
        .unwrap()
    });
    let peers = cmtp_store::FsPeers::open(&srv.data).unwrap();
    peers.pin_peer_key("b.example", &[3; 32]).unwrap();
    peers.set_peer_tls("b.example").unwrap();
    peers.set_peer_tls("tls-only.example").unwrap();
    let pinned = peers.peer_key("b.example").unwrap().unwrap();

    // Unsupported directions are refused, naming what is supported.
    let e = with_url(
        &srv.data,
        &url,
        &["store", "copy", "--from", "postgres", "--to", "embedded"],
    )
    .failed()
    .to_owned();
    assert!(e.contains("--from embedded --to postgres"), "{e}");

    let out = with_url(
        &srv.data,
        &url,
        &["store", "copy", "--from", "embedded", "--to", "postgres"],
    )
    .ok()
    .to_owned();
    assert!(
        out.contains(
            "copied 2 users, 1 with an OPAQUE login; 2 peer records; 5 messages in 4 mailboxes"
        ) && out.contains("1 relay id"),
        "{out}"
    );
    assert!(
        out.contains("verified: 2 users, 2 peer records, 5 messages"),
        "{out}"
    );
    // A second copy would merge: refused.
    let e = with_url(
        &srv.data,
        &url,
        &["store", "copy", "--from", "embedded", "--to", "postgres"],
    )
    .failed()
    .to_owned();
    assert!(e.contains("not empty"), "{e}");

    // The copy, as the traits see it.
    let pg = PgStore::connect(&url, PgOptions::default()).unwrap();
    assert_eq!(pg.peer_key("b.example").unwrap().unwrap(), pinned);
    assert!(pg.peer_tls("b.example").unwrap() && pg.peer_tls("tls-only.example").unwrap());
    assert!(pg.seen_relay_id(&relay_id));
    let alice_login = cmtp_store::FsUsers::open_read_only(&srv.data)
        .opaque_login("alice")
        .unwrap();
    assert!(alice_login.is_some());
    assert_eq!(pg.opaque_login("alice").unwrap(), alice_login);
    assert_eq!(pg.opaque_login("bob").unwrap(), None);
    assert_eq!(
        pg.get("bob").unwrap(),
        cmtp_store::FsUsers::open_read_only(&srv.data)
            .get("bob")
            .unwrap()
    );
    let queued = rt().block_on(pg.list(RELAY_QUEUE)).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].id, qid);
    assert_eq!(QueueNote::decode(&queued[0].meta.note).unwrap(), note);

    // One corrupted byte in the database: `store verify` names the message; with the
    // byte put back it passes.
    let db = url.rsplit('/').next().unwrap();
    let tamper = format!(
        "UPDATE message_chunks SET data = set_byte(data, 1000, (get_byte(data, 1000) + 1) % 256) \
             WHERE seq = 3 AND key = (SELECT key FROM messages WHERE mailbox = 'bob' AND id = {})",
        before[1].0
    );
    PgCluster::shared().psql(db, &tamper);
    let out = with_url(
        &srv.data,
        &url,
        &["store", "verify", "--from", "embedded", "--to", "postgres"],
    );
    let e = out.failed().to_owned();
    assert!(e.contains("verification failed: 1 difference"), "{e}");
    assert!(
        out.stdout.contains(&format!(
            "DIFFERS: mailbox \"bob\" message {}: the bytes differ",
            before[1].0
        )),
        "{}",
        out.stdout
    );
    PgCluster::shared().psql(db, &tamper.replace("+ 1", "+ 255"));
    with_url(
        &srv.data,
        &url,
        &["store", "verify", "--from", "embedded", "--to", "postgres"],
    )
    .ok();

    // A server on the database serves the same listing and bytes.
    let pg_srv = TestServer::start_with(Opts {
        data: Some(srv.data.clone()),
        config: pg_config(&url),
        ..Opts::default()
    });
    let mut c = pg_srv.client();
    assert_eq!(mbox_list(&mut c, "bob", &bob), before);
    assert_eq!(c.fetch_message("bob", &bob, before[0].0), small);
    assert_eq!(c.fetch_message("bob", &bob, before[1].0), big);
    // alice's OPAQUE login was copied: `cmtp login` works against the new server.
    let home = tempfile::tempdir().unwrap();
    login(
        home.path(),
        &home.path().join("alice"),
        "alice@localhost",
        &pg_srv.server_arg(),
        "alice password",
        false,
    );
    let q = {
        let mut cmd = Command::new(cmtpd_bin());
        cmd.env("CMTPD_DATABASE_URL", &url)
            .arg("--data-dir")
            .arg(&srv.data)
            .arg("--config")
            .arg(pg_srv.config.as_ref().unwrap())
            .args(["queue", "list", "--json"]);
        run(cmd, b"").json()
    };
    assert_eq!(q[0]["to"], "carol@far.example");
    drop(c);
    drop(pg_srv);

    // Ids go on after the deleted message's.
    let pg_srv = TestServer::start_with(Opts {
        data: Some(srv.data.clone()),
        config: pg_config(&url),
        ..Opts::default()
    });
    let mut c = pg_srv.client();
    assert_eq!(c.mail(&small), "SUCCESS");
    let after = mbox_list(&mut c, "bob", &bob);
    assert_eq!(after.last().unwrap().0, last_id + 1);
}
