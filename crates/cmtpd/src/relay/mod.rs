//! Federation, the part connections use: who may relay, where a domain's server is,
//! keys of other domains' users (KEYREQUEST relay with pinned server keys), and the
//! hand-off of newly queued messages to the outbound workers (`crate::outbound`).
//! docs/federation.md tells the whole design.

pub mod keys;
pub mod note;
pub mod peer;
pub mod route;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cmtp_crypto::PublicKey;
use cmtp_store::PeerStore;
use tokio::sync::mpsc;

use crate::config::Federation;
use crate::live::Live;
pub use keys::KeyCache;
pub use note::QueueNote;
pub use peer::{MailVerdict, Peer, PeerError, PeerTimeouts};
pub use route::Router;

/// A message just committed to the relay queue, for the outbound scheduler.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its id in the store's relay-queue mailbox.
    pub id: u64,
    /// Its delivery state.
    pub note: QueueNote,
    /// Sender account and domain (for a bounce).
    pub src_account: String,
    /// Sender domain.
    pub src_domain: String,
}

/// The receiving end of [`Relay::queued`]: the outbound scheduler's inbox.
pub type QueueInbox = mpsc::UnboundedReceiver<Queued>;

/// Counters of the relay side, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Messages accepted into the relay queue.
    pub queued: AtomicU64,
    /// Messages the remote server accepted (signed SUCCESS verified).
    pub delivered: AtomicU64,
    /// Attempts that failed temporarily (the message stays queued).
    pub deferred: AtomicU64,
    /// Messages given up (permanent failure or expiry).
    pub failed: AtomicU64,
    /// Delivery-failure notices written.
    pub bounces: AtomicU64,
    /// Messages recognised as already received (relay id seen) and not stored again.
    pub duplicates: AtomicU64,
    /// Relay attempts refused (no proof, untrusted network, bad signature, hop limit).
    pub refused: AtomicU64,
    /// Remote servers that presented a key other than the pinned one.
    pub key_changes: AtomicU64,
    /// Queued messages found claimed by another node when this one came to send them
    /// (several nodes on one database).
    pub claims_held: AtomicU64,
    /// Messages in the queue now.
    pub depth: AtomicU64,
    /// Unix seconds when the oldest queued message was queued (0 = none).
    pub oldest: AtomicU64,
    /// Relayed KEYREQUESTs answered from the cache.
    pub key_cache_hits: AtomicU64,
    /// Relayed KEYREQUESTs that asked the remote server.
    pub key_lookups: AtomicU64,
}

/// Why a remote server's key is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The domain's pinned key differs: refused until `cmtpd domain trust`.
    #[error(
        "the server of {domain} presented key {presented}, not the pinned {pinned}; \
         refused (after checking, accept it with `cmtpd domain trust {domain}`)"
    )]
    Changed {
        /// The domain.
        domain: String,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the presented key.
        presented: String,
    },
    /// The pin could not be read or written.
    #[error("pinned keys: {0}")]
    Store(#[from] cmtp_store::StoreError),
}

/// Checks `key` against `domain`'s pin, pinning it on first use. A different key is
/// recorded as offered, counted and refused.
pub fn check_pin<P: PeerStore>(
    peers: &P,
    metrics: &RelayMetrics,
    domain: &str,
    key: &PublicKey,
) -> Result<(), PinError> {
    let domain = domain.to_ascii_lowercase();
    match peers.peer_key(&domain)? {
        None => {
            peers.pin_peer_key(&domain, key.as_bytes())?;
            tracing::info!(%domain, fingerprint = %key.fingerprint(), "pinned the key of a new peer domain");
            Ok(())
        }
        Some(p) if &p.key == key.as_bytes() => Ok(()),
        Some(p) => {
            peers.offer_peer_key(&domain, key.as_bytes())?;
            metrics.key_changes.fetch_add(1, Relaxed);
            let pinned = PublicKey::from_bytes(&p.key)
                .map(|k| k.fingerprint())
                .unwrap_or_else(|_| hex::encode(p.key));
            let e = PinError::Changed {
                domain,
                pinned,
                presented: key.fingerprint(),
            };
            tracing::warn!(error = %e, "remote server key changed");
            Err(e)
        }
    }
}

