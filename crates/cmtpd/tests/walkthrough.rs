//! Runs the three-domain walkthrough of docs/federation.md verbatim: the block between
//! `<!-- walkthrough:begin -->` and `<!-- walkthrough:end -->`, with bash, in an empty
//! directory, the built `cmtpd` and `cmtp` first on PATH.

use std::process::Command;

use cmtp_testkit::*;

#[test]
fn federation_walkthrough_runs_as_documented() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/federation.md"),
    )
    .unwrap();
    let start = doc
        .find("<!-- walkthrough:begin -->")
        .expect("the walkthrough's start");
    let end = doc
        .find("<!-- walkthrough:end -->")
        .expect("the walkthrough's end");
    let block = &doc[start..end];
    let script = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.rsplit_once("```"))
        .map(|(s, _)| s)
        .expect("a ```sh block");
    assert!(script.contains("cmtp --profile alice-profile send"));
    // Both binaries must exist (cargo builds them for the workspace's tests).
    let (cmtpd, cmtp) = (cmtpd_bin(), cmtp_bin());
    assert!(cmtpd.exists() && cmtp.exists());
    let dir = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("CMTP_TIMEOUT", "20")
        .env("RUST_LOG", "warn");
    let out = run(c, b"");
    kill_leftovers(dir.path());
    let logs: String = ["a", "b", "c"]
        .iter()
        .map(|d| {
            format!(
                "--- {d}.log\n{}",
                std::fs::read_to_string(dir.path().join(format!("{d}.log"))).unwrap_or_default()
            )
        })
        .collect();
    assert!(
        out.success(),
        "the walkthrough failed ({}):\n{}\n{}\n{logs}",
        out.code,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("the relay queue is empty"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("b.test  pinned"), "{}", out.stdout);
}

/// Kills whatever still runs in `dir` (servers of a walkthrough that was cut short), so
/// a failed run never leaves processes holding the walkthrough's ports.
fn kill_leftovers(dir: &std::path::Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd == dir) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    }
}
