//! Operating the server (issue 9): SIGHUP reloads, admin commands never create a data
//! directory, the configuration lookup order, errors printed once, the per-message log,
//! `config check`, and `user add` without a terminal. The real binary throughout.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cmtp_crypto::PublicKey;
use cmtp_testkit::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// `cmtpd` in `cwd` with no CMTPD_* variable of ours, `args`, `stdin`.
fn cmtpd_in(cwd: &Path, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Out {
    let mut c = Command::new(cmtpd_bin());
    c.current_dir(cwd)
        .env_remove("CMTPD_DATA_DIR")
        .env_remove("CMTPD_CONFIG")
        .envs(env.iter().copied())
        .args(args);
    run(c, stdin)
}

/// A server started by hand (so its RUST_LOG and config file are ours): the child, its
/// CMTP address and key.
fn spawn_server(dir: &Path, config: &Path, rust_log: &str) -> (Child, SocketAddr, PublicKey) {
    let ready = dir.join("ready");
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let mut child = Command::new(cmtpd_bin())
        .env_remove("CMTPD_DATA_DIR")
        .env_remove("CMTPD_CONFIG")
        .env("RUST_LOG", rust_log)
        .arg("--config")
        .arg(config)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-metrics",
            "--ready-file",
        ])
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let text = poll("the ready file", DEADLINE, || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("cmtpd exited early ({st}): {}", server_log(dir));
        }
        std::fs::read_to_string(&ready).ok()
    });
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("cmtp "))
        .unwrap()
        .parse()
        .unwrap();
    let data = dir.join("data");
    (child, addr, server_public_key(&data))
}

fn server_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("cmtpd.toml");
    let text = format!(
        "data_dir = {:?}\n{extra}{NO_DNS}",
        dir.join("data").to_str().unwrap()
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    wait_until("cmtpd to exit", DEADLINE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

fn sighup(child: &Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
}

/// A message of about `size` bytes to the server's own mailbox.
fn mail_of(size: usize) -> Vec<u8> {
    message(
        0,
        ("", ""),
        ("tess", "t.example"),
        b"",
        &vec![b'x'; size],
        &[],
    )
}

/// SIGHUP used to kill the server (exit 129). Now it reloads: a changed limit takes
/// effect, a bad file is logged and the running configuration stays, and the server
/// still exits 0 on SIGTERM.
#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_old_configuration() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), "[limits]\nmax_message_size = 100000\n");
    let (mut child, addr, key) = spawn_server(t.path(), &cfg, "info");
    assert_eq!(Client::connect(addr, key).mail(&mail_of(5000)), "SUCCESS");

    write_config(t.path(), "[limits]\nmax_message_size = 1000\n");
    sighup(&child);
    // The reload is asynchronous: poll until a 5000-byte message is refused.
    wait_until("the smaller max_message_size", DEADLINE, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            server_log(t.path())
        );
        Client::connect(addr, key).mail(&mail_of(5000)) == "FAILURE"
    });
    let mut c = Client::connect(addr, key);
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    assert_eq!(c.mail(&mail_of(100)), "SUCCESS");

    // A file that does not parse: logged, the old configuration (1000) stays.
    std::fs::write(&cfg, "[limits\nmax_message_size = 100000\n").unwrap();
    sighup(&child);
    wait_until("the reload error in the log", DEADLINE, || {
        server_log(t.path()).contains("configuration not reloaded")
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "{}",
        server_log(t.path())
    );
    assert_eq!(Client::connect(addr, key).mail(&mail_of(5000)), "FAILURE");
    assert_eq!(Client::connect(addr, key).mail(&mail_of(100)), "SUCCESS");

    // A restart-only setting is named, not applied.
    write_config(
        t.path(),
        "domains = [\"elsewhere.example\"]\n[limits]\nmax_message_size = 1000\n",
    );
    sighup(&child);
    wait_until("the restart-only warning", DEADLINE, || {
        server_log(t.path()).contains("need a restart")
    });
    assert!(server_log(t.path()).contains("domains"));
    let status = sigterm_and_wait(&mut child);
    assert_eq!(status.code(), Some(0), "{}", server_log(t.path()));
}

