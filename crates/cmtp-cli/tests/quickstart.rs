//! Runs the README's quickstart block exactly as written (the lines of its `sh` fence,
//! between `<!-- quickstart:begin -->` and `<!-- quickstart:end -->`), with the built
//! binaries on PATH and a temporary folder as working folder and HOME.
//!
//! The block uses the fixed default port 9001. To keep that port from clashing with
//! anything else on this machine, the script runs in a private network namespace
//! (`unshare -rn`, with its own loopback) when the system allows it; otherwise on the
//! host loopback, where a busy port 9001 makes the test fail with the server's error.

use std::process::Command;

use cmtp_testkit::*;

fn quickstart_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let a = readme
        .find("<!-- quickstart:begin -->")
        .expect("quickstart:begin marker in README.md");
    let b = readme
        .find("<!-- quickstart:end -->")
        .expect("quickstart:end marker in README.md");
    let block = &readme[a..b];
    let mut in_fence = false;
    let mut lines = Vec::new();
    for l in block.lines() {
        let t = l.trim();
        if t.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence && !t.is_empty() && !t.starts_with('#') {
            lines.push(l.to_owned());
        }
    }
    lines
}

fn namespace_available() -> bool {
    Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn readme_quickstart_runs_as_written() {
    let lines = quickstart_lines();
    let serve: Vec<_> = lines.iter().filter(|l| l.contains("cmtpd serve")).collect();
    assert_eq!(
        serve.len(),
        1,
        "the quickstart starts exactly one server: {lines:#?}"
    );
    assert!(
        serve[0].trim_end().ends_with('&'),
        "the serve line runs in the background"
    );
    for must in [
        "cmtpd user add",
        "cmtp --profile",
        " login ",
        " send ",
        "--attach",
        " read ",
        "--save-attachments",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(must)),
            "quickstart lacks {must:?}"
        );
    }
    let port = lines
        .iter()
        .find_map(|l| l.split("127.0.0.1:").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(9001);

    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    // The script: the README lines verbatim; after the serve line, wait (bounded) until
    // the port accepts; stop the server at the end.
    let mut script = String::from("set -e\nip link set lo up 2>/dev/null || true\n");
    script.push_str("trap 'if [ -n \"$SERVE_PID\" ]; then kill $SERVE_PID; wait $SERVE_PID 2>/dev/null; fi' EXIT\n");
    for l in &lines {
        script.push_str("echo \"+ $(cat <<'CMTP_QS_EOF'\n");
        script.push_str(l);
        script.push_str("\nCMTP_QS_EOF\n)\"\n");
        script.push_str(l);
        script.push('\n');
        if l.contains("cmtpd serve") {
            script.push_str("SERVE_PID=$!\n");
            script.push_str(&format!(
                "for i in $(seq 1 600); do if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then break; fi; \
                 if ! kill -0 $SERVE_PID 2>/dev/null; then echo 'cmtpd exited' >&2; exit 90; fi; \
                 if [ $i = 600 ]; then echo 'cmtpd did not start listening within 30 s' >&2; exit 91; fi; sleep 0.05; done\n"
            ));
        }
    }
    std::fs::write(dir.join("quickstart.sh"), &script).unwrap();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Fail clearly when a binary is missing.
    cmtpd_bin();
    assert!(bin_dir().join("cmtp").exists(), "cmtp binary missing");
    let mut cmd = if namespace_available() {
        let mut c = Command::new("unshare");
        c.args(["-rn", "bash", "quickstart.sh"]);
        c
    } else {
        let mut c = Command::new("bash");
        c.arg("quickstart.sh");
        c
    };
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir)
        .env("CMTP_TIMEOUT", "20");
    let out = run(cmd, b"");
    assert_eq!(
        out.code, 0,
        "the quickstart failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    // Bob read Alice's text and saved the attachment byte for byte.
    assert!(
        out.stdout.contains("Hi Bob, the plans are attached."),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Subject:  Plans"), "{}", out.stdout);
    assert_eq!(
        std::fs::read(dir.join("received/plans.txt")).unwrap(),
        std::fs::read(dir.join("plans.txt")).unwrap()
    );
}
