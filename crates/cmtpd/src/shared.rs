//! What every connection of one server shares: configuration, the signer, the store,
//! counters and limiters. Generic over the store, so a second backend is a new type that
//! implements the store traits, not an edit of every handler.

use bytes::Bytes;
use cmtp_store::{MailStore, PeerStore, StoreHealth, UserStore};

use std::sync::Arc;

use crate::config::{Config, LogAddresses};
use crate::keys::Signer;
use crate::live::Live;
use crate::metrics::{Histogram, Metrics};
use crate::quota::QuotaGate;
use crate::ratelimit::{Limiter, MailboxLimiter};
use crate::relay::Relay;

/// A storage backend the server can run on: users, mailboxes (and the relay queue) and
/// the pinned keys of other domains' servers.
pub trait Backend: UserStore + MailStore + PeerStore {}

impl<T: UserStore + MailStore + PeerStore> Backend for T {}

/// Everything connections share.
pub struct Shared<S> {
    /// The configuration in force (`config.load()`); SIGHUP replaces it ([`Shared::reload`]).
    pub config: Live<Config>,
    /// The key of the hashed addresses in the per-message log (`log_addresses = "hashed"`).
    pub log_key: [u8; 32],
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
    /// Federation: relay policy, routes, relayed keys, the queue's inbox.
    pub relay: Relay,
    /// The greeting, encoded once.
    pub greeting: Bytes,
    /// The OHAI answer on a plain connection, encoded once (offers `TLS` when
    /// `[tls] offer` is on).
    pub ohai: Bytes,
    /// The OPAQUE secrets (docs/protocol.md D8); `None`: the extension is off.
    pub opaque: Option<cmtp_crypto::opaque::ServerSetup>,
    /// Per-account-name buckets of the OPAQUE login.
    pub account_rates: crate::ratelimit::AccountLimiter,
    /// The OHAI answer inside TLS (does not offer `TLS` again).
    pub ohai_tls: Bytes,
    /// The TLS acceptor (server key as raw public key, docs/protocol.md D7); `None` when
    /// TLS is neither offered nor listened for.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The account that receives `postmaster@<local domain>`.
pub const POSTMASTER: &str = "postmaster";

impl<S: Backend> Shared<S> {
    /// Whether `domain` (empty = ours) is one of the local domains. DNS names: compared
    /// case-insensitively (docs/protocol.md §4).
    pub fn is_local(&self, domain: &str) -> bool {
        domain.is_empty()
            || self
                .config
                .load()
                .domains
                .iter()
                .any(|d| cmtp_proto::same_domain(d, domain))
    }

    /// Finds the account `name` denotes, with `lookup` (a store read by exact name):
    /// the canonical form first (so `Alice` reaches `alice`), then the name exactly as
    /// given, for an account stored under a non-canonical name before the rule existed.
    /// Returns the stored name (the mailbox) and what `lookup` found.
    pub fn resolve<T, E>(
        &self,
        name: &str,
        lookup: impl Fn(&str) -> Result<Option<T>, E>,
    ) -> Result<Option<(String, T)>, E> {
        let folded = cmtp_proto::fold(name);
        if let Some(v) = lookup(&folded)? {
            return Ok(Some((folded, v)));
        }
        if folded != name
            && let Some(v) = lookup(name)?
        {
            return Ok(Some((name.to_owned(), v)));
        }
        Ok(None)
    }

    /// Where `postmaster` goes: the configured account (`postmaster = "alice"`), else
    /// `None` (an account named postmaster, if any, else the server's own mailbox).
    pub fn postmaster_alias(&self, account: &str) -> Option<String> {
        let cfg = self.config.load();
        let target = cfg.postmaster.as_ref()?;
        (cmtp_proto::fold(account) == POSTMASTER).then(|| target.clone())
    }

    /// An address as the per-message log shows it: plain, or hashed with the server's log
    /// key (`log_addresses`). Names are folded first, so one address gives one token.
    pub fn log_address(&self, account: &str, domain: &str) -> String {
        let cfg = self.config.load();
        let domain = if domain.is_empty() {
            cfg.primary_domain()
        } else {
            domain
        };
        // The empty account is the server itself: its mailbox is postmaster's.
        let account = if account.is_empty() {
            POSTMASTER
        } else {
            account
        };
        let addr = format!("{}@{}", cmtp_proto::fold(account), cmtp_proto::fold(domain));
        match cfg.log_addresses {
            LogAddresses::Plain => addr.escape_debug().to_string(),
            LogAddresses::Hashed => {
                let h = cmtp_crypto::blake2b_256_keyed(&self.log_key, addr.as_bytes());
                format!("h:{}", hex::encode(&h[..8]))
            }
        }
    }

    /// Puts a reloaded configuration in force (SIGHUP): limits, rates and federation
    /// settings change at once; settings read only at start keep their running values.
    /// Returns the names of those that differed (they need a restart).
    pub fn reload(&self, new: Config) -> Vec<&'static str> {
        let running = self.config.load();
        let (new, mut kept) = new.for_reload(&running);
        if let Err(e) = self.relay.reload(new.federation.clone()) {
            tracing::warn!(error = %e, "federation routes not reloaded");
            kept.push("federation (resolver)");
        }
        self.limiter.reload(
            new.rate.clone(),
            new.limits.max_connections_per_ip,
            new.limits.exempt_networks.clone(),
        );
        self.mailbox_rates
            .reload(new.rate.mailbox_mail_per_sec, new.rate.mailbox_mail_burst);
        self.config.store(new);
        kept
    }

