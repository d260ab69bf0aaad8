//! End to end: the real `cmtpd` and `cmtp` binaries over loopback TCP.

use cmtp_testkit::*;
use std::path::Path;

// The documented exit codes (docs/client.md); tests pin them.
const WRONG_PASSWORD: i32 = 5;
const UNKNOWN_USER: i32 = 6;
const KEY_CHANGED: i32 = 7;
const TOO_LARGE: i32 = 8;
const DELIVERY_FAILURE: i32 = 9;
const MAILBOX: i32 = 12;

#[test]
fn mail_with_cc_and_attachments_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "alice secret");
    add_user(&data, "bob", "bob secret");
    add_user(&data, "carol", "carol secret");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let (pa, pb, pc) = (home.join("pa"), home.join("pb"), home.join("pc"));
    login(home, &pa, "alice@localhost", &server, "alice secret", false);
    login(home, &pb, "bob@localhost", &server, "bob secret", true);
    login(home, &pc, "carol@localhost", &server, "carol secret", false);

    // No secret stored without --remember; mode 0600 with it.
    assert!(!pa.join("secret.key").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(pb.join("secret.key")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    let who = cmtp(home, &pa, &["whoami", "--json"], b"").json();
    assert_eq!(who["address"], "alice@localhost");
    assert_eq!(who["public_key"].as_str().unwrap().len(), 64);

    let files = home.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let big = noise(5 * 1024 * 1024 + 17, 7);
    let small = b"tiny \0 binary\n".to_vec();
    std::fs::write(files.join("big.bin"), &big).unwrap();
    std::fs::write(files.join("note.txt"), &small).unwrap();
    let big_arg = files.join("big.bin");
    let note_arg = files.join("note.txt");
    let text = "Hello Bob,\nsealed just for you.\n";
    let sent = cmtp(
        home,
        &pa,
        &[
            "send",
            "--to",
            "bob@localhost",
            "--cc",
            "carol@localhost",
            "--subject",
            "Quarterly ✓",
            "--reply-to",
            "alice@localhost",
            "--attach",
            big_arg.to_str().unwrap(),
            "--attach",
            note_arg.to_str().unwrap(),
            "--json",
        ],
        text.as_bytes(),
    )
    .json();
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 2);
    for r in sent {
        assert_eq!(r["status"], "delivered", "{r}");
    }
    assert_eq!(sent[1]["recipient"], "carol@localhost");
    assert_eq!(sent[1]["cc"], true);

    // Bob's inbox (remembered key: no password).
    let inbox = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    let items = inbox.as_array().unwrap();
    assert_eq!(items.len(), 1, "{inbox}");
    let it = &items[0];
    assert_eq!(it["from"], "alice@localhost");
    assert_eq!(it["subject"], "Quarterly ✓");
    assert_eq!(it["attachments"], 2);
    assert!(it["size"].as_u64().unwrap() > big.len() as u64);
    assert!(it["timestamp"].as_u64().unwrap() > 1_600_000_000);
    let id = it["id"].as_u64().unwrap().to_string();

    let out = home.join("out-bob");
    let m = cmtp(
        home,
        &pb,
        &[
            "read",
            &id,
            "--json",
            "--save-attachments",
            out.to_str().unwrap(),
        ],
        b"",
    )
    .json();
    assert_eq!(m["from"], "alice@localhost");
    assert_eq!(m["to"], "bob@localhost");
    assert_eq!(m["subject"], "Quarterly ✓");
    assert_eq!(m["reply_to"], "alice@localhost");
    assert_eq!(m["cc"], serde_json::json!(["carol@localhost"]));
    assert_eq!(m["text"], text);
    let atts = m["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0]["name"], "big.bin");
    assert_eq!(atts[0]["size"], big.len());
    assert_eq!(atts[1]["name"], "note.txt");
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), big);
    assert_eq!(std::fs::read(out.join("note.txt")).unwrap(), small);

    // Human output too.
    let human = cmtp(home, &pb, &["read", &id], b"");
    let h = human.ok();
    assert!(h.contains("From:     alice@localhost"), "{h}");
    assert!(h.contains("Cc:       carol@localhost"), "{h}");
    assert!(h.contains("Subject:  Quarterly ✓"), "{h}");
    assert!(h.contains("sealed just for you."), "{h}");

    // Carol (no remembered key): password from the environment.
    let mut c = cmtp_cmd(home, &pc);
    c.env("CMTP_PASSWORD", "carol secret")
        .args(["inbox", "--json"]);
    let ci = run(c, b"").json();
    assert_eq!(ci.as_array().unwrap().len(), 1);
    assert_eq!(ci[0]["subject"], "Quarterly ✓");
    // Without a password source and no terminal: a clear error, not a hang.
    let np = cmtp(home, &pc, &["inbox"], b"");
    assert_ne!(np.code, 0);
    assert!(np.stderr.contains("password"), "{np:?}");
    // Wrong password on an unlocked command.
    let wp = cmtp(home, &pc, &["inbox", "--password-stdin"], b"nope\n");
    assert_eq!(wp.code, WRONG_PASSWORD, "{wp:?}");

    // Delete; then it is gone.
    assert!(
        cmtp(home, &pb, &["delete", &id], b"")
            .ok()
            .contains("deleted")
    );
    let inbox = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    assert_eq!(inbox.as_array().unwrap().len(), 0);
    let gone = cmtp(home, &pb, &["read", &id], b"");
    assert_eq!(gone.code, MAILBOX, "{gone:?}");
}

