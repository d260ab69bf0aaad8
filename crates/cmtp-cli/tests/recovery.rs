//! Recovery paths with the real binaries: the commands `cmtp` tells people to run work
//! when pasted, a failed login leaves no profile behind, and `cmtpd key show` and
//! `cmtp` show the same fingerprint.

use cmtp_testkit::*;
use std::path::Path;

const KEY_CHANGED: i32 = 7;
const UNREACHABLE: i32 = 3;
const WRONG_PASSWORD: i32 = 5;
const UNKNOWN_USER: i32 = 6;

/// Logs in with --remember (testkit's [`cmtp_testkit::login`]).
fn login(home: &Path, profile: &Path, addr: &str, server: &str, pw: &str) {
    cmtp_testkit::login(home, profile, addr, server, pw, true);
}

/// The indented command line that follows "run:" in `stderr`.
fn suggested(stderr: &str) -> String {
    let mut lines = stderr.lines();
    lines
        .find(|l| l.trim_end().ends_with("run:"))
        .and_then(|_| lines.next())
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no command suggested in {stderr:?}"))
}

/// Runs `line` as a person pasting it would: a shell in another folder, with only
/// PATH (which finds `cmtp`) and HOME, so no CMTP_HOME helps it find the profile.
fn paste(home: &Path, line: &str) -> Out {
    let elsewhere = home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut path = std::ffi::OsString::from(bin_dir());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut c = std::process::Command::new("sh");
    c.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("CMTP_TIMEOUT", "20")
        .current_dir(&elsewhere)
        .args(["-c", line]);
    run(c, b"")
}

#[test]
fn the_printed_trust_command_works_when_pasted() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let (d1, d2) = (home.join("data1"), home.join("data2"));
    seed_user(&d1, "alice", "pw");
    seed_user(&d2, "alice", "pw");
    let mut srv = TestServer::start_in(&d1);
    let addr = srv.server_arg();
    // A profile away from the default, under a name the shell must quote.
    let p = home.join("my profile's");
    login(home, &p, "alice@localhost", &addr, "pw");
    srv.kill();
    let _srv2 = TestServer::start_with(Opts {
        data: Some(d2.clone()),
        listen: Some(srv.addr),
        ..Opts::default()
    });
    let o = cmtp(home, &p, &["inbox"], b"");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    let line = suggested(&o.stderr);
    assert!(line.contains("--profile"), "{line}");
    assert!(line.contains(" server trust --fingerprint "), "{line}");
    let pasted = paste(home, &line);
    assert!(pasted.success(), "{line}: {pasted:?}");
    assert!(pasted.stdout.contains("pinned the new key"), "{pasted:?}");
    // The pasted command acted on this profile: login no longer meets a changed key
    // (the new server has its own alice, hence logging in again), and the mailbox works.
    login(home, &p, "alice@localhost", &addr, "pw");
    let inbox = cmtp(home, &p, &["inbox", "--json"], b"").json();
    assert_eq!(inbox.as_array().unwrap().len(), 0);
    assert!(!home.join(".config/cmtp").exists());
}

#[test]
fn the_printed_key_accept_command_works_when_pasted() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    seed_user(&data, "alice", "a");
    seed_user(&data, "bob", "b");
    let srv = TestServer::start_in(&data);
    let p = home.join("alice profile");
    login(home, &p, "alice@localhost", &srv.server_arg(), "a");
    cmtp(home, &p, &["key", "bob@localhost"], b"").ok();
    admin(&data, &["user", "remove", "bob"], b"").ok();
    seed_user(&data, "bob", "b2");
    // Sending says what to run, and so does `key`.
    let o = cmtp(home, &p, &["send", "--to", "bob@localhost"], b"hi");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    assert!(o.stdout.contains("--profile"), "{o:?}");
    let o = cmtp(home, &p, &["key", "bob@localhost"], b"");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
    let line = suggested(&o.stderr);
    assert!(line.ends_with("key bob@localhost --accept"), "{line}");
    let pasted = paste(home, &line);
    assert!(pasted.success(), "{line}: {pasted:?}");
    cmtp(home, &p, &["send", "--to", "bob@localhost"], b"hi").ok();
}

#[test]
fn a_failed_login_leaves_no_profile_behind() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    seed_user(&data, "alice", "right");
    let srv = TestServer::start_in(&data);
    let server = srv.server_arg();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let p = home.join("p");
    let try_login = |p: &Path, addr: &str, server: &str, pw: &str| {
        cmtp(
            home,
            p,
            &["login", addr, "--server", server, "--password-stdin"],
            format!("{pw}\n").as_bytes(),
        )
    };
    for (addr, server, pw, code) in [
        ("alice@localhost", server.as_str(), "wrong", WRONG_PASSWORD),
        ("nobody@localhost", server.as_str(), "x", UNKNOWN_USER),
        ("alice@localhost", closed.as_str(), "right", UNREACHABLE),
    ] {
        let o = try_login(&p, addr, server, pw);
        assert_eq!(o.code, code, "{o:?}");
        assert!(!p.exists(), "{addr} at {server} left {}", p.display());
    }
    // A profile that works stays exactly as it was after a failed login into it.
    login(home, &p, "alice@localhost", &server, "right");
    let files = ["profile.toml", "pins.toml", "secret.key"];
    let before: Vec<_> = files
        .iter()
        .map(|f| std::fs::read(p.join(f)).unwrap())
        .collect();
    for (addr, server, pw) in [
        ("alice@localhost", server.as_str(), "wrong"),
        ("nobody@localhost", server.as_str(), "x"),
        ("alice@localhost", closed.as_str(), "right"),
    ] {
        assert!(!try_login(&p, addr, server, pw).success());
        let after: Vec<_> = files
            .iter()
            .map(|f| std::fs::read(p.join(f)).unwrap())
            .collect();
        assert_eq!(
            before, after,
            "a failed login as {addr} changed the profile"
        );
    }
    cmtp(home, &p, &["inbox"], b"").ok();
}

/// The value after `label` on the line that starts with it.
fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {label:?} line in {text:?}"))
}

#[test]
fn cmtpd_and_cmtp_show_the_same_fingerprint() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    seed_user(&data, "alice", "pw");
    let srv = TestServer::start_in(&data);
    let p = home.join("p");
    let shown = cmtp(
        home,
        &p,
        &[
            "login",
            "alice@localhost",
            "--server",
            &srv.server_arg(),
            "--password-stdin",
        ],
        b"pw\n",
    );
    let operator = admin(&data, &["key", "show"], b"");
    let op_fp = field(operator.ok(), "fingerprint:");
    assert_eq!(op_fp.len(), 39, "{op_fp}");
    // Login, `server show` and `whoami` print it the same way, character for character.
    assert!(
        shown.ok().contains(&format!("server key:  {op_fp} ")),
        "{shown:?}"
    );
    let show = cmtp(home, &p, &["server", "show"], b"");
    assert_eq!(field(show.ok(), "fingerprint:"), op_fp);
    let who = cmtp(home, &p, &["whoami"], b"");
    assert_eq!(field(who.ok(), "server key:"), op_fp);
    let op_json = admin(&data, &["key", "show", "--json"], b"").json();
    let cl_json = cmtp(home, &p, &["server", "show", "--json"], b"").json();
    assert_eq!(op_json["fingerprint"], cl_json["server_fingerprint"]);
    assert_eq!(op_json["public_key"], cl_json["server_key"]);
}
