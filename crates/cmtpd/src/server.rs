//! The listener side: binding (with SO_REUSEADDR), the accept loop with connection
//! limits, the metrics endpoint, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use cmtp_store::{EmbeddedStore, Options};
use cmtp_store_pg::{PgOptions, PgStore};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::keys::{self, KeyError, Signer};
use crate::metrics::{FailureReason, Metrics};
use crate::quota::QuotaGate;
use crate::ratelimit::{Limiter, MailboxLimiter, Refused};
use crate::relay::Relay;
use crate::shared::{Backend, Shared};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error underneath.
        source: std::io::Error,
    },
    /// The server key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store could not be opened (for example another server holds its lock).
    #[error("cannot open the store in {path}: {source}")]
    Store {
        /// The data directory.
        path: PathBuf,
        /// The error underneath.
        source: cmtp_store::StoreError,
    },
    /// The PostgreSQL store could not be opened (unreachable, no or unknown schema).
    #[error("cannot open the PostgreSQL store: {0}")]
    Database(#[from] cmtp_store_pg::PgError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error underneath.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built from the server key.
    #[error("TLS: {0}")]
    Tls(String),
    /// The federation settings are not usable (e.g. the DNS resolver).
    #[error("federation: {0}")]
    Federation(String),
    /// The ready file could not be written.
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The error underneath.
        source: std::io::Error,
    },
}

/// A bound server, ready to run, over the store `S`.
pub struct Server<S = EmbeddedStore> {
    shared: Arc<Shared<S>>,
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    metrics_listener: Option<TcpListener>,
    queue_inbox: crate::relay::QueueInbox,
}

/// Binds with SO_REUSEADDR so an immediate restart finds the port free.
fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(4096).map_err(err)
}

/// Raises the open-file soft limit to the hard limit (each connection is a descriptor).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            let old = r.rlim_cur;
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 {
                tracing::debug!(from = old, to = r.rlim_max, "raised open-file limit");
            }
        }
    }
}

impl Server<EmbeddedStore> {
    /// Creates the data directory and key if needed, opens the embedded store and binds
    /// every address. Must run inside a tokio runtime.
    pub fn bind(mut config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        raise_fd_limit();
        // Listen first: a server that cannot listen must not leave a new data directory
        // and a fresh key behind (nobody would ever pin that key).
        let sockets = Sockets::bind(&config)?;
        let data = config.data_dir.clone();
        let (kp, log_key) = prepare_data_dir(&data)?;
        let opaque = keys::load_or_create_opaque_setup(&data)?;
        let store = EmbeddedStore::open(&data, Options::default()).map_err(|source| {
            ServerError::Store {
                path: data.clone(),
                source,
            }
        })?;
        Server::assemble(config, kp, store, sockets, log_key, Some(opaque))
    }
}

/// Creates the data directory and the server key if needed (warning when the directory
/// is open to others); the key pair and the log-address key.
fn prepare_data_dir(data: &Path) -> Result<(cmtp_crypto::KeyPair, [u8; 32]), ServerError> {
    keys::ensure_data_dir(data).map_err(|source| ServerError::DataDir {
        path: data.to_owned(),
        source,
    })?;
    match keys::data_dir_too_open(data) {
        Ok(Some(mode)) => tracing::warn!(
            path = %data.display(),
            mode = format!("{mode:o}"),
            "the data directory is accessible to group or others (it holds the server \
             key and the mail): chmod 700 it"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(path = %data.display(), error = %e, "cannot stat the data directory")
        }
    }
    let (kp, created) = keys::load_or_create(data)?;
    if created {
        tracing::info!(public_key = %kp.public().to_hex(), "generated a new server key");
    }
    let log_key = keys::load_or_create_log_key(data)?;
    Ok((kp, log_key))
}

impl Server<PgStore> {
    /// Like [`Server::bind`], over the PostgreSQL database of `[store]`: the data
    /// directory holds only the server key (shared by every node of the domain). Refuses
    /// to start when the database is unreachable or its schema is missing or unknown
    /// (`cmtpd db migrate` creates it). Must run inside a tokio runtime.
    pub fn bind_postgres(mut config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let url = config.store.database_url().ok_or_else(|| {
            crate::config::ConfigError::Invalid("[store] has no database url".into())
        })?;
        raise_fd_limit();
        let sockets = Sockets::bind(&config)?;
        let (kp, log_key) = prepare_data_dir(&config.data_dir)?;
        // Shared by every node like the server key: an OPAQUE login registered through
        // one node must open through the others.
        let opaque = keys::load_or_create_opaque_setup(&config.data_dir)?;
        let store = PgStore::connect(&url, PgOptions::default())?;
        Server::assemble(config, kp, store, sockets, log_key, Some(opaque))
    }
}

