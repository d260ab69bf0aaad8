//! The real `cmtpd` binary on 127.0.0.1, one process per [`TestServer`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use cmtp_crypto::{KeyPair, PublicKey};
use cmtp_store::{FsUsers, UserStore};

use crate::bins::cmtpd_bin;
use crate::client::Client;
use crate::fixtures::{IO_TIMEOUT, poll, wait_until};
use crate::process::{
    DATABASE_URL_ENV, Out, admin_with_config, run, seed_user_into, server_public_key,
};

/// The `[federation]` of a test server that does not set its own: DNS questions go to
/// a closed port on loopback (they fail at once, as temporary failures), never to the
/// machine's resolver.
pub const NO_DNS: &str = "\n[federation]\ndns = \"127.0.0.1:1\"\ndns_timeout_secs = 1\n";

/// How long a server may take to write its ready file.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The storage backend of a [`TestServer`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store in the data directory.
    #[default]
    Embedded,
    /// `[store] backend = "postgres"`: a fresh database on [`crate::PgCluster::shared`]
    /// (or [`Opts::database`]), migrated with `cmtpd db migrate` before the first start.
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Options of a test server; `Opts::default()` is a fresh data directory on port 0,
/// on the embedded store.
#[derive(Debug, Default, Clone)]
pub struct Opts {
    /// The storage backend.
    pub backend: Backend,
    /// With [`Backend::Postgres`]: this database URL (e.g. another node's, or one on a
    /// private [`crate::PgCluster`]) instead of a fresh database on the shared cluster.
    pub database: Option<String>,
    /// Use this data directory (e.g. one prepared with [`crate::add_user`]) instead of
    /// `data` in the server's own temporary folder.
    pub data: Option<PathBuf>,
    /// Extra TOML configuration, written to a file passed as `--config`.
    pub config: String,
    /// Global arguments, before `serve` (e.g. `--domain example.test`); kept for restarts.
    pub global_args: Vec<String>,
    /// Extra `serve` arguments of the first start.
    pub args: Vec<String>,
    /// Bind to this CMTP address instead of port 0 (e.g. a former server's).
    pub listen: Option<SocketAddr>,
    /// The server's `RUST_LOG` (else `CMTPD_TEST_LOG`, else `warn`); kept for restarts.
    pub rust_log: Option<String>,
}

impl Opts {
    /// The default options on `backend` (for `Opts { config, ..Opts::on(backend) }`).
    pub fn on(backend: Backend) -> Opts {
        Opts {
            backend,
            ..Opts::default()
        }
    }
}

/// A running `cmtpd serve` (CMTP and metrics on 127.0.0.1), killed when dropped.
pub struct TestServer {
    /// The server's own temporary folder: ready file, log, configuration and (unless
    /// [`Opts::data`] says otherwise) the data directory; tests may put scratch files here.
    pub dir: tempfile::TempDir,
    /// The data directory.
    pub data: PathBuf,
    /// The CMTP listening address.
    pub addr: SocketAddr,
    /// The metrics and health HTTP address.
    pub metrics: SocketAddr,
    /// The first implicit-TLS address (`[tls] listen` in the configuration), if any.
    pub tls_addr: Option<SocketAddr>,
    /// The server's public key (from the data directory).
    pub key: PublicKey,
    /// The process, while it runs.
    pub child: Option<Child>,
    /// The configuration file: [`Opts::config`], plus [`NO_DNS`] unless it has a `[federation]`.
    pub config: Option<PathBuf>,
    /// The server's standard error, appended to across restarts ([`Opts::rust_log`] or
    /// `CMTPD_TEST_LOG` sets its `RUST_LOG`, default `warn`).
    pub log: PathBuf,
    /// The storage backend.
    pub backend: Backend,
    /// The PostgreSQL database URL with [`Backend::Postgres`].
    pub database: Option<String>,
    global_args: Vec<String>,
    rust_log: Option<String>,
    /// The database's users, opened on first use (a store has its own runtime and pool).
    #[cfg(feature = "postgres")]
    pg: std::sync::OnceLock<cmtp_store_pg::PgStore>,
    /// Whether this server made its database on the shared cluster (and drops it).
    #[cfg(feature = "postgres")]
    owns_database: bool,
}

