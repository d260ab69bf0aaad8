//! The shipped systemd unit and container file: their cmtpd command lines parse, the
//! unit keeps its sandboxing, and `systemd-analyze verify` accepts it (where systemd
//! is installed; the other checks run everywhere).

use std::path::Path;
use std::process::Command;

use cmtp_testkit::*;

fn packaging(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs cmtpd with `args` plus `--help` on the subcommand: clap accepts every flag.
fn parses(args: &[&str]) {
    let mut c = Command::new(cmtpd_bin());
    c.args(args).arg("--help");
    let out = run(c, b"");
    assert!(out.success(), "cmtpd {args:?} does not parse: {out:?}");
}

#[test]
fn systemd_unit_is_sandboxed_and_valid() {
    let unit = packaging("cmtpd.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/cmtpd"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args.last(), Some(&"serve"));
    parses(&args);
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=cmtpd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.lines().any(|l| l == directive), "missing {directive}");
    }
    let Ok(which) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: structure checked, verify not run");
        return;
    };
    assert!(which.status.success());
    // Verify the unit as shipped, pointed at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let local = unit.replace("/usr/local/bin/cmtpd", &cmtpd_bin().display().to_string());
    let path = dir.path().join("cmtpd.service");
    std::fs::write(&path, local).unwrap();
    let mut c = Command::new("systemd-analyze");
    c.args(["verify", "--man=no"]).arg(&path);
    let out = run(c, b"");
    assert!(
        out.success() && !out.stderr.contains("cmtpd.service"),
        "systemd-analyze verify: {out:?}"
    );
}

#[test]
fn container_file_builds_both_binaries_and_serves_on_all_interfaces() {
    let file = packaging("Containerfile");
    assert!(file.contains("cargo build --release --locked -p cmtpd -p cmtp-cli"));
    let cmd = file
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD line");
    let args: Vec<String> = serde_json::from_str(cmd).expect("CMD in JSON form");
    assert_eq!(args[0], "serve");
    assert!(args.iter().any(|a| a == "0.0.0.0:9001"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    parses(&args);
}

/// Runs `bin args` in an empty directory with an empty HOME; returns (stdout, the
/// directory's entries afterwards).
fn in_empty_dir(bin: &Path, args: &[&str]) -> (String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env_remove("CMTP_HOME")
        .env_remove("CMTPD_DATA_DIR");
    let out = run(c, b"");
    let stdout = out.ok().to_owned();
    (stdout, std::fs::read_dir(dir.path()).unwrap().count())
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definitions() {
    for (bin, name, section, subs) in [
        (
            cmtpd_bin(),
            "cmtpd",
            "8",
            &["serve", "user", "queue", "domain"][..],
        ),
        (
            cmtp_bin(),
            "cmtp",
            "1",
            &["login", "send", "inbox", "read"][..],
        ),
    ] {
        let (bash, created) = in_empty_dir(&bin, &["completions", "bash"]);
        assert_eq!(created, 0, "{name} completions created files");
        assert!(bash.contains(&format!("complete -F _{name}")), "{bash}");
        for s in subs {
            assert!(bash.contains(s), "{name}: no completion for {s}");
        }
        // The script is valid bash.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("c.bash");
        std::fs::write(&script, &bash).unwrap();
        let mut c = Command::new("bash");
        c.arg("-n").arg(&script);
        run(c, b"").ok();
        let (zsh, _) = in_empty_dir(&bin, &["completions", "zsh"]);
        assert!(zsh.starts_with(&format!("#compdef {name}")), "{zsh}");

        let (man, created) = in_empty_dir(&bin, &["man"]);
        assert_eq!(created, 0, "{name} man created files");
        assert!(man.contains(&format!(".TH {name} {section}")), "{man}");
        for s in subs {
            assert!(man.contains(s), "{name} man page lacks {s}");
        }
    }
}
