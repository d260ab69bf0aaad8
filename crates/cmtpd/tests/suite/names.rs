//! Names (issue 9, docs/protocol.md §4): domains compared case-insensitively, account
//! names canonical (NFC + lower case) at creation and folded at lookup, accounts stored
//! under older non-canonical names still served, and `postmaster@` (RFC 5321).
//!
//! On the backend of the including target (`BACKEND`). These run admin commands
//! (`user add`, `mailbox list`), so only tests/names.rs (embedded) includes them until the
//! admin commands work on PostgreSQL; then tests/suite_pg.rs includes them too.

use cmtp_crypto::Xzibit;
use cmtp_testkit::*;

use crate::BACKEND;

fn mailbox_count(srv: &TestServer, account: &str) -> usize {
    srv.admin(&["mailbox", "list", account, "--json"], b"")
        .json()
        .as_array()
        .unwrap()
        .len()
}

fn key_of(c: &mut Client, user: &str, domain: &str) -> Option<[u8; 32]> {
    c.send(format!("KEYREQUEST\0{user}\0{domain}\0").as_bytes());
    c.key_or_none()
}

/// `bob@EXAMPLE.NET` is `bob@example.net`; `Alice` is `alice`. Both used to fail: the
/// upper-case domain was taken for a foreign one (relaying denied), the upper-case
/// account for an unknown one.
#[test]
fn domains_and_accounts_are_case_insensitive() {
    let srv = TestServer::start_with(Opts {
        global_args: vec!["--domain".into(), "example.net".into()],
        ..Opts::on(BACKEND)
    });
    let out = srv.admin(
        &["user", "add", "Alice", "--password-stdin"],
        b"tulip marble quarry 42\n",
    );
    assert!(out.ok().starts_with("added alice "), "{out:?}");
    for dup in ["alice", "ALICE", "Alice"] {
        let e = srv.admin(
            &["user", "add", dup, "--password-stdin"],
            b"tulip marble quarry 42\n",
        );
        assert!(e.failed().contains("exists"), "{dup}: {e:?}");
    }
    let mut c = srv.client();
    let k = key_of(&mut c, "alice", "example.net").expect("alice's key");
    assert_eq!(key_of(&mut c, "ALICE", "EXAMPLE.NET"), Some(k));
    assert_eq!(key_of(&mut c, "Alice", "Example.Net"), Some(k));
    // `user add` gave alice an OPAQUE login, so plain LOGIN is refused for her
    // (docs/protocol.md D8); the refusal counted as such shows LOGIN ALICE found alice.
    c.send(b"LOGIN\0ALICE\0");
    assert_eq!(c.login_reply(), None);
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"legacy_login_refused\"}"),
        1
    );
    let xz = srv.with_users(|u| u.xzibit("alice")).unwrap().unwrap();
    Xzibit::parse(&xz)
        .unwrap()
        .open(b"tulip marble quarry 42")
        .unwrap();

    for (to, domain) in [
        ("alice", "example.net"),
        ("Alice", "EXAMPLE.NET"),
        ("ALICE", ""),
    ] {
        let m = message(0, (to, domain), ("x", "x.example"), b"", b"hi", &[]);
        assert_eq!(c.mail(&m), "SUCCESS", "{to}@{domain}");
    }
    assert_eq!(mailbox_count(&srv, "alice"), 3);
    assert_eq!(mailbox_count(&srv, "ALICE"), 3);
    assert!(
        srv.admin(&["user", "remove", "ALICE"], b"")
            .ok()
            .contains("removed alice")
    );
}

/// Whitespace, invisible characters and mixed-script look-alikes are refused at creation,
/// with the reason.
#[test]
fn new_account_names_refuse_blanks_and_invisibles() {
    let srv = TestServer::on(BACKEND);
    for (name, why) in [
        ("al ice", "whitespace"),
        ("al\u{00A0}ice", "whitespace"),
        ("al\u{200B}ice", "invisible"),
        ("\u{FEFF}alice", "invisible"),
        ("p\u{0430}ypal", "mixes scripts (Cyrillic, Latin)"),
    ] {
        let out = srv.admin(
            &["user", "add", name, "--password-stdin"],
            b"tulip marble quarry 42\n",
        );
        assert!(out.failed().contains(why), "{name:?}: {out:?}");
    }
    // NFC: a decomposed é and a composed É are one account.
    srv.admin(
        &["user", "add", "Re\u{301}mi", "--password-stdin"],
        b"tulip marble quarry 42\n",
    )
    .ok();
    let e = srv.admin(
        &["user", "add", "RÉMI", "--password-stdin"],
        b"tulip marble quarry 42\n",
    );
    assert!(e.failed().contains("exists"), "{e:?}");
    let list = srv.admin(&["user", "list", "--json"], b"").json();
    assert_eq!(list[0]["name"], "rémi");
}

