//! The admin subcommands, run as the real binary while the server runs on the same data
//! directory; changes are visible to the server at once. The tests marked so run on both
//! backends (the embedded store, and PostgreSQL: a real cluster started by the test
//! process) from one body, with the same assertions on the output.

use cmtp_crypto::{KeyPair, PublicKey, Xzibit};
use cmtp_testkit::*;

fn ok(out: &Out) -> String {
    out.ok().to_owned()
}

fn failed(out: &Out) -> String {
    out.failed().to_owned()
}

/// A server on the embedded store, and one on a fresh, migrated PostgreSQL database.
fn on_both_backends(name: &str) -> [TestServer; 2] {
    let url = PgCluster::shared().database(name);
    cmtp_store_pg::migrate(&url).unwrap();
    [
        TestServer::start(),
        TestServer::start_with(Opts {
            config: format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
            ..Opts::default()
        }),
    ]
}

/// An admin subcommand with the server's data directory and configuration (which names
/// its backend).
fn adm(srv: &TestServer, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = std::process::Command::new(cmtpd_bin());
    c.env_remove("CMTPD_DATABASE_URL")
        .arg("--data-dir")
        .arg(&srv.data)
        .arg("--config")
        .arg(
            srv.config
                .as_ref()
                .expect("a test server has a configuration file"),
        )
        .args(args);
    run(c, stdin)
}

#[test]
fn user_add_list_remove_while_serving() {
    let srv = TestServer::start();
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0lena\0\0");
    assert_eq!(c.key_or_none(), None);

    // A weak password is refused with the estimate's advice, nothing is created.
    let weak = failed(&srv.admin(&["user", "add", "lena", "--password-stdin"], b"lena1234\n"));
    assert!(
        weak.contains("too weak") && weak.contains("--allow-weak-password"),
        "{weak}"
    );
    assert!(!ok(&srv.admin(&["user", "list"], b"")).contains("lena"));
    let out = ok(&srv.admin(
        &["user", "add", "lena", "--password-stdin"],
        b"correct horse \n",
    ));
    // The override, for tests and imports of known passwords.
    ok(&srv.admin(
        &[
            "user",
            "add",
            "weak",
            "--password-stdin",
            "--allow-weak-password",
        ],
        b"lena1234\n",
    ));
    let hex_key = out.split_whitespace().nth(2).unwrap().to_owned();
    // Seen by the running server at once.
    c.send(b"KEYREQUEST\0lena\0\0");
    let key = c.key_or_none().expect("lena's key");
    assert_eq!(hex::encode(key), hex_key);
    // `user add` gave lena an OPAQUE login: plain LOGIN is refused (docs/protocol.md
    // D8), so the stored xzibit is read from the data directory.
    c.send(b"LOGIN\0lena\0");
    assert_eq!(c.login_reply(), None);
    assert!(srv.data.join("users/lena/opaque").exists());
    let xz = Xzibit::parse(&std::fs::read(srv.data.join("users/lena/xzibit")).unwrap()).unwrap();
    assert_eq!(xz.version(), 2);
    // Only the final newline is stripped from the password.
    let kp = xz.open(b"correct horse ").unwrap();
    assert_eq!(kp.public().as_bytes(), &key);

    // Duplicate, hostile names, empty password.
    assert!(
        failed(&srv.admin(
            &["user", "add", "lena", "--password-stdin"],
            b"tulip marble quarry 42\n"
        ))
        .contains("exists")
    );
    for bad in ["../x", "a/b", ".."] {
        failed(&srv.admin(&["user", "add", bad, "--password-stdin"], b"pw\n"));
    }
    assert!(!srv.dir.path().join("x").exists());
    failed(&srv.admin(&["user", "add", "mo", "--password-stdin"], b"\n"));

    srv.add_user("abe", "pw");
    let list = ok(&srv.admin(&["user", "list", "--json"], b""));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["abe", "lena", "weak"]);
    assert_eq!(v[1]["public_key"].as_str().unwrap(), hex_key);
    assert_eq!(v[1]["xzibit_version"].as_u64(), Some(2));
    assert!(ok(&srv.admin(&["user", "list"], b"")).contains("lena"));

    ok(&srv.admin(&["user", "remove", "lena"], b""));
    c.send(b"KEYREQUEST\0lena\0\0LOGIN\0lena\0");
    assert_eq!(c.key_or_none(), None);
    assert_eq!(c.login_reply(), None);
    failed(&srv.admin(&["user", "remove", "lena"], b""));
}