#[test]
fn wrong_password_and_unknown_user() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "right");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let p = home.join("p");
    let o = cmtp(
        home,
        &p,
        &[
            "login",
            "alice@localhost",
            "--server",
            &server,
            "--password-stdin",
        ],
        b"wrong\n",
    );
    assert_eq!(o.code, WRONG_PASSWORD, "{o:?}");
    assert!(o.stderr.contains("wrong password"), "{o:?}");
    let o = cmtp(
        home,
        &p,
        &[
            "login",
            "nobody@localhost",
            "--server",
            &server,
            "--password-stdin",
        ],
        b"x\n",
    );
    assert_eq!(o.code, UNKNOWN_USER, "{o:?}");
    // Sending to an unknown user: a per-recipient failure line and exit code.
    login(home, &p, "alice@localhost", &server, "right", true);
    let o = cmtp(
        home,
        &p,
        &[
            "send",
            "--to",
            "nobody@localhost",
            "--to",
            "alice@localhost",
        ],
        b"hi",
    );
    assert_eq!(o.code, UNKNOWN_USER, "{o:?}");
    assert!(o.stdout.contains("FAILED     nobody@localhost"), "{o:?}");
    assert!(o.stdout.contains("delivered  alice@localhost"), "{o:?}");
    // A foreign domain: the server refuses to relay → DELIVERYFAILURE... or no key.
    let o = cmtp(home, &p, &["send", "--to", "x@elsewhere.invalid"], b"hi");
    assert!(
        o.code == DELIVERY_FAILURE || o.code == UNKNOWN_USER,
        "{o:?}"
    );
}