/// The bound listeners of a configuration, before anything else is set up.
struct Sockets {
    listeners: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    metrics: Option<TcpListener>,
}

impl Sockets {
    fn bind(config: &Config) -> Result<Self, ServerError> {
        let listeners = config
            .listen
            .iter()
            .map(|a| bind(*a))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = config
            .tls
            .listen
            .iter()
            .map(|a| bind(*a))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = if config.metrics_enabled {
            Some(bind(config.metrics_listen)?)
        } else {
            None
        };
        Ok(Self {
            listeners,
            tls,
            metrics,
        })
    }
}

impl<S: Backend> Server<S> {
    /// Binds every address of `config` to serve `store` with the server key `kp`. Must run
    /// inside a tokio runtime.
    pub fn with_store(
        config: Config,
        kp: cmtp_crypto::KeyPair,
        store: S,
    ) -> Result<Self, ServerError> {
        let sockets = Sockets::bind(&config)?;
        // No data directory to keep it in: hashed log addresses are stable for this
        // process only.
        let mut log_key = [0u8; 32];
        cmtp_crypto::random_bytes(&mut log_key).map_err(KeyError::from)?;
        // OPAQUE only with the secrets every stored record depends on, which live in the
        // data directory (`cmtpd init` makes them); never fresh ones that a restart
        // would lose.
        let opaque = keys::load_opaque_setup(&config.data_dir).ok().flatten();
        Self::assemble(config, kp, store, sockets, log_key, opaque)
    }

    fn assemble(
        config: Config,
        kp: cmtp_crypto::KeyPair,
        store: S,
        sockets: Sockets,
        log_key: [u8; 32],
        opaque: Option<cmtp_crypto::opaque::ServerSetup>,
    ) -> Result<Self, ServerError> {
        let Sockets {
            listeners,
            tls: tls_listeners,
            metrics: metrics_listener,
        } = sockets;
        let tls = if config.tls.offer || !config.tls.listen.is_empty() {
            let tls_config = cmtp_client::tls::server_config(&kp)
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            Some(tokio_rustls::TlsAcceptor::from(tls_config))
        } else {
            None
        };
        let signer = Signer::new(kp, config.key_signature_cache);
        let mut greeting = Vec::new();
        cmtp_proto::reply::encode_greeting(config.primary_domain(), &mut greeting);
        let software = concat!("cmtpd/", env!("CARGO_PKG_VERSION"));
        let mut ohai = Vec::new();
        let mut offered: Vec<&str> = Vec::new();
        if config.tls.offer {
            offered.push(cmtp_proto::reply::CAP_TLS);
        }
        if opaque.is_some() {
            offered.push(cmtp_proto::opaque::CAPABILITY);
        }
        cmtp_proto::reply::encode_ohai(software, &offered, &mut ohai);
        // Inside TLS: everything but `TLS` itself.
        offered.retain(|c| *c != cmtp_proto::reply::CAP_TLS);
        let mut ohai_tls = Vec::new();
        cmtp_proto::reply::encode_ohai(software, &offered, &mut ohai_tls);
        let limiter = Limiter::new(
            config.rate.clone(),
            config.limits.max_connections_per_ip,
            config.limits.max_tracked_ips,
            config.limits.exempt_networks.clone(),
        );
        let (relay, queue_inbox) =
            Relay::new(config.federation.clone()).map_err(ServerError::Federation)?;
        let mailbox_rates = MailboxLimiter::new(
            config.rate.mailbox_mail_per_sec,
            config.rate.mailbox_mail_burst,
        );
        Ok(Server {
            shared: Arc::new(Shared {
                signer,
                store,
                metrics: Metrics::default(),
                limiter,
                mailbox_rates,
                quotas: QuotaGate::default(),
                relay,
                greeting: Bytes::from(greeting),
                ohai: Bytes::from(ohai),
                ohai_tls: Bytes::from(ohai_tls),
                tls,
                config: crate::live::Live::new(config),
                log_key,
                opaque,
                account_rates: crate::ratelimit::AccountLimiter::default(),
            }),
            listeners,
            tls_listeners,
            metrics_listener,
            queue_inbox,
        })
    }

    /// The bound CMTP addresses (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound implicit-TLS addresses (`[tls] listen`).
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound metrics address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The shared state (metrics, store) — for in-process tests and tools.
    pub fn shared(&self) -> Arc<Shared<S>> {
        self.shared.clone()
    }

