//! `cmtp` with the OPAQUE login (docs/protocol.md D8), real `cmtpd` and `cmtp` binaries
//! over loopback TCP: login, the upgrade of a CMTP/1 account, `cmtp password`, and a
//! network attacker stripping the capability (a real proxy rewriting the OHAI answer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmtp_testkit::*;

const WRONG_PASSWORD: i32 = 5;

fn profile_says_opaque(profile: &Path) -> bool {
    std::fs::read_to_string(profile.join("profile.toml"))
        .unwrap()
        .lines()
        .any(|l| l.trim() == "opaque = true")
}

fn commands(srv: &TestServer, word: &str) -> i64 {
    srv.metric(&format!("cmtpd_commands_total{{command=\"{word}\"}}"))
}

#[test]
fn login_uses_opaque_and_the_profile_pins_it() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "alice secret");
    let srv = TestServer::start_in(&data);
    let pa = home.join("pa");
    login(
        home,
        &pa,
        "alice@localhost",
        &srv.server_arg(),
        "alice secret",
        false,
    );
    assert!(profile_says_opaque(&pa));
    assert_eq!(commands(&srv, "OPAQUE2"), 1);
    assert_eq!(commands(&srv, "LOGIN"), 0, "no xzibit asked in the clear");
    // Unlocking for the mailbox goes the same way.
    let inbox = cmtp(home, &pa, &["inbox", "--password-stdin"], b"alice secret\n");
    inbox.ok();
    assert_eq!(commands(&srv, "OPAQUE2"), 2);
    assert_eq!(commands(&srv, "LOGIN"), 0);
    // A wrong password is exit 5, without falling back to LOGIN.
    let bad = cmtp(home, &pa, &["inbox", "--password-stdin"], b"nope\n");
    assert_eq!(bad.code, WRONG_PASSWORD, "{bad:?}");
    assert_eq!(commands(&srv, "LOGIN"), 0);
}

#[test]
fn a_cmtp1_account_upgrades_at_its_next_login() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let srv = TestServer::start();
    // Written straight into the store: an account with no OPAQUE record, as every
    // account made before the extension.
    seed_user(&srv.data, "carol", "carol secret");
    let pc = home.join("pc");
    login(
        home,
        &pc,
        "carol@localhost",
        &srv.server_arg(),
        "carol secret",
        false,
    );
    assert!(profile_says_opaque(&pc));
    assert!(srv.data.join("users/carol/opaque").exists());
    assert_eq!(
        commands(&srv, "LOGIN"),
        1,
        "the last plain LOGIN of this account"
    );
    assert_eq!(commands(&srv, "OPAQUEREG2"), 1);
    // From now on the server refuses to hand her xzibit out in the clear...
    let mut c = srv.client();
    c.send(b"LOGIN\0carol\0");
    assert_eq!(c.login_reply(), None);
    // ...and a fresh profile logs in with OPAQUE alone.
    let pc2 = home.join("pc2");
    login(
        home,
        &pc2,
        "carol@localhost",
        &srv.server_arg(),
        "carol secret",
        false,
    );
    assert!(profile_says_opaque(&pc2));
    assert_eq!(commands(&srv, "OPAQUEREG2"), 1);
    // A wrong password on a fresh profile: exit 5 (not "unknown user").
    let pc3 = home.join("pc3");
    let out = cmtp(
        home,
        &pc3,
        &[
            "login",
            "carol@localhost",
            "--server",
            &srv.server_arg(),
            "--password-stdin",
        ],
        b"not it\n",
    );
    assert_eq!(out.code, WRONG_PASSWORD, "{out:?}");
}

