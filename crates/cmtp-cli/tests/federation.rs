//! `cmtp send` to another domain, against the real `cmtpd` over loopback: a recipient
//! outside the profile's domain goes by SUBMIT, which is signed with the user's key,
//! so the password is needed (docs/client.md, docs/protocol.md D5). What the server
//! then does with the submission (relay) is the server's tests' business; these tests
//! pin what happens on the client's side of it.

use cmtp_testkit::*;
use std::path::Path;

const WRONG_PASSWORD: i32 = 5;

/// Logs in without --remember (testkit's [`cmtp_testkit::login`]).
fn login(home: &Path, profile: &Path, addr: &str, server: &str, pw: &str) {
    cmtp_testkit::login(home, profile, addr, server, pw, false);
}

/// Bob's messages as (from, text), read with his remembered key.
fn bobs_texts(home: &Path, pb: &Path) -> Vec<String> {
    let inbox = cmtp(home, pb, &["inbox", "--json"], b"").json();
    inbox
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let id = m["id"].as_u64().unwrap().to_string();
            let r = cmtp(home, pb, &["read", &id, "--json"], b"").json();
            r["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_foreign_recipient_needs_the_password_and_it_is_the_first_line() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "alice secret");
    add_user(&data, "bob", "bob secret");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let (pa, pb) = (home.join("pa"), home.join("pb"));
    login(home, &pa, "alice@localhost", &server, "alice secret");
    let o = cmtp(
        home,
        &pb,
        &[
            "login",
            "bob@localhost",
            "--server",
            &server,
            "--password-stdin",
            "--remember",
        ],
        b"bob secret\n",
    );
    o.ok();

    let send = |stdin: &[u8], to: &[&str]| {
        let mut args = vec!["send", "--password-stdin", "--json", "--subject", "s"];
        for a in to {
            args.extend(["--to", a]);
        }
        cmtp(home, &pa, &args, stdin)
    };

    // Local recipients only: no password; all of standard input is the text.
    let o = send(b"line one\nline two\n", &["bob@localhost"]);
    assert_eq!(o.json()[0]["status"], "delivered", "{o:?}");
    assert_eq!(bobs_texts(home, &pb), ["line one\nline two\n"]);

    // With a recipient of another domain the first line is the password; a wrong one
    // fails the whole send before anything is sent, local recipients included.
    let o = send(
        b"not alice's\nhello\n",
        &["bob@localhost", "carol@other.example"],
    );
    assert_eq!(o.code, WRONG_PASSWORD, "{o:?}");
    assert!(o.stderr.contains("wrong password"), "{o:?}");
    assert_eq!(bobs_texts(home, &pb).len(), 1, "nothing more was sent");

    // The right password: the local copy is delivered by MAIL with the rest as text.
    // (The foreign copy's fate depends on the server's relay, not asserted here.)
    let o = send(
        b"alice secret\nhello\n",
        &["bob@localhost", "carol@other.example"],
    );
    let v: serde_json::Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    assert_eq!(v[0]["recipient"], "bob@localhost", "{o:?}");
    assert_eq!(v[0]["status"], "delivered", "{o:?}");
    assert_eq!(v[1]["recipient"], "carol@other.example", "{o:?}");
    let texts = bobs_texts(home, &pb);
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[1], "hello\n");
}
