//! The store's own Tokio runtime: every database call runs there, whatever the caller.
//!
//! Async trait methods spawn onto it and await the result; the synchronous traits
//! ([`cmtp_store::UserStore`], [`cmtp_store::PeerStore`], `mailbox_usage`, …) spawn
//! onto it and wait on a channel — which works from inside another runtime (where
//! `block_on` would panic) and blocks the caller for one round trip, bounded by the
//! operation timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cmtp_store::{Result, StoreError, StoreMetrics};
use tokio::runtime::{Handle, Runtime};

/// Worker threads of the store's runtime: the work is waiting on the database.
const WORKERS: usize = 2;

/// Owns the runtime; shuts it down without waiting (legal inside another runtime,
/// where dropping a `Runtime` normally would panic).
struct RtGuard(Option<Runtime>);

impl Drop for RtGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A handle on the store's runtime, shared by the store, its deliveries and readers;
/// the runtime stops when the last one is dropped.
#[derive(Clone)]
pub(crate) struct Bridge {
    // Held only to keep the runtime alive while any handle exists.
    _rt: Arc<RtGuard>,
    handle: Handle,
    timeout: Duration,
    /// Where each store operation's duration is recorded (query latency).
    metrics: Arc<StoreMetrics>,
}

impl Bridge {
    /// Starts the runtime.
    pub(crate) fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("cmtp-store-pg")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(Self {
            _rt: Arc::new(RtGuard(Some(rt))),
            handle,
            timeout: Duration::from_secs(10),
            metrics: Arc::default(),
        })
    }

    /// The same runtime with another bound on each operation.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The metrics operations are recorded in (shared with the store).
    pub(crate) fn metrics(&self) -> &Arc<StoreMetrics> {
        &self.metrics
    }

    /// Runs `f` inside the runtime's context (to spawn tasks from synchronous code).
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.handle.enter();
        f()
    }

    /// Spawns a task that outlives its caller (cleanup of an abandoned delivery).
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        drop(self.handle.spawn(fut));
    }

    /// Runs `fut` on the runtime and blocks until it finishes, with no time bound (opening
    /// and migrating, where the pool's own connect timeout applies); an error if the task
    /// panicked.
    pub(crate) fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> std::result::Result<T, crate::PgError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| crate::PgError::Database("the store's task stopped".into()))
    }

    /// Runs a store operation on the runtime and blocks until it finishes or the
    /// operation timeout passes (then [`StoreError::Database`]).
    pub(crate) fn block_store<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        let metrics = self.metrics.clone();
        self.handle.spawn(async move {
            let started = std::time::Instant::now();
            let r = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(timed_out(timeout)),
            };
            metrics.observe_query(started.elapsed());
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| StoreError::TaskFailed("the store's task stopped".into()))?
    }

    /// Runs a store operation on the runtime and awaits it, bounded by the operation
    /// timeout.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let timeout = self.timeout;
        let metrics = self.metrics.clone();
        self.handle
            .spawn(async move {
                let started = std::time::Instant::now();
                let r = match tokio::time::timeout(timeout, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(timed_out(timeout)),
                };
                metrics.observe_query(started.elapsed());
                r
            })
            .await
            .map_err(|e| StoreError::TaskFailed(e.to_string()))?
    }
}

fn timed_out(t: Duration) -> StoreError {
    StoreError::Database(format!("no answer from the database within {t:?}"))
}
