//! A real small filesystem for disk-full tests: a tmpfs mounted for one test, as root, or
//! as a normal user inside a user and mount namespace (`unshare --mount
//! --map-root-user`), where the test re-runs itself. A test that can do neither fails
//! with the reason: it never passes without having run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the re-executed child: it runs inside its own user and mount namespace.
const IN_NAMESPACE: &str = "CMTP_TESTKIT_IN_NAMESPACE";

/// A tmpfs mounted on a fresh directory; unmounted (lazily, so a leftover open file
/// cannot keep it) when dropped, also when the test panics.
pub struct Tmpfs {
    /// The mount point.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"8m"`) on a fresh directory (needs root).
    pub fn mount(size: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("cmtp-tmpfs-{}-{}", std::process::id(), size));
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            let _ = fs::remove_dir(&dir);
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `body` on a fresh tmpfs of `size`: directly when root, else in this same test
/// re-executed under `unshare --mount --map-root-user`. Fails (never skips) when
/// neither can mount.
pub fn on_tmpfs(test: &str, size: &str, body: impl FnOnce(&Path)) {
    if is_root() || std::env::var_os(IN_NAMESPACE).is_some() {
        let fs = Tmpfs::mount(size).unwrap_or_else(|e| {
            panic!("this test needs a real small filesystem and could not mount one: {e}")
        });
        body(&fs.dir);
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["--mount", "--map-root-user"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("not root, and `unshare` (to mount a tmpfs in a user namespace) failed: {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("test {test} ... ok")),
        "the test run under `unshare --mount --map-root-user` failed or did not run \
         (user namespaces may be disabled; run as root):\n{stdout}\n{stderr}"
    );
}