impl TestServer {
    /// Starts a server on a fresh data directory and port 0.
    pub fn start() -> TestServer {
        Self::start_with(Opts::default())
    }

    /// Starts a server on the data directory `data` (port 0).
    pub fn start_in(data: &Path) -> TestServer {
        Self::start_with(Opts {
            data: Some(data.to_path_buf()),
            ..Opts::default()
        })
    }

    /// Starts a server on a fresh data directory and port 0, on `backend`.
    pub fn on(backend: Backend) -> TestServer {
        Self::start_with(Opts::on(backend))
    }

    /// Starts a server with `opts`, and waits until it is ready.
    pub fn start_with(opts: Opts) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let data = opts.data.unwrap_or_else(|| dir.path().join("data"));
        // A server must never send a DNS query off this machine from a test: unless the
        // test configures federation itself, its resolver is a closed loopback port.
        let mut text = opts.config.clone();
        if !text.contains("[federation]") {
            text.push_str(NO_DNS);
        }
        #[cfg(feature = "postgres")]
        let owns_database = opts.backend == Backend::Postgres && opts.database.is_none();
        let (section, database) = store_config(opts.backend, opts.database, &text);
        text.push_str(&section);
        let p = dir.path().join("cmtpd.toml");
        std::fs::write(&p, &text).expect("writing the test configuration");
        if database.is_some() {
            // The way an operator creates the schema (idempotent for a shared database).
            let mut cmd = Command::new(cmtpd_bin());
            cmd.env_remove(DATABASE_URL_ENV)
                .arg("--data-dir")
                .arg(&data)
                .arg("--config")
                .arg(&p)
                .args(["db", "migrate"]);
            run(cmd, b"").ok();
        }
        let config = Some(p);
        let log = dir.path().join("cmtpd.log");
        let mut s = TestServer {
            dir,
            data,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_addr: None,
            key: PublicKey::from_array([0; 32]),
            child: None,
            config,
            log,
            backend: opts.backend,
            database,
            global_args: opts.global_args,
            rust_log: opts.rust_log,
            #[cfg(feature = "postgres")]
            pg: std::sync::OnceLock::new(),
            #[cfg(feature = "postgres")]
            owns_database,
        };
        s.spawn(opts.listen, &opts.args);
        s
    }

    /// Starts (or restarts) the process on the same data directory, listening on `listen`
    /// (port 0 if None), with `extra` `serve` arguments; waits until it is ready.
    pub fn spawn(&mut self, listen: Option<SocketAddr>, extra: &[String]) {
        assert!(self.child.is_none(), "cmtpd is still running");
        let ready = self.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let listen = listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the server log file");
        let mut cmd = Command::new(cmtpd_bin());
        cmd.env_remove(DATABASE_URL_ENV)
            .arg("--data-dir")
            .arg(&self.data);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(&self.global_args)
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--metrics-listen", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .args(extra)
            .env(
                "RUST_LOG",
                self.rust_log.clone().unwrap_or_else(|| {
                    std::env::var("CMTPD_TEST_LOG").unwrap_or_else(|_| "warn".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn cmtpd");
        let text = poll("cmtpd's ready file", START_DEADLINE, || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "cmtpd exited early ({st}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            // Written atomically (rename), so present means complete.
            std::fs::read_to_string(&ready).ok()
        });
        self.tls_addr = None;
        for line in text.lines() {
            let (k, v) = line.split_once(' ').expect("a `kind ADDR` ready line");
            let addr = v.parse().expect("an address in the ready file");
            match k {
                "cmtp" => self.addr = addr,
                "metrics" => self.metrics = addr,
                "cmtps" if self.tls_addr.is_none() => self.tls_addr = Some(addr),
                _ => {}
            }
        }
        self.key = server_public_key(&self.data);
        self.child = Some(child);
    }

    /// Kills the process if it runs, and starts it again on the same address and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(Some(self.addr), &[]);
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("cmtpd is running").id() as i32
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped (we hold the Child).
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to exit (deadline: a hang fails the test).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("cmtpd is running");
        let mut status = None;
        wait_until("cmtpd to exit", timeout, || {
            status = child.try_wait().expect("waiting for cmtpd");
            status.is_some()
        });
        self.child = None;
        status.expect("an exit status")
    }

    /// SIGKILL and reap (nothing if it is not running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `host:port` of the CMTP listener, for `--server`.
    pub fn server_arg(&self) -> String {
        self.addr.to_string()
    }

    /// A connected [`Client`] (greeting checked).
    pub fn client(&self) -> Client {
        Client::connect(self.addr, self.key)
    }

    /// Adds a user straight into the server's store with a cheap KDF (as
    /// [`crate::seed_user`] does; the database's `users` table with
    /// [`Backend::Postgres`]); the server sees it at once.
    pub fn add_user(&self, name: &str, password: &str) -> KeyPair {
        self.with_users(|u| seed_user_into(u, name, password))
    }

    /// Adds a user the way an operator does, with the real key derivation and an
    /// OPAQUE login: `cmtpd user add NAME --password-stdin --allow-weak-password` through
    /// [`TestServer::admin`], so on this server's backend (asserts success). The free
    /// [`crate::add_user`] knows only a data directory: on a postgres server it would
    /// write users no server reads.
    pub fn admin_add_user(&self, name: &str, password: &str) {
        crate::process::user_add(|args, stdin| self.admin(args, stdin), name, password);
    }

    /// Runs `f` on the users the server reads: the data directory's, or the database's.
    pub fn with_users<R>(&self, f: impl FnOnce(&dyn UserStore) -> R) -> R {
        match self.backend {
            Backend::Embedded => f(&FsUsers::open(&self.data).unwrap_or_else(|e| {
                panic!("cannot open the users of {}: {e}", self.data.display())
            })),
            #[cfg(feature = "postgres")]
            Backend::Postgres => f(self.pg_store()),
        }
    }

    /// The server's database, opened by the test (with [`Backend::Postgres`]).
    #[cfg(feature = "postgres")]
    pub fn pg_store(&self) -> &cmtp_store_pg::PgStore {
        let url = self
            .database
            .as_deref()
            .expect("a server on the postgres backend");
        self.pg.get_or_init(|| {
            cmtp_store_pg::PgStore::connect(url, cmtp_store_pg::PgOptions::default())
                .unwrap_or_else(|e| panic!("cannot open the test database: {e}"))
        })
    }

    /// `GET path` on the metrics endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(self.metrics).expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    }

    /// One metric's value (the exact series name, labels included).
    pub fn metric(&self, series: &str) -> i64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no metric {series}"))
    }

    /// Runs an admin subcommand on this server's data directory and configuration (so
    /// on its storage backend), see [`admin_with_config`].
    pub fn admin(&self, args: &[&str], stdin: &[u8]) -> Out {
        admin_with_config(&self.data, self.config.as_deref(), args, stdin)
    }
}