#[test]
fn users_imported_from_2016_vectors_log_in() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    // Only `serve` and `init` create a data directory.
    admin(&data, &["init"], b"").ok();
    let text = std::fs::read_to_string(vectors_dir().join("xzibit.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut imported = Vec::new();
    for x in v["vectors"].as_array().unwrap() {
        let Some(pk) = x["public_key_file"].as_str() else {
            continue;
        };
        let name = x["username"].as_str().unwrap().to_owned();
        let pw = x["password"].as_str().unwrap().to_owned();
        let dir = home.join(format!("import-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("public.key"), hex::decode(pk).unwrap()).unwrap();
        std::fs::write(
            dir.join(format!("{name}.xzibit")),
            hex::decode(x["xzibit"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        admin(
            &data,
            &[
                "user",
                "import",
                &name,
                "--public-key",
                dir.join("public.key").to_str().unwrap(),
                "--xzibit",
                dir.join(format!("{name}.xzibit")).to_str().unwrap(),
            ],
            b"",
        )
        .ok();
        imported.push((name, pw, x["pk"].as_str().unwrap().to_owned()));
    }
    assert!(imported.len() >= 3, "expected the three adduser vectors");
    add_user(&data, "zed", "zed pw");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    for (name, pw, pk) in &imported {
        let p = home.join(format!("p-{name}"));
        login(home, &p, &format!("{name}@localhost"), &server, pw, false);
        let who = cmtp(home, &p, &["whoami", "--json"], b"").json();
        assert_eq!(who["public_key"], pk.as_str());
    }
    // Mail to an imported (v1 xzibit) user, read back with its password.
    let pz = home.join("pz");
    login(home, &pz, "zed@localhost", &server, "zed pw", true);
    let (name, pw, _) = &imported[0];
    cmtp(
        home,
        &pz,
        &[
            "send",
            "--to",
            &format!("{name}@localhost"),
            "--subject",
            "from 2026",
        ],
        b"hello 2016 account",
    )
    .ok();
    let mut c = cmtp_cmd(home, &home.join(format!("p-{name}")));
    c.env("CMTP_PASSWORD", pw).args(["inbox", "--json"]);
    let inbox = run(c, b"").json();
    assert_eq!(inbox[0]["subject"], "from 2026");
    assert_eq!(inbox[0]["from"], "zed@localhost");
}

#[test]
fn changed_server_key_is_a_loud_error_until_trusted() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let d1 = home.join("data1");
    let d2 = home.join("data2");
    add_user(&d1, "alice", "pw");
    add_user(&d2, "alice", "pw");
    let mut srv = TestServer::start_in(&d1);
    let addr = srv.server_arg();
    let p = home.join("p");
    login(home, &p, "alice@localhost", &addr, "pw", true);
    let old = cmtp(home, &p, &["server", "show", "--json"], b"").json();
    srv.kill();
    // Another server (another key) on the same address.
    let srv2 = TestServer::start_with(Opts {
        data: Some(d2.clone()),
        listen: Some(srv.addr),
        ..Opts::default()
    });
    assert_eq!(srv2.server_arg(), addr);
    let o = cmtp(home, &p, &["inbox"], b"");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    let new_fp = cmtpd_key_fingerprint(home, &d2);
    assert!(o.stderr.contains("HAS CHANGED"), "{o:?}");
    assert!(
        o.stderr
            .contains(old["server_fingerprint"].as_str().unwrap()),
        "{o:?}"
    );
    assert!(o.stderr.contains(&new_fp), "{o:?}");
    assert!(o.stderr.contains(" server trust --fingerprint"), "{o:?}");
    // Logging in again does not silently re-pin either.
    let o = cmtp(
        home,
        &p,
        &[
            "login",
            "alice@localhost",
            "--server",
            &addr,
            "--password-stdin",
        ],
        b"pw\n",
    );
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    // A wrong fingerprint changes nothing.
    let o = cmtp(
        home,
        &p,
        &["server", "trust", "--fingerprint", "0000 1111"],
        b"",
    );
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    // The right one is accepted, and the new server is usable.
    cmtp(
        home,
        &p,
        &["server", "trust", "--fingerprint", &new_fp],
        b"",
    )
    .ok();
    login(home, &p, "alice@localhost", &addr, "pw", true);
    let inbox = cmtp(home, &p, &["inbox", "--json"], b"").json();
    assert_eq!(inbox.as_array().unwrap().len(), 0);
}

/// The fingerprint of a data dir's server key, computed the way `cmtp` shows it.
fn cmtpd_key_fingerprint(_home: &Path, data: &Path) -> String {
    let shown = admin(data, &["key", "show", "--json"], b"").json();
    let key = cmtp_crypto::PublicKey::from_hex(shown["public_key"].as_str().unwrap()).unwrap();
    // What the operator reads is what the client shows.
    assert_eq!(shown["fingerprint"], key.fingerprint());
    key.fingerprint()
}

#[test]
fn changed_user_key_refuses_to_send_until_accepted() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "a");
    add_user(&data, "bob", "b");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let p = home.join("p");
    login(home, &p, "alice@localhost", &server, "a", true);
    let k = cmtp(home, &p, &["key", "bob@localhost", "--json"], b"").json();
    assert_eq!(k["status"], "new");
    let k2 = cmtp(home, &p, &["key", "bob@localhost", "--json"], b"").json();
    assert_eq!(k2["status"], "pinned");
    // Bob's account is recreated with a new key.
    admin(&data, &["user", "remove", "bob"], b"").ok();
    add_user(&data, "bob", "b2");
    let o = cmtp(home, &p, &["key", "bob@localhost"], b"");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    assert!(o.stderr.contains("HAS CHANGED"), "{o:?}");
    assert!(o.stderr.contains(" key bob@localhost --accept"), "{o:?}");
    let o = cmtp(home, &p, &["send", "--to", "bob@localhost"], b"hi");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    let k3 = cmtp(
        home,
        &p,
        &["key", "bob@localhost", "--accept", "--json"],
        b"",
    )
    .json();
    assert_eq!(k3["status"], "accepted");
    assert_ne!(k3["key"], k["key"]);
    cmtp(home, &p, &["send", "--to", "bob@localhost"], b"hi").ok();
}

#[test]
fn message_over_the_server_limit_is_too_large() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "a");
    let srv = TestServer::start_with(Opts {
        data: Some(data.clone()),
        config: "[limits]\nmax_message_size = 65536\n".into(),
        ..Opts::default()
    });
    let p = home.join("p");
    login(home, &p, "alice@localhost", &srv.server_arg(), "a", true);
    let f = home.join("big.bin");
    std::fs::write(&f, noise(2 * 1024 * 1024, 3)).unwrap();
    let o = cmtp(
        home,
        &p,
        &[
            "send",
            "--to",
            "alice@localhost",
            "--attach",
            f.to_str().unwrap(),
        ],
        b"too big",
    );
    assert_eq!(o.code, TOO_LARGE, "{o:?}");
    assert!(o.stdout.contains("too large"), "{o:?}");
    // The local limit refuses before anything is sent.
    let o = cmtp(
        home,
        &p,
        &[
            "send",
            "--to",
            "alice@localhost",
            "--max-size",
            "1000",
            "--attach",
            f.to_str().unwrap(),
        ],
        b"x",
    );
    assert_eq!(o.code, TOO_LARGE, "{o:?}");
    assert!(o.stderr.contains("over the limit of 1000 bytes"), "{o:?}");
    // The server is still fine for a small one.
    cmtp(home, &p, &["send", "--to", "alice@localhost"], b"small").ok();
}

/// Messages the 2016 reference server actually stored (`public-message-refstored-M1/M2`),
/// replayed byte for byte to cmtpd, are read by `cmtp`: M1's bare text as a legacy body,
/// M2's internal body with its subject and reply-to.
#[test]
fn messages_stored_by_the_2016_server_are_readable() {
    use std::io::{BufRead, BufReader, Read, Write};
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    let text = std::fs::read_to_string(vectors_dir().join("message.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vecs = v["vectors"].as_array().unwrap();
    let m1 = vecs
        .iter()
        .find(|m| m["id"] == "public-message-refstored-M1")
        .unwrap();
    let m2 = vecs
        .iter()
        .find(|m| m["id"] == "public-message-refstored-M2")
        .unwrap();
    let sk = hex::decode(m1["recipient_ed25519_sk"].as_str().unwrap()).unwrap();
    let bob = cmtp_crypto::KeyPair::from_secret_bytes(&sk).unwrap();
    // Give bob's 2016 key pair an xzibit (v1, as cmtp_adduser made them) and import it.
    let xz = cmtp_crypto::Xzibit::create_v1(&bob, b"bob 2016").unwrap();
    std::fs::write(home.join("public.key"), bob.public().as_bytes()).unwrap();
    std::fs::write(home.join("bob.xzibit"), xz.as_bytes()).unwrap();
    let dom = ["--domain", "hawaii.edu"];
    // Only `serve` and `init` create a data directory.
    admin(&data, &["init"], b"").ok();
    let o = admin(
        &data,
        &[
            "--domain",
            "hawaii.edu",
            "user",
            "import",
            "bob",
            "--public-key",
            home.join("public.key").to_str().unwrap(),
            "--xzibit",
            home.join("bob.xzibit").to_str().unwrap(),
        ],
        b"",
    );
    o.ok();
    let srv = TestServer::start_with(Opts {
        data: Some(data.clone()),
        global_args: dom.map(String::from).to_vec(),
        ..Opts::default()
    });
    // Replay: MAIL + the stored message (a CMTP/1 server reads no nonce).
    let s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut greeting = Vec::new();
    r.read_until(b'\n', &mut greeting).unwrap();
    for m in [m1, m2] {
        w.write_all(b"MAIL\0").unwrap();
        w.write_all(&hex::decode(m["message"].as_str().unwrap()).unwrap())
            .unwrap();
        let mut reply = [0u8; 8 + 64 + 1];
        r.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..8], b"SUCCESS\0");
    }
    let p = home.join("p");
    login(
        home,
        &p,
        "bob@hawaii.edu",
        &srv.server_arg(),
        "bob 2016",
        true,
    );
    let inbox = cmtp(home, &p, &["inbox", "--json"], b"").json();
    let items = inbox.as_array().unwrap();
    assert_eq!(items.len(), 2, "{inbox}");
    assert_eq!(items[0]["legacy"], true);
    assert_eq!(items[0]["subject"], "Hello Bob, this is Alice over CMTP.");
    assert_eq!(items[0]["from"], "alice@hawaii.edu");
    assert_eq!(items[1]["subject"], "Test subject");
    let id1 = items[0]["id"].as_u64().unwrap().to_string();
    let id2 = items[1]["id"].as_u64().unwrap().to_string();
    let r1 = cmtp(home, &p, &["read", &id1, "--json"], b"").json();
    assert_eq!(r1["legacy"], true);
    assert_eq!(r1["from"], "alice@hawaii.edu");
    assert_eq!(r1["text"], "Hello Bob, this is Alice over CMTP.\n");
    let r2 = cmtp(home, &p, &["read", &id2, "--json"], b"").json();
    assert_eq!(r2["legacy"], false);
    assert_eq!(r2["reply_to"], "alice@hawaii.edu");
    let plain = hex::decode(m2["plaintext"].as_str().unwrap()).unwrap();
    let ts = u32::from_be_bytes(plain[..4].try_into().unwrap());
    assert_eq!(r2["timestamp"], ts);
    assert!(r2["text"].as_str().unwrap().starts_with("Second message"));
    let human = cmtp(home, &p, &["read", &id1], b"");
    assert!(human.ok().contains("Hello Bob, this is Alice over CMTP."));
}

#[test]
fn profile_folder_comes_from_flag_env_or_config_dir() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "pw");
    let srv = TestServer::start_in(&data);
    let base = || {
        let mut c = std::process::Command::new(cmtp_bin());
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("CMTP_TIMEOUT", "20");
        c
    };
    // Nothing yet: a clear "log in first" (exit 13).
    let mut c = base();
    c.arg("whoami");
    let o = run(c, b"");
    assert_eq!(o.code, 13, "{o:?}");
    assert!(o.stderr.contains("cmtp login"), "{o:?}");
    // Default: the platform config folder ($HOME/.config/cmtp here).
    let mut c = base();
    c.args([
        "login",
        "alice@localhost",
        "--server",
        &srv.server_arg(),
        "--password-stdin",
    ]);
    run(c, b"pw\n").ok();
    assert!(home.join(".config/cmtp/profile.toml").exists());
    // CMTP_HOME wins over the default, --profile over CMTP_HOME.
    let env_home = home.join("env-profile");
    let mut c = base();
    c.env("CMTP_HOME", &env_home).args([
        "login",
        "alice@localhost",
        "--server",
        &srv.server_arg(),
        "--password-stdin",
    ]);
    run(c, b"pw\n").ok();
    assert!(env_home.join("profile.toml").exists());
    let mut c = base();
    c.env("CMTP_HOME", home.join("nowhere"))
        .arg("--profile")
        .arg(&env_home)
        .args(["whoami", "--json"]);
    assert_eq!(run(c, b"").json()["address"], "alice@localhost");
    // The text from a file; the message arrives (checked through inbox).
    let body = home.join("body.txt");
    std::fs::write(&body, "from a file\n").unwrap();
    let mut c = base();
    c.env("CMTP_HOME", &env_home).args([
        "send",
        "--to",
        "alice@localhost",
        "--subject",
        "file body",
        "--body-file",
        body.to_str().unwrap(),
    ]);
    run(c, b"").ok();
    let mut c = base();
    c.env("CMTP_HOME", &env_home)
        .env("CMTP_PASSWORD", "pw")
        .args(["inbox", "--json"]);
    let inbox = run(c, b"").json();
    let id = inbox[0]["id"].as_u64().unwrap().to_string();
    let mut c = base();
    c.env("CMTP_HOME", &env_home)
        .env("CMTP_PASSWORD", "pw")
        .args(["read", &id, "--json"]);
    assert_eq!(run(c, b"").json()["text"], "from a file\n");
}