/// One info line per MAIL with id, from, to, size, result, peer and time; with
/// `log_addresses = "hashed"` no address appears in clear.
#[test]
fn one_log_line_per_message_plain_and_hashed() {
    for hashed in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let extra = format!(
            "log_addresses = \"{}\"\n[limits]\nmax_message_size = 2000\n",
            if hashed { "hashed" } else { "plain" }
        );
        let cfg = write_config(t.path(), &extra);
        let (mut child, addr, key) = spawn_server(t.path(), &cfg, "info");
        let mut c = Client::connect(addr, key);
        assert_eq!(c.mail(&mail_of(300)), "SUCCESS");
        let nobody = message(0, ("nobody", ""), ("tess", "t.example"), b"", b"hi", &[]);
        assert_eq!(c.mail(&nobody), "v0:DELIVERYFAILURE");
        assert_eq!(Client::connect(addr, key).mail(&mail_of(5000)), "FAILURE");
        wait_until("three message lines", DEADLINE, || {
            server_log(t.path()).matches(" message ").count() >= 3
        });
        sigterm_and_wait(&mut child);
        let log = server_log(t.path());
        // Point 8: the startup line says how several domains behave.
        assert!(log.contains("share one account space"), "{log}");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(" message ")).collect();
        assert_eq!(lines.len(), 3, "{log}");
        for l in &lines {
            assert!(l.contains("INFO"), "{l}");
            for field in [
                "command=MAIL",
                "id=",
                "from=",
                "to=",
                "size=",
                "result=",
                "peer=127.0.0.1:",
                "ms=",
            ] {
                assert!(l.contains(field), "{field} missing: {l}");
            }
        }
        assert!(
            lines[0].contains("result=stored") && lines[0].contains("id=1"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("result=refused: no such account"),
            "{}",
            lines[1]
        );
        // Refused from the envelope's announced lengths, before it is decoded: the
        // reason carries the size.
        assert!(
            lines[2].contains("result=refused:") && lines[2].contains("exceeds the limit"),
            "{}",
            lines[2]
        );
        if hashed {
            assert!(
                !log.contains("tess@t.example") && !log.contains("nobody@"),
                "{log}"
            );
            assert!(lines[0].contains("from=h:"), "{}", lines[0]);
            // One address, one token: the same sender in every line.
            let from = |l: &str| {
                l.split("from=")
                    .nth(1)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(from(lines[0]), from(lines[1]));
        } else {
            assert!(lines[0].contains("from=tess@t.example"), "{}", lines[0]);
            assert!(lines[1].contains("to=nobody@localhost"), "{}", lines[1]);
        }
    }
}

/// `serve` binds before it makes anything: a taken port leaves no data directory and no
/// key behind, and the OS error is printed once.
#[test]
fn bind_error_is_printed_once_and_creates_nothing() {
    let t = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = t.path().join("data");
    let out = cmtpd_in(
        t.path(),
        &[("RUST_LOG", "warn")],
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "serve",
            "--listen",
            &addr,
            "--no-metrics",
        ],
        b"",
    );
    let e = out.failed();
    assert_eq!(out.code, 1);
    assert_eq!(e.matches("Address already in use").count(), 1, "{e}");
    assert!(e.contains(&format!("cannot listen on {addr}")), "{e}");
    assert!(!data.exists(), "a data directory was made: {e}");
}

/// The admin commands used to create `./cmtp-data` silently (`user add frank` reported
/// success into a directory no server uses). Now they fail and name the directory.
#[test]
fn admin_commands_never_create_a_data_directory() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    let cases: [&[&str]; 6] = [
        &[
            "user",
            "add",
            "frank",
            "--password-stdin",
            "--allow-weak-password",
        ],
        &["user", "list"],
        &["mailbox", "list"],
        &["mailbox", "stats"],
        &["queue", "list"],
        &["domain", "keys"],
    ];
    for args in cases {
        let out = cmtpd_in(cwd, &[], args, b"frank pw\n");
        let e = out.failed();
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            e.contains("no data directory at ./cmtp-data"),
            "{args:?}: {e}"
        );
        assert!(e.contains("cmtpd init"), "{e}");
        assert!(!cwd.join("cmtp-data").exists(), "{args:?} made it");
    }
    // An explicit --data-dir is named too.
    let elsewhere = cwd.join("elsewhere");
    let out = cmtpd_in(
        cwd,
        &[],
        &["--data-dir", elsewhere.to_str().unwrap(), "user", "list"],
        b"",
    );
    assert!(out.failed().contains(elsewhere.to_str().unwrap()));
    assert!(!elsewhere.exists());
    // `init` makes it (and the key), after which the commands work.
    let init = cmtpd_in(cwd, &[], &["init"], b"");
    assert!(init.ok().contains("fingerprint:"), "{init:?}");
    assert!(cwd.join("cmtp-data/server.key").exists());
    assert!(
        cmtpd_in(cwd, &[], &["user", "list"], b"")
            .ok()
            .contains("no users")
    );
}

