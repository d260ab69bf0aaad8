//! Child processes with a deadline, and the admin side of a data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cmtp_crypto::{KeyPair, PublicKey, Xzibit};
use cmtp_store::{FsUsers, UserRecord, UserStore};

use crate::bins::cmtpd_bin;

/// cmtpd's database URL variable, which wins over `[store] url`: removed from every
/// cmtpd the kit starts, so a developer's own setting cannot point tests at a real
/// database.
pub(crate) const DATABASE_URL_ENV: &str = "CMTPD_DATABASE_URL";

/// How long [`run`] lets a command take before it kills it and fails the test.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// What one finished command left: exit code and output.
#[derive(Debug)]
pub struct Out {
    /// The exit code; -1 when a signal ended the process.
    pub code: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Out {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(self.success(), "command failed: {self:#?}");
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    pub fn failed(&self) -> &str {
        assert!(!self.success(), "unexpected success: {self:#?}");
        &self.stderr
    }

    /// Asserts success and parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("bad JSON ({e}): {self:#?}"))
    }
}

/// Runs `cmd` with `stdin` fed (then closed) and waits for it; a command still running
/// after two minutes is killed and fails the test.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    {
        let mut si = child.stdin.take().expect("piped stdin");
        // A command may exit without reading its input.
        let _ = si.write_all(stdin);
    }
    let out = wait_timeout(child, COMMAND_DEADLINE);
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits for `child` (collecting its output) for at most `limit`.
fn wait_timeout(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    // A thread, because reading both pipes to the end is what waiting means here.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r.expect("waiting for a child process"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child we started, not yet reaped (the
            // waiting thread still holds it).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("command {pid} did not finish within {limit:?}");
        }
    }
}

/// Runs `cmtpd --data-dir DATA ARGS` (an admin subcommand) with `stdin`.
pub fn admin(data: &Path, args: &[&str], stdin: &[u8]) -> Out {
    admin_with_config(data, None, args, stdin)
}

/// Runs `cmtpd --data-dir DATA [--config CONFIG] ARGS` with `stdin`: an admin
/// subcommand that sees the configuration (and so the storage backend) of a server.
pub fn admin_with_config(data: &Path, config: Option<&Path>, args: &[&str], stdin: &[u8]) -> Out {
    let mut cmd = Command::new(cmtpd_bin());
    // The configuration decides the database, never the caller's environment.
    cmd.env_remove(DATABASE_URL_ENV).arg("--data-dir").arg(data);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args);
    run(cmd, stdin)
}

/// Adds a user the way an operator does: `cmtpd user add NAME --password-stdin`, with
/// the real key derivation (asserts success). Tests use short passwords, so the strength
/// check is waived (`--allow-weak-password`); a data directory that does not exist yet
/// is made with `cmtpd init` first (`user add` never creates one).
pub fn add_user(data: &Path, name: &str, password: &str) {
    if !data.is_dir() {
        admin(data, &["init"], b"").ok();
    }
    user_add(|args, stdin| admin(data, args, stdin), name, password);
}

/// `user add NAME --password-stdin --allow-weak-password` through `admin` (asserts
/// success): the one spelling of the command for [`add_user`] and
/// [`crate::TestServer::admin_add_user`].
pub(crate) fn user_add(admin: impl FnOnce(&[&str], &[u8]) -> Out, name: &str, password: &str) {
    admin(
        &[
            "user",
            "add",
            name,
            "--password-stdin",
            "--allow-weak-password",
        ],
        format!("{password}\n").as_bytes(),
    )
    .ok();
}

/// Writes a user straight into the data directory, with a cheap-KDF version-2 xzibit
/// (Argon2id ops 1, 8 KiB), and returns the user's key pair. Much faster than
/// [`add_user`]; a running server sees the user at once.
pub fn seed_user(data: &Path, name: &str, password: &str) -> KeyPair {
    let users = FsUsers::open(data)
        .unwrap_or_else(|e| panic!("cannot open the users of {}: {e}", data.display()));
    seed_user_into(&users, name, password)
}

/// Writes a user into `users` (any backend's [`UserStore`]) with a cheap-KDF version-2
/// xzibit, as [`seed_user`] does, and returns the user's key pair.
pub fn seed_user_into(users: &dyn UserStore, name: &str, password: &str) -> KeyPair {
    let kp = KeyPair::generate().expect("key generation");
    let xz = Xzibit::create_v2_with_limits(&kp, password.as_bytes(), 1, 8192)
        .expect("a cheap-KDF xzibit");
    users
        .add(&UserRecord {
            name: name.to_owned(),
            public_key: *kp.public().as_bytes(),
            xzibit: xz.into_bytes(),
            created: 0,
        })
        .unwrap_or_else(|e| panic!("cannot add user {name}: {e}"));
    kp
}

/// The server's public key, read from `DATA/server.key` (secret key ‖ public key).
pub fn server_public_key(data: &Path) -> PublicKey {
    let path = data.join("server.key");
    let sk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(sk.len(), 64, "{} is not a 64-byte key", path.display());
    PublicKey::from_bytes(&sk[32..]).expect("a valid server public key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_feeds_stdin_and_collects_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; echo oops >&2; exit 3"]);
        let out = run(cmd, b"hello");
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.failed(), "oops\n");
    }

    #[test]
    fn json_parses_stdout_of_a_success() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo '{\"a\": 1}'"]);
        assert_eq!(run(cmd, b"").json()["a"], 1);
    }

    #[test]
    fn seeded_users_are_in_the_store() {
        let d = tempfile::tempdir().unwrap();
        let kp = seed_user(d.path(), "ann", "pw");
        let users = FsUsers::open_read_only(d.path());
        assert_eq!(
            users.public_key("ann").unwrap(),
            Some(*kp.public().as_bytes())
        );
    }
}