/// A server with alice and bob, both logged in (bob with --remember): the server and
/// their profile folders.
fn alice_and_bob(home: &Path) -> (TestServer, std::path::PathBuf, std::path::PathBuf) {
    let data = home.join("data");
    add_user(&data, "alice", "alice secret");
    add_user(&data, "bob", "bob secret");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let (pa, pb) = (home.join("pa"), home.join("pb"));
    login(home, &pa, "alice@localhost", &server, "alice secret", false);
    login(home, &pb, "bob@localhost", &server, "bob secret", true);
    (srv, pa, pb)
}

/// What a sender writes (subject, text, attachment names) reaches the terminal without
/// escape sequences or control characters; JSON keeps it exact. Attachments named
/// `.bashrc` are saved without the leading dot.
#[test]
fn sender_controlled_text_cannot_drive_the_terminal() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let (_srv, pa, pb) = alice_and_bob(home);

    let files = home.join("files");
    std::fs::create_dir_all(&files).unwrap();
    let evil_name = "\x1b]0;pwned\x07x\x1b[2J.txt";
    std::fs::write(files.join(evil_name), b"one").unwrap();
    std::fs::write(files.join(".bashrc"), b"two").unwrap();
    let subject = "hi \x1b]0;pwned\x07there\x1b[2J";
    let text = "line1\n\x1b]0;pwned\x07\tline2\x1b[2J\r\x1b[31mred\n";
    cmtp(
        home,
        &pa,
        &[
            "send",
            "--to",
            "bob@localhost",
            "--subject",
            subject,
            "--attach",
            files.join(evil_name).to_str().unwrap(),
            "--attach",
            files.join(".bashrc").to_str().unwrap(),
        ],
        text.as_bytes(),
    )
    .ok();

    let clean = |o: &str| {
        assert!(!o.contains('\x1b'), "ESC printed: {o:?}");
        assert!(!o.contains('\x07'), "BEL printed: {o:?}");
        assert!(!o.contains('\r'), "CR printed: {o:?}");
    };
    let inbox = cmtp(home, &pb, &["inbox"], b"");
    clean(inbox.ok());
    assert!(inbox.stdout.contains("hi there"), "{inbox:?}");
    let items = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    assert_eq!(items[0]["subject"], subject);
    let id = items[0]["id"].as_u64().unwrap().to_string();

    let out = home.join("saved");
    let read = cmtp(
        home,
        &pb,
        &["read", &id, "--save-attachments", out.to_str().unwrap()],
        b"",
    );
    clean(read.ok());
    assert!(read.stdout.contains("Subject:  hi there\n"), "{read:?}");
    // Newlines and tabs of the text stay; the rest is gone or replaced.
    assert!(
        read.stdout.contains("line1\n\tline2\u{fffd}red\n"),
        "{read:?}"
    );
    assert!(read.stdout.contains("Attached: x.txt (3 B)"), "{read:?}");
    assert_eq!(std::fs::read(out.join("bashrc")).unwrap(), b"two");
    assert!(!out.join(".bashrc").exists());

    let m = cmtp(home, &pb, &["read", &id, "--json"], b"").json();
    assert_eq!(m["subject"], subject);
    assert_eq!(m["text"], text);
    assert_eq!(m["attachments"][0]["name"], evil_name);
    assert_eq!(m["attachments"][1]["name"], ".bashrc");
}