/// On both backends.
#[test]
fn import_2016_adduser_vectors() {
    for srv in on_both_backends("import_2016_adduser_vectors") {
        let text = std::fs::read_to_string(vectors_dir().join("xzibit.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vectors: Vec<&serde_json::Value> = json["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("public_key_file").is_some())
            .collect();
        assert!(vectors.len() >= 3, "expected the adduser vectors");
        let mut c = srv.client();
        for v in vectors {
            let name = v["username"].as_str().unwrap();
            let xz = hex::decode(v["xzibit"].as_str().unwrap()).unwrap();
            let pk = hex::decode(v["public_key_file"].as_str().unwrap()).unwrap();
            let pk_file = srv.dir.path().join(format!("{name}.public.key"));
            let xz_file = srv.dir.path().join(format!("{name}.xzibit"));
            std::fs::write(&pk_file, &pk).unwrap();
            std::fs::write(&xz_file, &xz).unwrap();
            ok(&adm(
                &srv,
                &[
                    "user",
                    "import",
                    name,
                    "--public-key",
                    pk_file.to_str().unwrap(),
                    "--xzibit",
                    xz_file.to_str().unwrap(),
                ],
                b"",
            ));
            let login = format!("LOGIN\0{name}\0KEYREQUEST\0{name}\0\0");
            c.send(login.as_bytes());
            let got = c.login_reply().expect("xzibit");
            assert_eq!(got, xz, "{name}: LOGIN returns exactly the imported xzibit");
            assert_eq!(c.key_or_none().unwrap().to_vec(), pk);
            let pw = hex::decode(v["password_hex"].as_str().unwrap()).unwrap();
            let kp: KeyPair = Xzibit::parse(&got).unwrap().open(&pw).unwrap();
            assert_eq!(kp.public(), PublicKey::from_bytes(&pk).unwrap());
        }
        // A broken xzibit or key file is refused.
        let bad = srv.dir.path().join("bad");
        std::fs::write(&bad, [0u8; 100]).unwrap();
        let good_pk = srv.dir.path().join("carol.public.key");
        let e = failed(&adm(
            &srv,
            &[
                "user",
                "import",
                "zed",
                "--public-key",
                good_pk.to_str().unwrap(),
                "--xzibit",
                bad.to_str().unwrap(),
            ],
            b"",
        ));
        assert!(e.contains("xzibit"), "{e}");
        let e = failed(&adm(
            &srv,
            &[
                "user",
                "import",
                "zed",
                "--public-key",
                bad.to_str().unwrap(),
                "--xzibit",
                bad.to_str().unwrap(),
            ],
            b"",
        ));
        assert!(e.contains("32"), "{e}");
    }
}

/// On both backends.
#[test]
fn key_show_and_postmaster_mailbox() {
    for srv in on_both_backends("key_show_and_postmaster_mailbox") {
        // The same fingerprint `cmtp` shows when it pins the server, and the hex.
        let shown = ok(&adm(&srv, &["key", "show"], b""));
        assert_eq!(
            shown,
            format!(
                "fingerprint: {}\npublic key:  {}\n",
                srv.key.fingerprint(),
                srv.key.to_hex()
            )
        );
        let json: serde_json::Value =
            serde_json::from_str(&ok(&adm(&srv, &["key", "show", "--json"], b""))).unwrap();
        assert_eq!(json["fingerprint"], srv.key.fingerprint());
        assert_eq!(json["public_key"], srv.key.to_hex());
        // Never creates a key beside (or instead of) the server's.
        let empty = tempfile::tempdir().unwrap();
        let out = admin(&empty.path().join("none"), &["key", "show"], b"");
        assert!(!out.success());
        assert!(!empty.path().join("none/server.key").exists());

        let mut c = srv.client();
        // A sealed (version 1) internal body to the server, and a plaintext one.
        let body = cmtp_proto::InternalBody {
            timestamp: 1_700_000_000,
            subject: "Bounce".into(),
            reply_to: String::new(),
            cc: vec![],
            text: "the sealed text".into(),
        }
        .to_bytes()
        .unwrap();
        let sealed = cmtp_crypto::seal(&body, &srv.key).unwrap();
        let att = cmtp_crypto::seal(b"notes.txt\0data", &srv.key).unwrap();
        let m1 = message(
            1,
            ("", ""),
            ("nina", "x.example"),
            b"hop\0",
            &sealed,
            &[&att],
        );
        let m2 = message(0, ("", ""), ("otto", "y.example"), b"", b"plain words", &[]);
        assert_eq!(c.mail(&m1), "SUCCESS");
        assert_eq!(c.mail(&m2), "SUCCESS");

        let list = ok(&adm(&srv, &["mailbox", "list"], b""));
        assert!(list.contains("nina@x.example") && list.contains("otto@y.example"));
        // Aligned columns, a header, a total with a correct plural and a human size.
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 4, "{list}");
        assert!(
            lines[0].starts_with("ID ") && lines[0].contains("RECEIVED"),
            "{list}"
        );
        let col = |l: &str| l.find(" v").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]), "columns align:\n{list}");
        assert!(lines[3].starts_with("2 messages, "), "{list}");
        assert!(
            lines[1].contains("1 attachment ") && lines[2].contains("0 attachments"),
            "{list}"
        );
        let json = adm(&srv, &["mailbox", "list", "--json"], b"").json();
        let ids: Vec<String> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 2, "{json}");
        assert_eq!(json[0]["from"], "nina@x.example");
        assert_eq!(json[0]["attachments"], 1);
        assert!(json[0]["size"].as_u64().unwrap() > 0);
        let show = ok(&adm(&srv, &["mailbox", "show", &ids[0]], b""));
        assert!(show.contains("subject: Bounce"), "{show}");
        assert!(show.contains("the sealed text"), "{show}");
        assert!(show.contains("notes.txt"), "{show}");
        assert!(show.contains("log: hop"), "{show}");
        let show = ok(&adm(&srv, &["mailbox", "show", &ids[1]], b""));
        assert!(show.contains("plain words"), "{show}");
        failed(&adm(&srv, &["mailbox", "show", "999999"], b""));

        let stats = ok(&adm(&srv, &["mailbox", "stats", "--json"], b""));
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(v["messages"].as_u64(), Some(2));
        assert_eq!(v["mailboxes"][""]["messages"].as_u64(), Some(2));
        assert!(ok(&adm(&srv, &["mailbox", "stats"], b"")).contains("2 messages"));
        assert!(ok(&adm(&srv, &["mailbox", "list", "nobody"], b"")).contains("no messages"));
        failed(&adm(&srv, &["mailbox", "list", "../x"], b""));
    }
}

