//! Commit observations for the server's metrics: lock-free counters and histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (µs, inclusive) of the fsync-latency buckets; one more bucket counts
/// everything above the last bound.
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Upper bounds (records, inclusive) of the batch-size buckets; one more bucket counts
/// everything above the last bound.
pub const BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Live counters, updated by the writer thread.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    batches: AtomicU64,
    records: AtomicU64,
    fsyncs: AtomicU64,
    bytes: AtomicU64,
    fsync_total_us: AtomicU64,
    fsync_hist: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    batch_hist: [AtomicU64; BATCH_BUCKETS.len() + 1],
    write_failures: AtomicU64,
    prealloc_fallbacks: AtomicU64,
    queries: AtomicU64,
    query_total_us: AtomicU64,
    query_hist: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

/// A copy of [`StoreMetrics`] at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Group commits (batches written and made durable).
    pub batches: u64,
    /// Records in them (messages, blob references, tombstones).
    pub records: u64,
    /// `fdatasync`/`fsync` calls on the log and blob files and directories.
    pub fsyncs: u64,
    /// Bytes appended to the log.
    pub bytes: u64,
    /// Sum of fsync durations, µs.
    pub fsync_total_us: u64,
    /// fsync durations per bucket (see [`FSYNC_BUCKETS_US`]; last = overflow).
    pub fsync_hist: Vec<u64>,
    /// Batch sizes per bucket (see [`BATCH_BUCKETS`]; last = overflow).
    pub batch_hist: Vec<u64>,
    /// Failed writes and fsyncs of the log (each failed its batch; the store repaired
    /// itself before writing again). A full disk counts here.
    pub write_failures: u64,
    /// Preallocation (zero-fill) steps that failed, after which the log was written
    /// without preallocation (harmless, a little slower).
    pub prealloc_fallbacks: u64,
    /// Database operations (backends over a database server; 0 for the embedded
    /// store): each call to the database as the node sees it, waiting for a pooled
    /// connection included.
    pub queries: u64,
    /// Sum of their durations, µs.
    pub query_total_us: u64,
    /// Their durations per bucket (the bounds of [`FSYNC_BUCKETS_US`]; last = overflow).
    pub query_hist: Vec<u64>,
    /// The connection pool now, for backends that have one.
    pub pool: Option<PoolSnapshot>,
}

/// A connection pool's state at one instant (PostgreSQL backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Most connections the pool opens.
    pub max: u64,
    /// Connections open now.
    pub open: u64,
    /// Open connections not in use.
    pub idle: u64,
    /// Callers waiting for a connection.
    pub waiting: u64,
}

impl StoreMetrics {
    /// Records one fsync's duration.
    pub fn observe_fsync(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_total_us.fetch_add(us, Relaxed);
        let i = FSYNC_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.fsync_hist[i].fetch_add(1, Relaxed);
    }

    /// Records one group commit of `records` records and `bytes` bytes.
    pub fn observe_batch(&self, records: u64, bytes: u64) {
        self.batches.fetch_add(1, Relaxed);
        self.records.fetch_add(records, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        let i = BATCH_BUCKETS
            .iter()
            .position(|&b| records <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_hist[i].fetch_add(1, Relaxed);
    }

    /// Records one database operation's duration (waiting for a connection included).
    pub fn observe_query(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.queries.fetch_add(1, Relaxed);
        self.query_total_us.fetch_add(us, Relaxed);
        let i = FSYNC_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.query_hist[i].fetch_add(1, Relaxed);
    }

    /// Records one failed write or fsync of the log.
    pub fn observe_write_failure(&self) {
        self.write_failures.fetch_add(1, Relaxed);
    }

    /// Records one failed preallocation step (the log goes on without it).
    pub fn observe_prealloc_fallback(&self) {
        self.prealloc_fallbacks.fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy (each counter is read atomically).
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            batches: self.batches.load(Relaxed),
            records: self.records.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            fsync_total_us: self.fsync_total_us.load(Relaxed),
            fsync_hist: self.fsync_hist.iter().map(|c| c.load(Relaxed)).collect(),
            batch_hist: self.batch_hist.iter().map(|c| c.load(Relaxed)).collect(),
            write_failures: self.write_failures.load(Relaxed),
            prealloc_fallbacks: self.prealloc_fallbacks.load(Relaxed),
            queries: self.queries.load(Relaxed),
            query_total_us: self.query_total_us.load(Relaxed),
            query_hist: self.query_hist.iter().map(|c| c.load(Relaxed)).collect(),
            pool: None,
        }
    }
}
