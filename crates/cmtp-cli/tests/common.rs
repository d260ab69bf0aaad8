//! Shared helpers for the end-to-end tests: the real `cmtpd` and `cmtp` binaries,
//! temporary folders, and polling with deadlines (never sleeps as synchronisation).
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/`: the grand-parent of the test executable (`…/deps/e2e-…`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable has a grand-parent folder")
        .to_path_buf()
}

/// The `cmtpd` binary; a clear failure if it was not built.
pub fn cmtpd_bin() -> PathBuf {
    let p = bin_dir().join("cmtpd");
    assert!(
        p.exists(),
        "the server binary {} is missing: build it first (`cargo build -p cmtpd`, or run \
         `cargo test --workspace`, which builds it)",
        p.display()
    );
    p
}

/// The `cmtp` binary under test.
pub fn cmtp_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cmtp"))
}

/// The shared test vectors.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vectors"
    ))
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics at `deadline`.
pub fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output of one command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        &self.stdout
    }

    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("bad JSON ({e}): {self:#?}"))
    }
}

/// Runs a command with `stdin` fed and waits (bounded by `wait_timeout`).
pub fn run(mut cmd: Command, stdin: &[u8]) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    {
        let mut si = child.stdin.take().expect("stdin");
        // A command may exit without reading its input.
        let _ = si.write_all(stdin);
    }
    let out = wait_timeout(child, Duration::from_secs(120));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn wait_timeout(child: Child, limit: Duration) -> std::process::Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.expect("wait"),
        Err(_) => {
            // SAFETY-free: kill by pid of the child we started.
            let _ = Command::new("kill").arg("-9").arg(id.to_string()).status();
            panic!("command {id} did not finish within {limit:?}");
        }
    }
}

/// A running `cmtpd serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Server {
    /// Starts `cmtpd serve` on `listen` (port 0 = any) and waits for its ready file.
    pub fn start(data: &Path, listen: &str, extra_global: &[&str]) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let ready = data.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let log = data.with_extension("log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(cmtpd_bin());
        cmd.arg("--data-dir").arg(data);
        cmd.args(extra_global);
        cmd.args(["serve", "--listen", listen, "--no-metrics", "--ready-file"])
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        let mut child = cmd.spawn().expect("spawn cmtpd");
        let addr = poll("cmtpd's ready file", Duration::from_secs(30), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "cmtpd exited early ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("cmtp "))
                .and_then(|a| a.trim().parse().ok())
        });
        Server {
            child: Some(child),
            addr,
            data: data.to_path_buf(),
            log,
        }
    }

    /// `host:port` for `--server`.
    pub fn server_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cmtpd --data-dir DATA <args>`.
pub fn cmtpd(data: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = Command::new(cmtpd_bin());
    c.arg("--data-dir").arg(data).args(args);
    run(c, stdin)
}

/// Adds a user with a password.
pub fn add_user(data: &Path, name: &str, password: &str) {
    let o = cmtpd(
        data,
        &["user", "add", name, "--password-stdin"],
        format!("{password}\n").as_bytes(),
    );
    o.ok();
}

/// A `cmtp` command for profile folder `profile`, isolated from the caller's
/// environment (HOME and CMTP_* variables).
pub fn cmtp_cmd(home: &Path, profile: &Path) -> Command {
    let mut c = Command::new(cmtp_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CMTP_TIMEOUT", "20")
        .arg("--profile")
        .arg(profile);
    c
}

/// Runs `cmtp --profile PROFILE args` with `stdin`.
pub fn cmtp(home: &Path, profile: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = cmtp_cmd(home, profile);
    c.args(args);
    run(c, stdin)
}

/// Deterministic pseudo-random bytes (xorshift), so large attachments are not all zero.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