#[test]
fn cmtp_password_changes_the_password_and_judges_its_strength() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "bob", "bob old secret");
    let srv = TestServer::start_in(&data);
    let pb = home.join("pb");
    login(
        home,
        &pb,
        "bob@localhost",
        &srv.server_arg(),
        "bob old secret",
        false,
    );

    let weak = cmtp(
        home,
        &pb,
        &["password", "--password-stdin"],
        b"bob old secret\nbob\n",
    );
    assert_ne!(weak.code, 0);
    assert!(weak.stderr.contains("too weak"), "{weak:?}");
    let wrong = cmtp(
        home,
        &pb,
        &["password", "--password-stdin"],
        b"not the old one\ntulip marble quarry 42\n",
    );
    assert_eq!(wrong.code, WRONG_PASSWORD, "{wrong:?}");

    cmtp(
        home,
        &pb,
        &["password", "--password-stdin"],
        b"bob old secret\ntulip marble quarry 42\n",
    )
    .ok();
    let old = cmtp(
        home,
        &home.join("p-old"),
        &[
            "login",
            "bob@localhost",
            "--server",
            &srv.server_arg(),
            "--password-stdin",
        ],
        b"bob old secret\n",
    );
    assert_eq!(old.code, WRONG_PASSWORD, "{old:?}");
    login(
        home,
        &home.join("p-new"),
        "bob@localhost",
        &srv.server_arg(),
        "tulip marble quarry 42",
        false,
    );
    // Same key pair: the profile of before still matches.
    let inbox = cmtp(
        home,
        &pb,
        &["inbox", "--password-stdin"],
        b"tulip marble quarry 42\n",
    );
    inbox.ok();
}

/// A loopback proxy that forwards both ways and, while `strip` is set, removes the
/// OPAQUE capability from the server's OHAI answer: what an attacker on the path can
/// do, since that answer is unsigned.
fn stripping_proxy(server: SocketAddr, strip: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let Ok(upstream) = TcpStream::connect(server) else {
                return;
            };
            let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || pump(c2, u2, None));
            let strip = strip.clone();
            std::thread::spawn(move || pump(upstream, client, Some(strip)));
        }
    });
    addr
}

fn pump(mut from: TcpStream, mut to: TcpStream, strip: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = buf[..n].to_vec();
        if strip.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
            && let Some(i) = chunk.windows(8).position(|w| w == b" OPAQUE\0")
        {
            chunk.drain(i..i + 7);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[test]
fn a_server_that_stops_offering_opaque_is_refused_as_a_downgrade() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "dora", "dora secret");
    // TLS off: with it, the OHAI answer that names OPAQUE comes again inside TLS, where
    // the proxy cannot strip it. This checks the OPAQUE pin on its own.
    let srv = TestServer::start_with(cmtp_testkit::Opts {
        data: Some(data.clone()),
        config: "[tls]\noffer = false\n".into(),
        ..Default::default()
    });
    let strip = Arc::new(AtomicBool::new(false));
    let proxy = stripping_proxy(srv.addr, strip.clone()).to_string();
    let pd = home.join("pd");
    login(home, &pd, "dora@localhost", &proxy, "dora secret", false);
    assert!(profile_says_opaque(&pd));

    strip.store(true, Ordering::SeqCst);
    for args in [
        &["inbox", "--password-stdin"][..],
        &[
            "login",
            "dora@localhost",
            "--server",
            &proxy,
            "--password-stdin",
        ][..],
    ] {
        let out = cmtp(home, &pd, args, b"dora secret\n");
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stderr.contains("downgrade"), "{args:?}: {out:?}");
    }
    assert_eq!(commands(&srv, "LOGIN"), 0, "nothing was asked in the clear");
    // A profile that never saw OPAQUE there still logs in the CMTP/1 way, which the
    // server refuses for an upgraded account: the fallback hands out nothing.
    let fresh = cmtp(
        home,
        &home.join("fresh"),
        &[
            "login",
            "dora@localhost",
            "--server",
            &proxy,
            "--password-stdin",
        ],
        b"dora secret\n",
    );
    assert_ne!(fresh.code, 0, "{fresh:?}");
    assert_eq!(commands(&srv, "LOGIN"), 1);
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"legacy_login_refused\"}"),
        1
    );
}
