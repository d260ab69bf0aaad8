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
    pub(crate) opts: PgOptions,
    pub(crate) metrics: std::sync::Arc<StoreMetrics>,
    /// The failure that made the store degraded, and since when (Unix s).
    degraded: Mutex<Option<(String, u64)>>,
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
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| PgError::Url(chain(&e)))?;
    pg.connect_timeout(opts.op_timeout.min(Duration::from_secs(5)))
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("cmtpd");
    let mgr = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    bridge.enter(|| {
        Pool::builder(mgr)
            .max_size(opts.pool_size.max(2))
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
    pub(crate) fn new(pool: Pool, opts: PgOptions, metrics: std::sync::Arc<StoreMetrics>) -> Self {
        Self {
            pool,
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

    /// A pooled connection.
    pub(crate) async fn conn(&self, what: &str) -> cmtp_store::Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| self.pool_err(what, e))
    }
}
