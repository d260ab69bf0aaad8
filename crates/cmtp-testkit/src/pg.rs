//! A private PostgreSQL cluster for tests: `initdb` into a temporary directory, the
//! server on 127.0.0.1 (a free port) and a private Unix socket directory, fsync and
//! synchronous_commit on, run as an unprivileged user when the tests run as root
//! (initdb and postgres refuse root). [`PgCluster::shared`] is one cluster per test
//! process; each test takes its own database ([`PgCluster::database`]) so tests run in
//! parallel on it. [`PgCluster::start`] gives a test a cluster of its own (one it may
//! stop and restart).
//!
//! If PostgreSQL is not installed the tests using it FAIL with a message saying how to
//! install it; they are never skipped. `.ci/run` installs it.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The role the cluster is initialised with (trust authentication, loopback only).
pub const PG_USER: &str = "cmtp";

/// Prefix of cluster directories in the temporary directory; the pid of the test
/// process that owns one follows it, so a later run removes clusters of dead processes.
const DIR_PREFIX: &str = "cmtp-pg-";

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";

/// A running PostgreSQL cluster owned by this test process; stopped (immediate mode)
/// and deleted on drop.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The unprivileged account postgres runs as when we are root.
    run_as: Option<(String, String)>,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

extern "C" fn stop_shared_at_exit() {
    if let Some(c) = SHARED.get() {
        c.stop_and_remove();
    }
}

/// Where the PostgreSQL server binaries are: `pg_config --bindir` if it has `initdb`,
/// else the newest `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH), else
/// `initdb` on the PATH. Panics with an install hint when there are none.
pub fn pg_bin_dir() -> PathBuf {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return d;
        }
    }
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_initdb(d))
        .collect();
    // Versions are directory names ("15", "16"): the longest, then greatest, is newest.
    debian.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    if let Some(d) = debian.pop() {
        return d;
    }
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if has_initdb(&dir) {
            return dir;
        }
    }
    panic!(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: these tests need a real \
         PostgreSQL server. Install it (Debian: `apt-get install -y postgresql`; `.ci/run` \
         does this) and run the tests again."
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral loopback port")
        .port()
}

fn check(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: could not run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Stops and removes clusters left by test processes that died without cleaning up
/// (SIGKILL, a crash): their directory names carry the dead pid.
fn remove_abandoned(bin: &Path) {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = Command::new(bin.join("pg_ctl"))
                .args(["-D"])
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

impl PgCluster {
    /// The cluster shared by this test process, started on first use and stopped when
    /// the process exits.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| {
            let c = PgCluster::start();
            // SAFETY: registering a plain extern "C" function with no arguments.
            unsafe { libc::atexit(stop_shared_at_exit) };
            c
        })
    }

    /// Starts a new cluster of this test's own (≈ 1–2 s).
    pub fn start() -> PgCluster {
        let bin = pg_bin_dir();
        remove_abandoned(&bin);
        static N: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            crate::fixtures::now()
        ));
        fs::create_dir_all(root.join("sock")).expect("creating the cluster directory");
        let run_as = is_root().then(|| ("nobody".to_owned(), "nogroup".to_owned()));
        if let Some((user, group)) = &run_as {
            check(
                "chown of the cluster directory",
                Command::new("chown")
                    .args(["-R", &format!("{user}:{group}")])
                    .arg(&root)
                    .output(),
            );
            // Reachable by the server's user whatever the temporary directory's mode.
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).ok();
        }
        let mut cluster = PgCluster {
            root,
            bin,
            port: 0,
            run_as,
        };
        let data = cluster.data_dir();
        check(
            "initdb",
            cluster
                .pg_command("initdb")
                .args(["-D"])
                .arg(&data)
                .args(["-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-locale"])
                // initdb's own final sync only: the server itself runs with fsync on.
                .arg("--no-sync")
                .output(),
        );
        // A port taken between our probe and the server's bind: try another.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_loopback_port();
            let out = cluster.pg_ctl_start();
            if out.status.success() {
                return cluster;
            }
            last = Some(out);
        }
        let out = last.expect("at least one attempt");
        panic!(
            "pg_ctl start failed:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(cluster.root.join("server.log")).unwrap_or_default()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pg_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = match &self.run_as {
            Some((user, group)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={group}"))
                    .arg("--clear-groups")
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        // The server's user may not be able to enter the test's working directory.
        c.current_dir(&self.root).stdin(Stdio::null());
        c
    }

    fn pg_ctl_start(&self) -> Output {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on -c synchronous_commit=on \
             -c full_page_writes=on -c max_connections=300 -c shared_buffers=64MB",
            self.port,
            self.root.join("sock").display()
        );
        self.pg_command("pg_ctl")
            .args(["-D"])
            .arg(self.data_dir())
            .args(["-l"])
            .arg(self.root.join("server.log"))
            .args(["-o", &opts, "-t", PG_CTL_WAIT_SECS, "-w", "start"])
            .output()
            .expect("running pg_ctl start")
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database with a unique name (`prefix` plus a counter) and
    /// returns its URL.
    pub fn database(&self, prefix: &str) -> String {
        let safe: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!(
            "{safe}_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url(&name)
    }

    /// Runs one SQL command with `psql` on `database` and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = check(
            &format!("psql {sql:?}"),
            Command::new(self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args(["-p", &self.port.to_string(), "-U", PG_USER, "-d", database])
                .args(["-c", sql])
                .stdin(Stdio::null())
                .output(),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Restarts the server (`pg_ctl restart -m fast`): sessions are cut, committed data
    /// stays. Returns once it accepts connections again.
    pub fn restart(&self) {
        self.stop("fast");
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start after restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server in `mode` (`fast` or `immediate`) and waits until it is down.
    pub fn stop(&self, mode: &str) {
        check(
            "pg_ctl stop",
            self.pg_command("pg_ctl")
                .args(["-D"])
                .arg(self.data_dir())
                .args(["-m", mode, "-t", PG_CTL_WAIT_SECS, "-w", "stop"])
                .output(),
        );
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn start_again(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `pgbench` binary beside the server's (for ceilings measured in the same run).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin.join(program)
    }

    fn stop_and_remove(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .pg_command("pg_ctl")
                .args(["-D"])
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // `pg_ctl -w` returned once the server was down; its files belong to its user,
        // which root may delete all the same.
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}