/// `--config`, else $CMTPD_CONFIG, else ./cmtpd.toml, else the defaults — for every
/// subcommand; `config check` prints the effective configuration or the error.
#[test]
fn config_lookup_order_and_config_check() {
    let t = tempfile::tempdir().unwrap();
    let cwd = t.path();
    let check = |env: &[(&str, &str)], args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["config", "check"]);
        cmtpd_in(cwd, env, &a, b"")
    };
    let defaults = check(&[], &[]);
    assert!(defaults.ok().contains("built-in defaults"), "{defaults:?}");
    assert!(defaults.ok().contains("data_dir = \"./cmtp-data\""));

    std::fs::write(cwd.join("cmtpd.toml"), "data_dir = \"from-local\"\n").unwrap();
    std::fs::write(cwd.join("env.toml"), "data_dir = \"from-env\"\n").unwrap();
    std::fs::write(cwd.join("flag.toml"), "data_dir = \"from-flag\"\n").unwrap();
    assert!(check(&[], &[]).ok().contains("data_dir = \"from-local\""));
    let env = [("CMTPD_CONFIG", "env.toml")];
    assert!(check(&env, &[]).ok().contains("data_dir = \"from-env\""));
    assert!(
        check(&env, &["--config", "flag.toml"])
            .ok()
            .contains("data_dir = \"from-flag\"")
    );
    // Every subcommand uses the same file: the admin error names its data directory.
    let e = cmtpd_in(cwd, &[], &["user", "list"], b"");
    assert!(
        e.failed().contains("from-local") && e.failed().contains("cmtpd.toml"),
        "{e:?}"
    );

    // The database password is not printed.
    std::fs::write(
        cwd.join("pg.toml"),
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://cmtp:s3cret@db:5432/cmtp\"\n",
    )
    .unwrap();
    let pg = check(&[], &["--config", "pg.toml"]);
    assert!(
        pg.ok().contains("postgres://cmtp:****@db:5432/cmtp") && !pg.ok().contains("s3cret"),
        "{pg:?}"
    );

    // A TOML error: exit 1, the parser's message once.
    std::fs::write(cwd.join("bad.toml"), "[limits]\nmax_mesage_size = 1\n").unwrap();
    let out = check(&[], &["--config", "bad.toml"]);
    let e = out.failed();
    assert_eq!(out.code, 1);
    assert_eq!(e.matches("unknown field").count(), 1, "{e}");
    assert!(e.contains("bad.toml"), "{e}");
    // A value that parses but cannot work.
    std::fs::write(cwd.join("zero.toml"), "listen = []\n").unwrap();
    assert!(
        check(&[], &["--config", "zero.toml"])
            .failed()
            .contains("listen address")
    );
}

/// Without a terminal and without --password-stdin, `user add` says what to do instead
/// of reading a password from a pipe it was not told about.
#[test]
fn user_add_without_a_terminal_asks_for_password_stdin() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    admin(&data, &["init"], b"").ok();
    let out = admin(&data, &["user", "add", "gil"], b"tulip marble quarry 42\n");
    assert!(out.failed().contains("--password-stdin"), "{out:?}");
    assert!(!admin(&data, &["user", "list"], b"").ok().contains("gil"));
    let out = admin(
        &data,
        &["user", "add", "gil", "--password-stdin"],
        b"tulip marble quarry 42\n",
    );
    assert!(out.ok().starts_with("added gil "), "{out:?}");
}