/// Opens a connection to `domain`'s server (TLS when offered, required once seen) and
/// checks its key against the pin ([`check_pin`]); records that the domain offers TLS.
pub async fn open_peer<P: PeerStore>(
    peers: &P,
    metrics: &RelayMetrics,
    domain: &str,
    addrs: &[std::net::SocketAddr],
    timeouts: PeerTimeouts,
) -> Result<Peer, String> {
    let folded = domain.to_ascii_lowercase();
    let tls_seen = peers.peer_tls(&folded).map_err(|e| e.to_string())?;
    let peer = Peer::open(addrs, timeouts, tls_seen)
        .await
        .map_err(|e| e.to_string())?;
    let checked = check_pin(peers, metrics, domain, peer.server_key())
        .map_err(|e| e.to_string())
        .and_then(|()| {
            if peer.is_tls() && !tls_seen {
                peers.set_peer_tls(&folded).map_err(|e| e.to_string())?;
                tracing::info!(%domain, "peer domain offers TLS; required from now on");
            }
            Ok(())
        });
    match checked {
        Ok(()) => Ok(peer),
        Err(e) => {
            peer.close().await;
            Err(e)
        }
    }
}

/// The relay policy and its shared parts.
pub struct Relay {
    /// The `[federation]` settings (replaced on SIGHUP).
    pub config: Live<Federation>,
    /// Where domains' servers are (rebuilt on SIGHUP: routes, DNS).
    pub router: Live<Router>,
    /// Relayed keys of other domains' users.
    pub keys: KeyCache,
    /// Counters.
    pub metrics: RelayMetrics,
    queued: mpsc::UnboundedSender<Queued>,
}

impl Relay {
    /// The relay for `config`, and the inbox the outbound scheduler reads.
    pub fn new(config: Federation) -> Result<(Relay, QueueInbox), String> {
        let router = Router::new(&config)?;
        let keys = KeyCache::new(&config);
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((
            Relay {
                config: Live::new(config),
                router: Live::new(router),
                keys,
                metrics: RelayMetrics::default(),
                queued: tx,
            },
            rx,
        ))
    }

    /// Applies a reloaded `[federation]`: routes and the resolver are rebuilt (a
    /// resolver that cannot be made leaves the old router and is the error).
    pub fn reload(&self, config: Federation) -> Result<(), String> {
        let router = Router::new(&config)?;
        self.router.store(router);
        self.config.store(config);
        Ok(())
    }

    /// Whether plain MAIL from `ip` may be relayed (`trusted_networks`).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.config
            .load()
            .trusted_networks
            .iter()
            .any(|n| n.contains(&ip))
    }

    /// Hands a newly queued message to the outbound scheduler.
    pub fn queued(&self, q: Queued) {
        self.metrics.queued.fetch_add(1, Relaxed);
        // The scheduler lives as long as the server; if it is gone (shutdown), the
        // message stays in the queue and is picked up at the next start.
        let _ = self.queued.send(q);
    }

    /// Timeouts of outgoing connections.
    pub fn timeouts(&self) -> PeerTimeouts {
        PeerTimeouts {
            connect: std::time::Duration::from_secs(self.config.load().connect_timeout_secs),
            reply: std::time::Duration::from_secs(self.config.load().reply_timeout_secs),
        }
    }

    /// The verified key of `user@domain` (a foreign domain), asked of that domain's
    /// server (its key pinned), cached; `None` if it has none or does not answer in time.
    pub async fn key<P: PeerStore>(&self, peers: &P, user: &str, domain: &str) -> Option<[u8; 32]> {
        let domain = domain.to_ascii_lowercase();
        if let Some(hit) = self.keys.get(user, &domain) {
            self.metrics.key_cache_hits.fetch_add(1, Relaxed);
            return hit;
        }
        self.metrics.key_lookups.fetch_add(1, Relaxed);
        let limit = std::time::Duration::from_secs(self.config.load().key_timeout_secs);
        let asked = tokio::time::timeout(limit, self.ask_key(peers, user, &domain)).await;
        match asked {
            Ok(Ok(answer)) => {
                self.keys.put(user, &domain, answer);
                answer
            }
            Ok(Err(why)) => {
                tracing::info!(%domain, error = %why, "relayed KEYREQUEST failed");
                None
            }
            Err(_) => {
                tracing::info!(%domain, "relayed KEYREQUEST timed out");
                None
            }
        }
    }

    async fn ask_key<P: PeerStore>(
        &self,
        peers: &P,
        user: &str,
        domain: &str,
    ) -> Result<Option<[u8; 32]>, String> {
        let addrs = self
            .router
            .load()
            .resolve(domain)
            .await
            .map_err(|e| e.to_string())?;
        let mut peer = open_peer(peers, &self.metrics, domain, &addrs, self.timeouts()).await?;
        let r = peer
            .key_request(user, domain)
            .await
            .map_err(|e| e.to_string());
        peer.close().await;
        r
    }
}