    /// The configuration in force (a shortcut for `config.load()`).
    pub fn cfg(&self) -> Arc<Config> {
        self.config.load()
    }

    /// Whether the store accepts writes now, and if not why (for `/health`).
    pub fn health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Renders `/metrics`.
    pub fn render_metrics(&self) -> String {
        let snap = self.store.metrics();
        let us = 1e-6;
        let mut hists = vec![
            (
                "cmtpd_store_fsync_seconds",
                "Latency of the store's fsync calls (PostgreSQL: the COMMIT round trips).",
                Histogram::from_buckets(
                    &cmtp_store::FSYNC_BUCKETS_US,
                    us,
                    &snap.fsync_hist,
                    snap.fsyncs,
                    snap.fsync_total_us as f64 * us,
                ),
            ),
            (
                "cmtpd_store_commit_batch_size",
                "Records (messages, deletes, notes) made durable by one group commit.",
                Histogram::from_buckets(
                    &cmtp_store::BATCH_BUCKETS,
                    1.0,
                    &snap.batch_hist,
                    snap.batches,
                    snap.records as f64,
                ),
            ),
        ];
        if snap.pool.is_some() {
            hists.push((
                "cmtpd_store_query_seconds",
                "Latency of the store's database operations, waiting for a connection included.",
                Histogram::from_buckets(
                    &cmtp_store::FSYNC_BUCKETS_US,
                    us,
                    &snap.query_hist,
                    snap.queries,
                    snap.query_total_us as f64 * us,
                ),
            ));
        }
        let writable = u64::from(self.store.health() == StoreHealth::Ok);
        let r = &self.relay.metrics;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let oldest = ld(&r.oldest);
        let oldest_age = if oldest == 0 {
            0
        } else {
            crate::unix_now().saturating_sub(oldest)
        };
        let extra = [
            (
                "cmtpd_relay_queue_depth",
                "Messages waiting in the relay queue.",
                "gauge",
                ld(&r.depth),
            ),
            (
                "cmtpd_relay_queue_oldest_age_seconds",
                "Age of the oldest message in the relay queue.",
                "gauge",
                oldest_age,
            ),
            (
                "cmtpd_relay_queued_total",
                "Messages accepted into the relay queue.",
                "counter",
                ld(&r.queued),
            ),
            (
                "cmtpd_relay_delivered_total",
                "Relayed messages the remote server accepted (signed SUCCESS verified).",
                "counter",
                ld(&r.delivered),
            ),
            (
                "cmtpd_relay_deferred_total",
                "Relay attempts that failed temporarily (retried later).",
                "counter",
                ld(&r.deferred),
            ),
            (
                "cmtpd_relay_failed_total",
                "Relayed messages given up (permanent failure or expiry).",
                "counter",
                ld(&r.failed),
            ),
            (
                "cmtpd_relay_bounces_total",
                "Delivery-failure notices written to senders.",
                "counter",
                ld(&r.bounces),
            ),
            (
                "cmtpd_relay_duplicates_total",
                "Received messages recognised as repeats (relay id seen) and not stored again.",
                "counter",
                ld(&r.duplicates),
            ),
            (
                "cmtpd_relay_refused_total",
                "Relay attempts refused (no proof, untrusted network, bad signature, hop limit, no route).",
                "counter",
                ld(&r.refused),
            ),
            (
                "cmtpd_relay_remote_key_changes_total",
                "Remote servers that presented a key other than the pinned one (refused).",
                "counter",
                ld(&r.key_changes),
            ),
            (
                "cmtpd_relay_claims_held_total",
                "Queued messages this node left to another node that held their lease.",
                "counter",
                ld(&r.claims_held),
            ),
            (
                "cmtpd_relay_key_lookups_total",
                "Relayed KEYREQUESTs that asked the remote server.",
                "counter",
                ld(&r.key_lookups),
            ),
            (
                "cmtpd_relay_key_cache_hits_total",
                "Relayed KEYREQUESTs answered from the cache.",
                "counter",
                ld(&r.key_cache_hits),
            ),
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
        let mut extra = extra.to_vec();
        if let Some(p) = &snap.pool {
            extra.extend([
                (
                    "cmtpd_store_pool_max_connections",
                    "Most database connections this node opens.",
                    "gauge",
                    p.max,
                ),
                (
                    "cmtpd_store_pool_open_connections",
                    "Database connections open now.",
                    "gauge",
                    p.open,
                ),
                (
                    "cmtpd_store_pool_idle_connections",
                    "Open database connections not in use.",
                    "gauge",
                    p.idle,
                ),
                (
                    "cmtpd_store_pool_waiting",
                    "Callers waiting for a database connection.",
                    "gauge",
                    p.waiting,
                ),
            ]);
        }
        self.metrics.render(&hists, &extra)
    }
}