/// An account stored under a non-canonical name (imported before the rule) keeps
/// working by its exact name, and blocks a new account that folds to it.
#[test]
fn accounts_with_old_non_canonical_names_keep_working() {
    let srv = TestServer::on(BACKEND);
    let kp = srv.add_user("Bob", "pw");
    let mut c = srv.client();
    assert_eq!(key_of(&mut c, "Bob", ""), Some(*kp.public().as_bytes()));
    c.send(b"LOGIN\0Bob\0");
    assert!(c.login_reply().is_some());
    let m = message(0, ("Bob", ""), ("x", "x.example"), b"", b"hi", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(mailbox_count(&srv, "Bob"), 1);
    let e = srv.admin(
        &["user", "add", "bob", "--password-stdin"],
        b"tulip marble quarry 42\n",
    );
    assert!(e.failed().contains("\"Bob\" already exists"), "{e:?}");
    assert!(
        srv.admin(&["user", "remove", "Bob"], b"")
            .ok()
            .contains("removed Bob")
    );
}

/// postmaster@ reaches the operator: the mapped account (its key, its mailbox, readable
/// with its own key), or without a mapping the server's own mailbox and key. It used to
/// be an unknown account (KEYNOTAVAILABLE, DELIVERYFAILURE).
#[test]
fn postmaster_reaches_the_operator() {
    // Unmapped: the server's own key and mailbox.
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    assert_eq!(key_of(&mut c, "postmaster", ""), Some(*srv.key.as_bytes()));
    let m = message(
        0,
        ("postmaster", "localhost"),
        ("x", "x.example"),
        b"",
        b"hi pm",
        &[],
    );
    assert_eq!(c.mail(&m), "SUCCESS");
    let own = srv.admin(&["mailbox", "list", "--json"], b"").json();
    assert_eq!(own.as_array().unwrap().len(), 1, "{own}");
    drop(srv);

    // Mapped to alice: her key and her mailbox, whatever the case of the address.
    let srv = TestServer::start_with(Opts {
        config: "postmaster = \"Alice\"\n".into(),
        ..Opts::on(BACKEND)
    });
    let alice = srv.add_user("alice", "pw");
    let mut c = srv.client();
    assert_eq!(
        key_of(&mut c, "PostMaster", "LOCALHOST"),
        Some(*alice.public().as_bytes())
    );
    let m = message(0, ("postmaster", ""), ("x", "x.example"), b"", b"hi", &[]);
    assert_eq!(c.mail(&m), "SUCCESS");
    assert_eq!(mailbox_count(&srv, "alice"), 1);
    let own = srv.admin(&["mailbox", "list", "--json"], b"").json();
    assert!(own.as_array().unwrap().is_empty(), "{own}");
}

/// The mailbox commands: a request for `ALICE`, signed with the domain in folded form
/// while the operator configured `Example.NET`, reads alice's mailbox. Both used to be
/// AUTHFAILURE (unknown account; signature over another spelling of the domain).
#[test]
fn mailbox_commands_fold_the_account_and_the_signed_domain() {
    use cmtp_proto::{MboxKind, MboxRequest};
    let srv = TestServer::start_with(Opts {
        global_args: vec!["--domain".into(), "Example.NET".into()],
        ..Opts::on(BACKEND)
    });
    let alice = srv.add_user("alice", "pw");
    let mut c = srv.client();
    let m = message(
        0,
        ("alice", "example.net"),
        ("x", "x.example"),
        b"",
        b"hi",
        &[],
    );
    assert_eq!(c.mail(&m), "SUCCESS");
    let now = cmtpd::unix_now();
    for (user, domain) in [("ALICE", "Example.NET"), ("alice", "example.net")] {
        let payload = c
            .mbox(MboxKind::List, MboxRequest::list(user, now), &alice, domain)
            .unwrap_or_else(|e| panic!("{user}@{domain}: {e}"));
        let entries = cmtp_proto::mbox::decode_list(&payload, 100).unwrap();
        assert_eq!(entries.len(), 1, "{user}@{domain}");
    }
    // Singular in the stats line.
    let stats = srv.admin(&["mailbox", "stats"], b"").ok().to_owned();
    assert!(stats.starts_with("1 message, "), "{stats}");
}