    /// Writes the ready file: `cmtp ADDR` lines then `metrics ADDR`, atomically.
    pub fn write_ready_file(&self, path: &Path) -> Result<(), ServerError> {
        let mut text = String::new();
        for a in self.local_addrs() {
            text.push_str(&format!("cmtp {a}\n"));
        }
        for a in self.tls_addrs() {
            text.push_str(&format!("cmtps {a}\n"));
        }
        if let Some(m) = self.metrics_addr() {
            text.push_str(&format!("metrics {m}\n"));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| ServerError::ReadyFile {
                path: path.to_owned(),
                source,
            })
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets connections finish
    /// for at most the grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            shared,
            listeners,
            tls_listeners,
            metrics_listener,
            queue_inbox,
        } = self;
        let trigger = ShutdownTrigger::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::outbound::run(
            shared.clone(),
            queue_inbox,
            trigger.subscribe(),
        ));
        if let Some(l) = metrics_listener {
            let s = shared.clone();
            let pages = crate::http::Pages {
                metrics: Arc::new({
                    let s = s.clone();
                    move || s.render_metrics()
                }),
                health: Arc::new(move || s.health()),
            };
            tasks.spawn(crate::http::serve(
                l,
                pages,
                shared.config.load().http.clone(),
                trigger.subscribe(),
            ));
        }
        let conns = Arc::new(Semaphore::new(shared.config.load().limits.max_connections));
        // Connections are tracked so shutdown can wait for them.
        let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<()>(1);
        let all = listeners
            .into_iter()
            .map(|l| (l, false))
            .chain(tls_listeners.into_iter().map(|l| (l, true)));
        for (l, implicit_tls) in all {
            tasks.spawn(accept_loop(
                l,
                implicit_tls,
                shared.clone(),
                conns.clone(),
                trigger.subscribe(),
                conn_tx.clone(),
            ));
        }
        drop(conn_tx);
        let configured = shared.config.load();
        for a in &configured.listen {
            tracing::debug!(%a, "configured listen address");
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing work in progress");
        trigger.fire();
        let grace = Duration::from_secs(shared.config.load().shutdown_grace_secs);
        // Every connection holds a clone of conn_tx: recv() returns None when all are gone.
        let drained =
            tokio::time::timeout(grace, async { while conn_rx.recv().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                open = shared.metrics.connections_open.load(Relaxed),
                "grace period over; closing remaining connections"
            );
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!("stopped");
    }
}

async fn accept_loop<S: Backend>(
    listener: TcpListener,
    implicit_tls: bool,
    shared: Arc<Shared<S>>,
    conns: Arc<Semaphore>,
    mut stop: Shutdown,
    conn_tx: tokio::sync::mpsc::Sender<()>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = stop.stopped() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (mini-redis habit).
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.metrics.connections_total.fetch_add(1, Relaxed);
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            refuse(stream, shared.clone(), "max_connections", implicit_tls);
            continue;
        };
        let slot = match shared.limiter.connect(peer.ip()) {
            Ok(slot) => slot,
            Err(Refused::PerIp) => {
                refuse(
                    stream,
                    shared.clone(),
                    "max_connections_per_ip",
                    implicit_tls,
                );
                continue;
            }
            Err(Refused::TableFull) => {
                refuse(stream, shared.clone(), "max_tracked_ips", implicit_tls);
                continue;
            }
        };
        let shared = shared.clone();
        let stop = stop.clone();
        let guard = conn_tx.clone();
        tokio::spawn(async move {
            // Released on every exit path, panics included.
            let _open = OpenGuard::new(shared.clone(), permit, guard);
            crate::handler::serve(stream, peer, shared, slot, stop, implicit_tls).await;
        });
    }
}

/// Counts a connection as open and holds its slot until dropped.
struct OpenGuard<S> {
    shared: Arc<Shared<S>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _alive: tokio::sync::mpsc::Sender<()>,
}

impl<S> OpenGuard<S> {
    fn new(
        shared: Arc<Shared<S>>,
        permit: tokio::sync::OwnedSemaphorePermit,
        alive: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        shared.metrics.connections_open.fetch_add(1, Relaxed);
        Self {
            shared,
            _permit: permit,
            _alive: alive,
        }
    }
}

impl<S> Drop for OpenGuard<S> {
    fn drop(&mut self) {
        self.shared.metrics.connections_open.fetch_sub(1, Relaxed);
    }
}

/// Answers a connection over a limit with the greeting, then a signed FAILURE, and closes
/// it: the greeting lets a client tell "busy CMTP server" from "not a CMTP server".
/// On an implicit-TLS listener the client expects a handshake, not words in clear: the
/// connection is just closed.
fn refuse<S: Backend>(
    mut stream: TcpStream,
    shared: Arc<Shared<S>>,
    limit: &'static str,
    implicit_tls: bool,
) {
    shared.metrics.failure(FailureReason::ConnectionLimit);
    tracing::debug!(limit, "connection refused");
    if implicit_tls {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let mut reply = Vec::with_capacity(shared.greeting.len() + shared.signer.failure.len());
            reply.extend_from_slice(&shared.greeting);
            reply.extend_from_slice(&shared.signer.failure);
            let _ = stream.write_all(&reply).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}