/// `inbox --limit N` lists the N newest messages, in ascending id order.
#[test]
fn inbox_limit_keeps_the_newest() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let (_srv, pa, pb) = alice_and_bob(home);
    for s in ["first", "second", "third"] {
        let args = ["send", "--to", "bob@localhost", "--subject", s];
        cmtp(home, &pa, &args, b"text").ok();
    }
    let all = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    let subjects = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(subjects(&all), ["first", "second", "third"]);
    let two = cmtp(home, &pb, &["inbox", "--json", "--limit", "2"], b"").json();
    assert_eq!(subjects(&two), ["second", "third"]);
    assert_eq!(two[0]["id"], all[1]["id"]);
    let one = cmtp(home, &pb, &["inbox", "--limit", "1"], b"");
    assert!(one.ok().contains("third"), "{one:?}");
    assert!(!one.stdout.contains("second"), "{one:?}");
    let zero = cmtp(home, &pb, &["inbox", "--limit", "0"], b"");
    assert_eq!(zero.code, 2, "{zero:?}");
    let help = cmtp(home, &pb, &["inbox", "--help"], b"");
    assert!(help.ok().contains("--limit"), "{help:?}");

    // The library's overall deadline: a passed one is a timeout (nothing listed),
    // and the session recovers for the next call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use cmtp_client::{ClientOptions, ErrorKind, Profile, Session};
        let profile = Profile::open(&pb).unwrap();
        let mut s = Session::open(profile, &ClientOptions::default())
            .await
            .unwrap();
        let e = s
            .inbox_with(2, std::time::Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e:?}");
        let items = s
            .inbox_with(2, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let got: Vec<_> = items.iter().map(|i| i.subject.as_str()).collect();
        assert_eq!(got, ["second", "third"]);
        s.close().await;
    });
}

