//! What every part of the store shares: the pool, options, metrics and health.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cmtp_store::{StoreError, StoreHealth, StoreMetrics};
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use parking_lot::Mutex;
use tokio_postgres::NoTls;

use crate::bridge::Bridge;
use crate::{PgError, PgOptions};

/// Shared state of one store instance (one node).
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    /// Connections for the chunks of large messages, whose sessions run with
    /// `synchronous_commit = off` (see `mail::delivery`): never used for a commit that
    /// answers SUCCESS.
    pub(crate) chunk_pool: Pool,
    pub(crate) opts: PgOptions,
    pub(crate) metrics: std::sync::Arc<StoreMetrics>,
    /// The failure that made the store degraded, and since when (Unix s).
    degraded: Mutex<Option<(String, u64)>>,
}

/// A count or time as PostgreSQL's `bigint` (saturating: nothing here comes near).
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` read back (a negative one, which we never write, as 0).
pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the pool (no connection is made yet). Dead connections are dropped when
/// taken from the pool (`RecyclingMethod::Fast` checks the socket), so the pool
/// reconnects by itself after the database comes back.
pub(crate) fn make_pool(url: &str, opts: &PgOptions, bridge: &Bridge) -> Result<Pool, PgError> {
    make_pool_of(url, opts, bridge, PoolKind::Main)
}

/// Which of a node's two pools.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Everything that must be durable when it returns (`pool_size` connections).
    Main,
    /// Chunks of large messages: sessions with `synchronous_commit = off`
    /// (`pool_size / 2` connections, at least 2).
    Chunks,
}

pub(crate) fn make_pool_of(
    url: &str,
    opts: &PgOptions,
    bridge: &Bridge,
    kind: PoolKind,
) -> Result<Pool, PgError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| PgError::Url(chain(&e)))?;
    pg.connect_timeout(opts.op_timeout.min(Duration::from_secs(5)))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("cmtpd");
    let size = match kind {
        PoolKind::Main => opts.pool_size.max(2),
        PoolKind::Chunks => {
            // Appended to any options of the URL: the server applies the last setting.
            let mut o = pg.get_options().unwrap_or_default().to_owned();
            o.push_str(" -c synchronous_commit=off");
            pg.options(o.trim_start());
            (opts.pool_size / 2).max(2)
        }
    };
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    bridge.enter(|| {
        Pool::builder(mgr)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(opts.op_timeout),
                create: Some(opts.op_timeout),
                recycle: Some(opts.op_timeout),
            })
            .build()
            .map_err(|e| PgError::Database(e.to_string()))
    })
}

/// An error and its causes, each once.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            let _ = write!(out, ": {s}");
        }
        cur = c.source();
    }
    out
}

/// Whether a PostgreSQL error means the database is unavailable (the connection, the
/// server, its resources) rather than that one statement was refused.
fn is_outage(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            ["08", "53", "57", "58", "XX"]
                .iter()
                .any(|p| c.starts_with(p))
        }
    }
}

impl Shared {
    pub(crate) fn new(
        pool: Pool,
        chunk_pool: Pool,
        opts: PgOptions,
        metrics: std::sync::Arc<StoreMetrics>,
    ) -> Self {
        Self {
            pool,
            chunk_pool,
            opts,
            metrics,
            degraded: Mutex::new(None),
        }
    }

    /// The store's health: degraded from the first failure of the database until a
    /// write (or the background probe) succeeds again.
    pub(crate) fn health(&self) -> StoreHealth {
        match &*self.degraded.lock() {
            None => StoreHealth::Ok,
            Some((reason, since)) => StoreHealth::Degraded {
                reason: reason.clone(),
                since: *since,
            },
        }
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.lock().is_some()
    }

    /// Records a failure that means the database is unavailable.
    pub(crate) fn mark_degraded(&self, reason: &str) {
        let mut d = self.degraded.lock();
        if d.is_none() {
            tracing::warn!(reason, "database unavailable: the store is degraded");
            *d = Some((reason.to_owned(), unix_now()));
        }
    }

    /// Records that the database answered a write: healthy again.
    pub(crate) fn mark_ok(&self) {
        let mut d = self.degraded.lock();
        if d.take().is_some() {
            tracing::info!("database reachable again: the store is healthy");
        }
    }

    /// Maps a statement's error, marking the store degraded on an outage.
    pub(crate) fn pg(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        let msg = format!("{what}: {}", chain(&e));
        if is_outage(&e) {
            self.mark_degraded(&msg);
        }
        StoreError::Database(msg)
    }

    /// Maps a failure to get a connection (always an outage).
    pub(crate) fn pool_err(&self, what: &str, e: PoolError) -> StoreError {
        let msg = format!("{what}: {}", chain(&e));
        self.mark_degraded(&msg);
        StoreError::Database(msg)
    }

    /// A pooled connection whose session commits without waiting for the WAL flush
    /// (chunks of large messages only).
    pub(crate) async fn chunk_conn(
        &self,
        what: &str,
    ) -> cmtp_store::Result<deadpool_postgres::Object> {
        self.chunk_pool
            .get()
            .await
            .map_err(|e| self.pool_err(what, e))
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self, what: &str) -> cmtp_store::Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| self.pool_err(what, e))
    }
}