#[test]
fn help_config_and_fresh_start_defaults() {
    let d = tempfile::tempdir().unwrap();
    let help = ok(&admin(d.path(), &["--help"], b""));
    assert!(
        help.contains("EXAMPLES") && help.contains("user add"),
        "{help}"
    );
    let cfg = ok(&admin(d.path(), &["config", "default"], b""));
    let parsed: cmtpd::Config = toml::from_str(&cfg).unwrap();
    assert_eq!(parsed.limits.max_message_size, 64 << 20);
    // Unknown keys in a config file are an error.
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "listen_adress = [\"127.0.0.1:1\"]\n").unwrap();
    let e = failed(&admin(
        d.path(),
        &["--config", bad.to_str().unwrap(), "key", "show"],
        b"",
    ));
    assert!(e.contains("listen_adress"), "{e}");

    // No config, no --data-dir: ./cmtp-data in the working directory is created.
    let ready = d.path().join("ready");
    let mut child = std::process::Command::new(cmtpd_bin())
        .current_dir(d.path())
        .env_remove("CMTPD_DATA_DIR")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--ready-file",
        ])
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    wait_until("ready file", std::time::Duration::from_secs(30), || {
        ready.exists()
    });
    let key = server_public_key(&d.path().join("cmtp-data"));
    let text = std::fs::read_to_string(&ready).unwrap();
    assert!(!text.contains("metrics"));
    let addr = text
        .lines()
        .next()
        .unwrap()
        .split_once(' ')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut c = Client::connect(addr, key);
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// `mailbox list/show` print what senders wrote: escape sequences (window title, screen
/// clear, OSC 52 clipboard write) and bidi overrides must not reach the operator's
/// terminal (a defect found from outside: they were printed raw). On both backends.
#[test]
fn mailbox_list_and_show_never_pass_terminal_controls() {
    for srv in on_both_backends("mailbox_list_and_show_never_pass_terminal_controls") {
        let mut c = srv.client();
        let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{9b}31m";
        let m = message(
            0,
            ("", ""),
            ("gpj.exe\u{202e}", "x.example"),
            format!("via {hostile}\0").as_bytes(),
            format!("text {hostile}\r\nfake line").as_bytes(),
            &[],
        );
        assert_eq!(c.mail(&m), "SUCCESS");
        let list = ok(&adm(&srv, &["mailbox", "list"], b""));
        let id = adm(&srv, &["mailbox", "list", "--json"], b"").json()[0]["id"]
            .as_u64()
            .unwrap()
            .to_string();
        let show = ok(&adm(&srv, &["mailbox", "show", &id], b""));
        for out in [&list, &show] {
            assert!(
                !out.chars()
                    .any(|ch| matches!(ch, '\u{1b}' | '\u{7}' | '\u{9b}' | '\r' | '\u{202e}')),
                "{out:?}"
            );
        }
        assert!(list.contains("gpj.exe"), "{list}");
        assert!(show.contains("fake line"), "{show}");
    }
}