/// The `[store]` section of `backend` for the configuration `text` (empty for the
/// embedded store), and the database URL.
// Without the `postgres` feature there is one backend, and nothing to add.
#[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
fn store_config(
    backend: Backend,
    database: Option<String>,
    text: &str,
) -> (String, Option<String>) {
    match backend {
        Backend::Embedded => {
            assert!(database.is_none(), "Opts::database needs Backend::Postgres");
            (String::new(), None)
        }
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            assert!(
                !text.contains("[store]"),
                "the test configuration has its own [store]: use Backend::Embedded"
            );
            let url = database.unwrap_or_else(|| {
                // Named after the test (libtest names its threads so): easy to find.
                let test = std::thread::current().name().unwrap_or("cmtpd").to_owned();
                let short = test.rsplit("::").next().unwrap_or("cmtpd").to_owned();
                crate::PgCluster::shared().database(&short)
            });
            let section = format!("\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n");
            (section, Some(url))
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        // The database goes now rather than with the cluster at exit: its files are
        // deleted while other tests run (at exit, 50 databases took 8–13 s to delete).
        // (Not while a failed test unwinds: a second panic would abort the process.)
        #[cfg(feature = "postgres")]
        if self.owns_database
            && !std::thread::panicking()
            && let Some(name) = self.database.as_deref().and_then(|u| u.rsplit('/').next())
        {
            drop(self.pg.take());
            // FORCE: another node of the test may still hold connections.
            crate::PgCluster::shared().psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            );
        }
    }
}
