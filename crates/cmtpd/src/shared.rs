//! What every connection of one server shares: configuration, the signer, the store,
//! counters and limiters. Generic over the store, so a second backend is a new type that
//! implements the store traits, not an edit of every handler.

use bytes::Bytes;
use cmtp_store::{MailStore, StoreHealth, UserStore};

use crate::config::Config;
use crate::keys::Signer;
use crate::metrics::{Histogram, Metrics};
use crate::quota::QuotaGate;
use crate::ratelimit::{Limiter, MailboxLimiter};
use crate::relay::Relay;

/// A storage backend the server can run on: users and mailboxes.
pub trait Backend: UserStore + MailStore {}

impl<T: UserStore + MailStore> Backend for T {}

/// Everything connections share.
pub struct Shared<S> {
    /// The configuration in force.
    pub config: Config,
    /// The server key and pre-signed replies.
    pub signer: Signer,
    /// Users and mail.
    pub store: S,
    /// Counters.
    pub metrics: Metrics,
    /// Per-address connection counts and rate buckets.
    pub limiter: Limiter,
    /// Per-recipient-mailbox MAIL rate buckets.
    pub mailbox_rates: MailboxLimiter,
    /// Quota reservations of deliveries in flight.
    pub quotas: QuotaGate,
    /// Policy for foreign domains.
    pub relay: Relay,
    /// The greeting, encoded once.
    pub greeting: Bytes,
    /// The OHAI answer, encoded once.
    pub ohai: Bytes,
}

impl<S: Backend> Shared<S> {
    /// Whether `domain` (empty = ours) is one of the local domains.
    pub fn is_local(&self, domain: &str) -> bool {
        // Byte for byte, no case folding (docs/protocol.md §4).
        domain.is_empty() || self.config.domains.iter().any(|d| d == domain)
    }

    /// Whether the store accepts writes now, and if not why (for `/health`).
    pub fn health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Renders `/metrics`.
    pub fn render_metrics(&self) -> String {
        let snap = self.store.metrics();
        let mut cum = 0;
        let mut h = Histogram::default();
        for (i, bound) in cmtp_store::FSYNC_BUCKETS_US.iter().enumerate() {
            cum += snap.fsync_hist.get(i).copied().unwrap_or(0);
            h.buckets.push((*bound as f64 / 1e6, cum));
        }
        h.count = snap.fsyncs;
        h.sum = snap.fsync_total_us as f64 / 1e6;
        let writable = u64::from(self.store.health() == StoreHealth::Ok);
        let extra = [
            (
                "cmtpd_store_commits_total",
                "Group commits made durable by the store.",
                "counter",
                snap.batches,
            ),
            (
                "cmtpd_store_records_total",
                "Records written by the store.",
                "counter",
                snap.records,
            ),
            (
                "cmtpd_store_bytes_total",
                "Bytes appended to the store's log.",
                "counter",
                snap.bytes,
            ),
            (
                "cmtpd_store_write_failures_total",
                "Store writes or fsyncs that failed (each fails its batch; nothing of it is acknowledged).",
                "counter",
                snap.write_failures,
            ),
            (
                "cmtpd_store_prealloc_fallbacks_total",
                "Segment preallocations that failed (the store then appends without them).",
                "counter",
                snap.prealloc_fallbacks,
            ),
            (
                "cmtpd_store_writable",
                "1 while the store accepts writes, 0 while it refuses them (disk full, I/O error).",
                "gauge",
                writable,
            ),
        ];
        self.metrics.render(Some(&h), &extra)
    }
}
