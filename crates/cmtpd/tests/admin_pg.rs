//! The admin subcommands with `[store] backend = "postgres"` (a real PostgreSQL cluster
//! started by the test process), run as the real binary: users, mailboxes, the relay
//! queue and peer keys live in the database, and a `cmtpd serve` on it sees them.

use std::path::PathBuf;
use std::process::Command;

use cmtp_store::{MailStore, MessageMeta, PeerStore, RELAY_QUEUE};
use cmtp_store_pg::{PgOptions, PgStore};
use cmtp_testkit::*;
use cmtpd::relay::QueueNote;

/// A data directory (server key, OPAQUE secrets) and a configuration naming a fresh,
/// migrated database.
struct PgNode {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    url: String,
}

fn pg_config(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n")
}

impl PgNode {
    fn new(name: &str) -> PgNode {
        let url = PgCluster::shared().database(name);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        admin(&data, &["init"], b"").ok();
        let config = dir.path().join("pg.toml");
        std::fs::write(&config, pg_config(&url)).unwrap();
        PgNode {
            _dir: dir,
            data,
            config,
            url,
        }
    }

    /// `cmtpd --data-dir DATA --config pg.toml ARGS`.
    fn cmtpd(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut c = Command::new(cmtpd_bin());
        c.env_remove("CMTPD_DATABASE_URL")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .args(args);
        run(c, stdin)
    }

    fn store(&self) -> PgStore {
        PgStore::connect(&self.url, PgOptions::default()).unwrap()
    }

