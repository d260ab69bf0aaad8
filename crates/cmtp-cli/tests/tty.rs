//! The interactive paths, under a real pseudo-terminal (util-linux `script`): the
//! no-echo password prompt, composing the text in `$EDITOR` (a reply: on the quote),
//! and the download progress bar.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmtp_testkit::*;

fn have_script() -> bool {
    Command::new("script")
        .args(["-qec", "true", "/dev/null"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn password_prompt_and_editor_on_a_terminal() {
    assert!(
        have_script(),
        "this test needs util-linux `script` to provide a pseudo-terminal"
    );
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "tty pw");
    let srv = TestServer::start_in(&data);
    let p = home.join("p");
    let cmtp = cmtp_bin();
    let under_tty = |cmdline: &str, input: &[u8], editor: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec", cmdline, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("TERM", "dumb")
            .env("CMTP_TIMEOUT", "20");
        if let Some(e) = editor {
            c.env("EDITOR", e);
        }
        run(c, input)
    };
    // Login with the password typed at the prompt, once the prompt is shown (typing
    // earlier would be echoed by the terminal before cmtp turns echo off).
    let mut c = Command::new("script");
    c.args([
        "-qec",
        &format!(
            "{} --profile {} login alice@localhost --server {}",
            sh_quote(cmtp.to_str().unwrap()),
            sh_quote(p.to_str().unwrap()),
            srv.server_arg()
        ),
        "/dev/null",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", home)
    .env("TERM", "dumb")
    .env("CMTP_TIMEOUT", "20")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let seen2 = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    poll("the password prompt", Duration::from_secs(30), || {
        let s = seen.lock().unwrap();
        String::from_utf8_lossy(&s)
            .contains("Password for alice@localhost")
            .then_some(())
    });
    stdin.write_all(b"tty pw\n").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let out = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(status.success(), "{out}");
    assert!(out.contains("logged in as alice@localhost"), "{out}");
    assert!(!out.contains("tty pw"), "the password was echoed: {out}");

    // Compose in $EDITOR (stdin is a terminal): a script that writes the text.
    let ed = home.join("ed.sh");
    std::fs::write(
        &ed,
        "#!/bin/sh\nprintf 'written in the editor\\n' > \"$1\"\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ed, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = under_tty(
        &format!(
            "{} --profile {} send --to alice@localhost --subject edited",
            sh_quote(cmtp.to_str().unwrap()),
            sh_quote(p.to_str().unwrap()),
        ),
        b"",
        Some(ed.to_str().unwrap()),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("delivered  alice@localhost"), "{o:?}");
    let mut c = cmtp_cmd(home, &p);
    c.env("CMTP_PASSWORD", "tty pw").args(["inbox", "--json"]);
    let inbox = run(c, b"").json();
    let id = inbox[0]["id"].as_u64().unwrap().to_string();
    let mut c = cmtp_cmd(home, &p);
    c.env("CMTP_PASSWORD", "tty pw")
        .args(["read", &id, "--json"]);
    let m = run(c, b"").json();
    assert_eq!(m["subject"], "edited");
    assert_eq!(m["text"], "written in the editor\n");
}

/// Runs `cmdline` under a pseudo-terminal (stdin, stdout and stderr all terminals;
/// `script` merges stderr into stdout), with `editor` as $EDITOR. TERM is xterm: on a
/// `dumb` terminal, which cannot redraw a line, indicatif draws no bar.
fn under_tty(home: &std::path::Path, cmdline: &str, editor: Option<&str>) -> Out {
    let mut c = Command::new("script");
    c.args(["-qec", cmdline, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("TERM", "xterm")
        .env("CMTP_TIMEOUT", "20");
    if let Some(e) = editor {
        c.env("EDITOR", e);
    }
    run(c, b"")
}

#[test]
fn download_bar_and_reply_in_the_editor_on_a_terminal() {
    assert!(
        have_script(),
        "this test needs util-linux `script` to provide a pseudo-terminal"
    );
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    seed_user(&data, "alice", "a");
    seed_user(&data, "bob", "b");
    let srv = TestServer::start_in(&data);
    let (pa, pb) = (home.join("pa"), home.join("pb"));
    for (p, who, pw) in [(&pa, "alice", "a\n"), (&pb, "bob", "b\n")] {
        let addr = format!("{who}@localhost");
        let args = [
            "login",
            &addr,
            "--server",
            &srv.server_arg(),
            "--password-stdin",
            "--remember",
        ];
        cmtp(home, p, &args, pw.as_bytes()).ok();
    }
    let big = home.join("big.bin");
    std::fs::write(&big, noise(6 * 1024 * 1024, 5)).unwrap();
    cmtp(
        home,
        &pa,
        &[
            "send",
            "--to",
            "bob@localhost",
            "-s",
            "Big",
            "--attach",
            big.to_str().unwrap(),
        ],
        b"Original line\n",
    )
    .ok();
    let id = cmtp(home, &pb, &["inbox", "--json"], b"").json()[0]["id"].to_string();
    let bin = sh_quote(cmtp_bin().to_str().unwrap());
    let prof = sh_quote(pb.to_str().unwrap());
    // On a terminal, reading a large message draws a bar (bytes of the total).
    let o = under_tty(
        home,
        &format!("{bin} --profile {prof} read {id} --keep-unread"),
        None,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains(" MiB/"), "no progress bar: {o:?}");
    assert!(o.stdout.contains("Original line"), "{o:?}");
    // Never with --json, nor when stdout is not a terminal.
    let o = under_tty(
        home,
        &format!("{bin} --profile {prof} read {id} --json"),
        None,
    );
    assert!(!o.stdout.contains(" MiB/"), "{o:?}");
    let o = under_tty(
        home,
        &format!("{bin} --profile {prof} read {id} | cat"),
        None,
    );
    assert!(!o.stdout.contains(" MiB/"), "{o:?}");

    // `reply` on a terminal opens the editor on the quote; the person writes above it.
    let ed = home.join("reply-ed.sh");
    std::fs::write(
        &ed,
        "#!/bin/sh\n{ printf 'typed above'; cat \"$1\"; } > \"$1.new\" && mv \"$1.new\" \"$1\"\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ed, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = under_tty(
        home,
        &format!("{bin} --profile {prof} reply {id}"),
        Some(ed.to_str().unwrap()),
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("delivered  alice@localhost"), "{o:?}");
    let inbox = cmtp(home, &pa, &["inbox", "--json"], b"").json();
    let rid = inbox[0]["id"].to_string();
    let m = cmtp(home, &pa, &["read", &rid, "--json"], b"").json();
    assert_eq!(m["subject"], "Re: Big");
    let text = m["text"].as_str().unwrap();
    assert!(text.starts_with("typed above\n\nOn "), "{text:?}");
    assert!(
        text.ends_with(" alice@localhost wrote:\n> Original line\n"),
        "{text:?}"
    );
    // An editor that changes nothing sends nothing.
    let o = under_tty(
        home,
        &format!("{bin} --profile {prof} reply {id}"),
        Some("true"),
    );
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("nothing sent"), "{o:?}");
}