#[test]
fn a_server_over_its_connection_limit_is_reported_as_a_refusal() {
    use std::io::{Read, Write};
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "a");
    let srv = TestServer::start_with(Opts {
        data: Some(data.clone()),
        // Loopback is exempt from per-address limits by default; this test needs them.
        config: "[limits]\nmax_connections_per_ip = 1\nexempt_networks = []\n".into(),
        ..Opts::default()
    });
    let p = home.join("p");
    login(home, &p, "alice@localhost", &srv.server_arg(), "a", true);

    // Hold the one allowed connection. The login's connection may still be counted for a
    // moment after that process exits, so retry until NOOP is answered SUCCESS.
    let _held = poll(
        "a connection the server accepts",
        std::time::Duration::from_secs(10),
        || {
            let mut s = std::net::TcpStream::connect(srv.server_arg()).ok()?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            s.write_all(b"NOOP\0").ok()?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 256];
            while !buf
                .windows(8)
                .any(|w| w == b"SUCCESS\0" || w == b"FAILURE\0")
            {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.windows(8).any(|w| w == b"SUCCESS\0").then_some(s)
        },
    );

    let o = cmtp(home, &p, &["key", "alice@localhost"], b"");
    assert_ne!(o.code, 0, "{o:?}");
    let said = format!("{}{}", o.stdout, o.stderr);
    assert!(said.contains("refused the connection"), "{o:?}");
    assert!(!said.contains("not a CMTP server"), "{o:?}");
}