    fn serve(&self) -> TestServer {
        TestServer::start_with(Opts {
            data: Some(self.data.clone()),
            config: pg_config(&self.url),
            ..Opts::default()
        })
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn admin_commands_work_on_postgres() {
    let node = PgNode::new("admin commands");
    // No schema yet: a clear error naming the fix, nothing reported as done.
    let e = node.cmtpd(&["user", "list"], b"").failed().to_owned();
    assert!(e.contains("cmtpd db migrate"), "{e}");
    node.cmtpd(&["db", "migrate"], b"").ok();

    // user add: stored in the database (not in the data directory), with its OPAQUE
    // login; a duplicate and a folded duplicate are refused.
    let out = node
        .cmtpd(
            &["user", "add", "Lena", "--password-stdin"],
            b"correct horse \n",
        )
        .ok()
        .to_owned();
    assert!(out.starts_with("added lena "), "{out}");
    let hex_key = out.split_whitespace().nth(2).unwrap().to_owned();
    assert!(!node.data.join("users/lena").exists());
    let store = node.store();
    assert!(
        cmtp_store::UserStore::opaque_login(&store, "lena")
            .unwrap()
            .is_some()
    );
    for dup in ["lena", "LENA"] {
        let e = node
            .cmtpd(
                &["user", "add", dup, "--password-stdin"],
                b"tulip marble quarry 42\n",
            )
            .failed()
            .to_owned();
        assert!(e.contains("exists"), "{e}");
    }
    let weak = node
        .cmtpd(&["user", "add", "weak", "--password-stdin"], b"lena1234\n")
        .failed()
        .to_owned();
    assert!(weak.contains("too weak"), "{weak}");

    // user import: a 2016 account.
    let text = std::fs::read_to_string(vectors_dir().join("xzibit.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v = json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("public_key_file").is_some())
        .unwrap();
    let old = v["username"].as_str().unwrap();
    let (pk_file, xz_file) = (node.data.join("old.key"), node.data.join("old.xzibit"));
    let pk = hex::decode(v["public_key_file"].as_str().unwrap()).unwrap();
    let xz = hex::decode(v["xzibit"].as_str().unwrap()).unwrap();
    std::fs::write(&pk_file, &pk).unwrap();
    std::fs::write(&xz_file, &xz).unwrap();
    node.cmtpd(
        &[
            "user",
            "import",
            old,
            "--public-key",
            pk_file.to_str().unwrap(),
            "--xzibit",
            xz_file.to_str().unwrap(),
        ],
        b"",
    )
    .ok();

    // user list: the same table and JSON as on the embedded store.
    let list = node.cmtpd(&["user", "list", "--json"], b"").json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    let mut want = vec![old, "lena"];
    want.sort();
    assert_eq!(names, want);
    let lena = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "lena")
        .unwrap();
    assert_eq!(lena["public_key"], hex_key.as_str());
    assert_eq!(lena["xzibit_version"], 2);
    let table = node.cmtpd(&["user", "list"], b"").ok().to_owned();
    assert!(
        table.starts_with("NAME ") && table.contains("lena") && table.ends_with("2 users\n"),
        "{table}"
    );

    // A server on the database serves the added user: its key, and its login through
    // `cmtp login` (OPAQUE, with the setup in the data directory `user add` used).
    let srv = node.serve();
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0lena\0\0");
    assert_eq!(hex::encode(c.key_or_none().expect("lena's key")), hex_key);
    let home = tempfile::tempdir().unwrap();
    let profile = home.path().join("lena");
    login(
        home.path(),
        &profile,
        "lena@localhost",
        &srv.server_arg(),
        "correct horse ",
        false,
    );
    // A wrong password does not log in.
    let bad = cmtp(
        home.path(),
        &home.path().join("other"),
        &[
            "login",
            "lena@localhost",
            "--server",
            &srv.server_arg(),
            "--password-stdin",
        ],
        b"wrong horse\n",
    );
    assert!(!bad.success(), "{bad:?}");

    // Mail to the server's own mailbox, then the mailbox commands.
    let m1 = message(
        0,
        ("", ""),
        ("otto", "y.example"),
        b"hop\0",
        b"plain words",
        &[],
    );
    let m2 = message(
        0,
        ("lena", ""),
        ("otto", "y.example"),
        b"",
        b"for lena",
        &[],
    );
    assert_eq!(c.mail(&m1), "SUCCESS");
    assert_eq!(c.mail(&m2), "SUCCESS");
    let listed = node.cmtpd(&["mailbox", "list", "--json"], b"").json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["from"], "otto@y.example");
    assert_eq!(listed[0]["size"], m1.len() as u64);
    let id = listed[0]["id"].as_u64().unwrap().to_string();
    let text = node.cmtpd(&["mailbox", "list"], b"").ok().to_owned();
    assert!(
        text.starts_with("ID ") && text.contains("1 message, "),
        "{text}"
    );
    let show = node.cmtpd(&["mailbox", "show", &id], b"").ok().to_owned();
    assert!(
        show.contains("plain words") && show.contains("log: hop"),
        "{show}"
    );
    node.cmtpd(&["mailbox", "show", "999"], b"").failed();
    let lenas = node
        .cmtpd(&["mailbox", "list", "LENA", "--json"], b"")
        .json();
    assert_eq!(lenas[0]["size"], m2.len() as u64);
    // stats: the database's size instead of the log's segments.
    let stats = node.cmtpd(&["mailbox", "stats", "--json"], b"").json();
    assert_eq!(stats["messages"], 2);
    assert_eq!(stats["bytes"], (m1.len() + m2.len()) as u64);
    assert_eq!(stats["mailboxes"]["lena"]["messages"], 1);
    assert!(
        stats["database_bytes"].as_u64().unwrap() > 1 << 20,
        "{stats}"
    );
    assert!(stats.get("segments").is_none(), "{stats}");
    let stats = node.cmtpd(&["mailbox", "stats"], b"").ok().to_owned();
    assert!(
        stats.starts_with("2 messages, ")
            && stats.contains("database ")
            && stats.contains("lena: 1 message"),
        "{stats}"
    );

    // user remove: gone for the server at once; its mail stays.
    node.cmtpd(&["user", "remove", "Lena"], b"").ok();
    c.send(b"KEYREQUEST\0lena\0\0");
    assert_eq!(c.key_or_none(), None);
    node.cmtpd(&["user", "remove", "lena"], b"").failed();
    drop(c);
    drop(srv);

    // The relay queue: a queued message written as the server queues one.
    let note = QueueNote::new("bob", "far.example", now(), false);
    let mut waiting = note.clone();
    waiting.next = now() + 3600;
    waiting.attempts = 2;
    waiting.last_error = "connection refused".into();
    let qid = rt().block_on(async {
        let mut d = store.begin();
        cmtp_store::Delivery::write(&mut d, &m1).await.unwrap();
        cmtp_store::Delivery::commit(
            d,
            MessageMeta {
                mailbox: RELAY_QUEUE.into(),
                src_account: "lena".into(),
                src_domain: "localhost".into(),
                version: 0,
                attachment_count: 0,
                body_end: 0,
                note: waiting.encode(),
                relay_id: None,
            },
        )
        .await
        .unwrap()
    });
    let q = node.cmtpd(&["queue", "list", "--json"], b"").json();
    assert_eq!(q[0]["id"], qid);
    assert_eq!(q[0]["to"], "bob@far.example");
    assert_eq!(q[0]["attempts"], 2);
    assert_eq!(q[0]["next_attempt"], waiting.next);
    let text = node.cmtpd(&["queue", "list"], b"").ok().to_owned();
    assert!(
        text.contains("to bob@far.example") && text.contains("connection refused"),
        "{text}"
    );
    let show = node
        .cmtpd(&["queue", "show", &qid.to_string()], b"")
        .ok()
        .to_owned();
    assert!(
        show.contains("to bob@far.example") && show.contains("attempts 2"),
        "{show}"
    );
    // retry: the next attempt is now, in the database (whichever node has it tries).
    let out = node
        .cmtpd(&["queue", "retry", &qid.to_string()], b"")
        .ok()
        .to_owned();
    assert!(out.contains("1 message(s)"), "{out}");
    let q = node.cmtpd(&["queue", "list", "--json"], b"").json();
    assert_eq!(q[0]["next_attempt"], 0);
    assert_eq!(q[0]["attempts"], 2, "a retry is not an attempt");
    node.cmtpd(&["queue", "retry", "999"], b"").failed();
    // drop: deleted in the database.
    node.cmtpd(&["queue", "drop", &qid.to_string()], b"").ok();
    assert!(node.cmtpd(&["queue", "list"], b"").ok().contains("empty"));
    node.cmtpd(&["queue", "drop", &qid.to_string()], b"")
        .failed();

    // Peer keys: a pinned key and a refused offer, then the operator's trust.
    let (old_key, new_key) = ([7u8; 32], [8u8; 32]);
    store.pin_peer_key("b.example", &old_key).unwrap();
    store.offer_peer_key("b.example", &new_key).unwrap();
    let keys = node.cmtpd(&["domain", "keys"], b"").ok().to_owned();
    assert!(
        keys.contains("b.example") && keys.contains("REFUSED"),
        "{keys}"
    );
    let j = node.cmtpd(&["domain", "keys", "--json"], b"").json();
    assert_eq!(j[0]["public_key"], hex::encode(old_key));
    assert_eq!(j[0]["offered"]["public_key"], hex::encode(new_key));
    node.cmtpd(&["domain", "trust", "B.example"], b"").ok();
    assert_eq!(store.peer_key("b.example").unwrap().unwrap().key, new_key);
    node.cmtpd(&["domain", "trust", "b.example"], b"").failed();
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    admin(&data, &["init"], b"").ok();
    // A closed port on loopback: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("pg.toml");
    std::fs::write(
        &cfg,
        pg_config(&format!("postgres://cmtp:secret@127.0.0.1:{port}/none")),
    )
    .unwrap();
    for args in [
        &["user", "list"][..],
        &["mailbox", "stats"],
        &["queue", "list"],
        &["domain", "keys"],
    ] {
        let mut c = Command::new(cmtpd_bin());
        c.env_remove("CMTPD_DATABASE_URL")
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .args(args);
        let out = run(c, b"");
        let e = out.failed();
        assert!(
            e.contains("cannot open the PostgreSQL store") && e.contains("unreachable"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("secret"), "the password is shown: {e}");
    }
}

/// `queue retry` on postgres writes the database and also tells the node running on this
/// data directory, which tries at once: its attempt (failing here: no DNS) is saved in
/// the note, which the database alone would not do before a restart.
#[test]
fn queue_retry_reaches_the_node_on_this_data_directory() {
    let node = PgNode::new("queue retry node");
    node.cmtpd(&["db", "migrate"], b"").ok();
    let mut waiting = QueueNote::new("bob", "far.example", now(), false);
    waiting.next = now() + 3600;
    let store = node.store();
    let qid = rt().block_on(async {
        let mut d = store.begin();
        cmtp_store::Delivery::write(&mut d, b"queued bytes")
            .await
            .unwrap();
        cmtp_store::Delivery::commit(
            d,
            MessageMeta {
                mailbox: RELAY_QUEUE.into(),
                src_account: "lena".into(),
                src_domain: "localhost".into(),
                version: 0,
                attachment_count: 0,
                body_end: 0,
                note: waiting.encode(),
                relay_id: None,
            },
        )
        .await
        .unwrap()
    });
    // The node loads the queue at start: the message waits an hour.
    let _srv = node.serve();
    let attempts = || node.cmtpd(&["queue", "list", "--json"], b"").json()[0]["attempts"].as_u64();
    assert_eq!(attempts(), Some(0));
    node.cmtpd(&["queue", "retry", &qid.to_string()], b"").ok();
    poll(
        "the node's attempt saved in the note",
        std::time::Duration::from_secs(20),
        || (attempts() == Some(1)).then_some(()),
    );
    let q = node.cmtpd(&["queue", "list", "--json"], b"").json();
    assert!(q[0]["next_attempt"].as_u64().unwrap() > 0, "{q}");
    assert!(!q[0]["last_error"].as_str().unwrap().is_empty(), "{q}");
}