/// The kit finds, beside this test executable, exactly the binary cargo built for it.
#[test]
fn testkit_finds_the_cmtp_binary_cargo_built() {
    let built = std::path::PathBuf::from(env!("CARGO_BIN_EXE_cmtp"));
    assert_eq!(
        cmtp_bin().canonicalize().unwrap(),
        built.canonicalize().unwrap()
    );
}

/// `read --save-attachments`: a 300-byte attachment name is shortened (extension kept,
/// within NAME_MAX), a taken name gets a suffix, and an attachment that cannot be saved
/// never hides the message or the other attachments: each is reported once.
#[test]
fn saving_attachments_shortens_names_and_never_stops_half_way() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let (_srv, pa, pb) = alice_and_bob(home);
    // No file system takes a 300-byte name, so the sender is the library.
    let long = format!("{}.pdf", "é".repeat(148));
    assert_eq!(long.len(), 300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use cmtp_client::{Address, Attachment, ClientOptions, Draft, NoProgress, Profile};
        let mut s =
            cmtp_client::Session::open(Profile::open(&pa).unwrap(), &ClientOptions::default())
                .await
                .unwrap();
        let draft = Draft {
            to: vec![Address::parse("bob@localhost").unwrap()],
            subject: "names".into(),
            text: "see attached\n".into(),
            attachments: vec![
                Attachment::new("first.txt", b"one").unwrap(),
                Attachment::new(&long, b"two").unwrap(),
                Attachment::new("report.pdf", b"three").unwrap(),
            ],
            ..Default::default()
        };
        let r = s.send(&draft, &mut NoProgress).await.unwrap();
        assert!(r[0].outcome.is_ok(), "{r:?}");
        // A body that cannot be encoded is said to be one (it used to be reported as
        // an invalid address named after the subject).
        let bad = Draft {
            subject: "a\0b".into(),
            ..draft.clone()
        };
        let e = s.send(&bad, &mut NoProgress).await.unwrap_err();
        assert!(
            matches!(e, cmtp_client::ClientError::InvalidBody(_)),
            "{e:?}"
        );
        assert!(!e.to_string().contains("address"), "{e}");
        s.close().await;
    });
    let items = cmtp(home, &pb, &["inbox", "--json"], b"").json();
    let id = items[0]["id"].as_u64().unwrap().to_string();

    let out = home.join("saved");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.pdf"), b"mine").unwrap();
    let read = cmtp(
        home,
        &pb,
        &["read", &id, "--save-attachments", out.to_str().unwrap()],
        b"",
    );
    let stdout = read.ok();
    assert!(stdout.contains("see attached"), "{read:?}");
    assert_eq!(std::fs::read(out.join("first.txt")).unwrap(), b"one");
    let short: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('é'))
        .collect();
    assert_eq!(short.len(), 1, "{short:?}");
    assert!(
        short[0].len() <= 255 && short[0].ends_with(".pdf"),
        "{short:?}"
    );
    assert_eq!(std::fs::read(out.join(&short[0])).unwrap(), b"two");
    // The file already there is kept; the attachment gets a suffix.
    assert_eq!(std::fs::read(out.join("report.pdf")).unwrap(), b"mine");
    assert_eq!(std::fs::read(out.join("report-1.pdf")).unwrap(), b"three");

    // A folder that cannot be made (a file is in the way): the message is still shown,
    // every attachment is reported once with its reason, and the exit code says so.
    let blocked = home.join("blocked");
    std::fs::write(&blocked, b"a file").unwrap();
    let read = cmtp(
        home,
        &pb,
        &["read", &id, "--save-attachments", blocked.to_str().unwrap()],
        b"",
    );
    assert_eq!(read.code, 1, "{read:?}");
    assert!(read.stdout.contains("see attached"), "{read:?}");
    assert_eq!(read.stdout.matches("NOT SAVED").count(), 3, "{read:?}");
    for n in 1..=3 {
        let line = read
            .stderr
            .lines()
            .find(|l| l.contains(&format!("attachment {n} not saved")))
            .unwrap_or_else(|| panic!("attachment {n} not reported: {read:?}"));
        assert_eq!(line.matches(blocked.to_str().unwrap()).count(), 1, "{line}");
    }
    let m = cmtp(
        home,
        &pb,
        &[
            "read",
            &id,
            "--json",
            "--save-attachments",
            blocked.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(m.code, 1, "{m:?}");
    let m: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
    assert!(m["attachments"][1]["saved_as"].is_null());
    assert!(
        m["attachments"][1]["save_error"]
            .as_str()
            .unwrap()
            .contains("blocked")
    );
}
