//! PostgreSQL backend of the `cmtp-store` traits ([`UserStore`], [`MailStore`],
//! [`PeerStore`]): several stateless `cmtpd` nodes share one database.
//!
//! - Schema: versioned plain-SQL migrations ([`migrate`]); [`PgStore::connect`] refuses
//!   a database whose schema it does not know (missing, older or newer).
//! - Message bytes are rows of 256 KiB in `message_chunks`, streamed in and out, so a
//!   message of any size costs one chunk of memory.
//! - [`Delivery::commit`] resolves only after the transaction that holds the message
//!   has committed with `synchronous_commit = on`; concurrent commits of a node are
//!   batched into one transaction by a committer task (group commit).
//! - Per-mailbox ids come from a `mailboxes` row updated in the commit transaction, so
//!   they are unique and ascending across nodes.
//!
//! The store owns a small Tokio runtime of its own on which every database call runs:
//! it works from any caller (async handlers, the synchronous traits, admin commands),
//! and the synchronous [`UserStore`] / [`PeerStore`] calls block their caller for one
//! round trip (bounded by [`PgOptions::op_timeout`]), as the embedded backend blocks on
//! a file read. See docs/storage.md, "PostgreSQL backend".

#![warn(missing_docs)]

mod bridge;
mod mail;
mod peers;
mod schema;
mod state;
mod users;

use std::sync::Arc;
use std::time::Duration;

pub use mail::{CHUNK, PgDelivery, PgReader};
pub use schema::{LATEST_VERSION, MigrateReport};

use cmtp_store::{
    Claim, MailStore, MessageInfo, MetricsSnapshot, PeerKey, PeerStore, PoolSnapshot, Result,
    StoreHealth, StoreStats, UserRecord, UserStore,
};

use bridge::Bridge;
use state::Shared;

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The database cannot be reached or refused a statement.
    #[error("database unreachable or failing: {0}")]
    Database(String),
    /// The database has no Cipher Mail schema.
    #[error("the database has no Cipher Mail schema: run `cmtpd db migrate` first")]
    SchemaMissing,
    /// The schema is older than this build: migrate first.
    #[error(
        "the database schema is version {found}, this build needs {expected}: run `cmtpd db migrate`"
    )]
    SchemaOutdated {
        /// Version found in the database.
        found: i32,
        /// Version this build needs.
        expected: i32,
    },
    /// The schema is newer than this build knows: refuse rather than misread it.
    #[error(
        "the database schema is version {found}, newer than this build knows ({expected}): upgrade cmtpd"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i32,
        /// Newest version this build knows.
        expected: i32,
    },
    /// The store's runtime could not be started.
    #[error("starting the store's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Settings of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this node opens (the committer takes one at a time).
    pub pool_size: usize,
    /// Bound on one database call (and on waiting for a connection): a lost database
    /// turns into an error after this long rather than a hang.
    pub op_timeout: Duration,
    /// Most deliveries one group commit holds.
    pub max_batch: usize,
    /// Committer tasks per node (transactions being committed at once). 1 by default:
    /// measured here, 2 gave no more throughput and 4 less (smaller batches waiting on
    /// the same mailbox rows), see docs/performance.md.
    pub committers: usize,
    /// Most bytes of inline message data one group commit holds.
    pub max_batch_bytes: usize,
    /// How long relay ids are remembered (seconds), like the embedded store's window.
    pub relay_id_window_secs: u64,
    /// Uploads (large deliveries) older than this are swept as abandoned (seconds).
    pub abandoned_upload_secs: u64,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            op_timeout: Duration::from_secs(10),
            max_batch: 256,
            committers: 1,
            max_batch_bytes: 16 << 20,
            relay_id_window_secs: 7 * 24 * 3600,
            abandoned_upload_secs: 24 * 3600,
        }
    }
}

/// Applies the migrations this build knows to the database at `url` (idempotent; safe
/// to run from several nodes at once: they take turns on an advisory lock).
pub fn migrate(url: &str) -> Result<MigrateReport, PgError> {
    let bridge = Bridge::new()?;
    let pool = state::make_pool(url, &PgOptions::default(), &bridge)?;
    bridge.block(async move { schema::migrate(&pool).await })?
}

/// Users, mail and pinned peer keys in one PostgreSQL database; implements
/// [`UserStore`], [`MailStore`] and [`PeerStore`]. One per node; share it in an `Arc`.
pub struct PgStore {
    shared: Arc<Shared>,
    bridge: Bridge,
    committer: tokio::sync::mpsc::Sender<mail::CommitRequest>,
}

impl PgStore {
    /// Connects, checks the schema version (refusing one it does not know) and starts
    /// the committer and the background sweeper. Fails with a clear error when the
    /// database is unreachable.
    pub fn connect(url: &str, opts: PgOptions) -> Result<Self, PgError> {
        let bridge = Bridge::new()?.with_timeout(opts.op_timeout);
        let pool = state::make_pool(url, &opts, &bridge)?;
        let p = pool.clone();
        bridge.block(async move { schema::check(&p).await })??;
        let shared = Arc::new(Shared::new(pool, opts, bridge.metrics().clone()));
        let committer = bridge.enter(|| mail::start_background(&shared));
        Ok(Self {
            shared,
            bridge,
            committer,
        })
    }

    /// Removes what abandoned large deliveries left and relay ids past the window now
    /// (the background sweeper does this hourly). Returns the uploads removed.
    pub fn sweep(&self) -> Result<u64> {
        let sh = self.shared.clone();
        self.bridge
            .block_store(async move { mail::sweep(&sh).await })
    }

    /// Bytes the database uses on disk (`pg_database_size`), for the retention report.
    pub fn database_size(&self) -> Result<u64> {
        let sh = self.shared.clone();
        self.bridge
            .block_store(async move { mail::database_size(&sh).await })
    }
}

impl UserStore for PgStore {
    fn get(&self, name: &str) -> Result<Option<UserRecord>> {
        users::get(self, name)
    }
    fn public_key(&self, name: &str) -> Result<Option<[u8; 32]>> {
        users::public_key(self, name)
    }
    fn xzibit(&self, name: &str) -> Result<Option<Vec<u8>>> {
        users::xzibit(self, name)
    }
    fn add(&self, user: &UserRecord) -> Result<()> {
        users::add(self, user)
    }
    fn remove(&self, name: &str) -> Result<bool> {
        users::remove(self, name)
    }
    fn list_users(&self) -> Result<Vec<UserRecord>> {
        users::list(self)
    }
    fn opaque_login(&self, name: &str) -> Result<Option<Vec<u8>>> {
        users::opaque_login(self, name)
    }
    fn set_opaque_login(&self, name: &str, login: &[u8], xzibit: Option<&[u8]>) -> Result<bool> {
        users::set_opaque_login(self, name, login, xzibit)
    }
}

impl PeerStore for PgStore {
    fn peer_key(&self, domain: &str) -> Result<Option<PeerKey>> {
        peers::get(self, domain)
    }
    fn pin_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        peers::pin(self, domain, key)
    }
    fn offer_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        peers::offer(self, domain, key)
    }
    fn list_peer_keys(&self) -> Result<Vec<PeerKey>> {
        peers::list(self)
    }
    fn peer_tls(&self, domain: &str) -> Result<bool> {
        peers::tls(self, domain)
    }
    fn set_peer_tls(&self, domain: &str) -> Result<()> {
        peers::set_tls(self, domain)
    }
}

impl MailStore for PgStore {
    type Delivery = PgDelivery;
    type Reader = PgReader;
    fn begin(&self) -> PgDelivery {
        PgDelivery::new(
            self.shared.clone(),
            self.bridge.clone(),
            self.committer.clone(),
        )
    }
    async fn list(&self, mailbox: &str) -> Result<Vec<MessageInfo>> {
        self.list_range(mailbox, 0, usize::MAX).await
    }
    async fn list_range(
        &self,
        mailbox: &str,
        after_id: u64,
        max: usize,
    ) -> Result<Vec<MessageInfo>> {
        mail::list_range(self, mailbox, after_id, max).await
    }
    async fn open(&self, mailbox: &str, id: u64) -> Result<Option<(MessageInfo, PgReader)>> {
        mail::open(self, mailbox, id).await
    }
    async fn delete(&self, mailbox: &str, id: u64) -> Result<bool> {
        mail::delete(self, mailbox, id).await
    }
    async fn set_note(&self, mailbox: &str, id: u64, note: Vec<u8>) -> Result<bool> {
        mail::set_note(self, mailbox, id, note).await
    }
    async fn claim(
        &self,
        mailbox: &str,
        ids: &[u64],
        owner: &str,
        until: u64,
        now: u64,
    ) -> Result<Vec<Claim>> {
        mail::claim(self, mailbox, ids, owner, until, now).await
    }
    fn seen_relay_id(&self, relay_id: &[u8; 16]) -> bool {
        mail::seen_relay_id(self, relay_id)
    }
    fn mailbox_usage(&self, mailbox: &str) -> Result<(u64, u64)> {
        mail::mailbox_usage(self, mailbox)
    }
    fn stats(&self) -> Result<StoreStats> {
        mail::stats(self)
    }
    fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.shared.metrics.snapshot();
        let st = self.shared.pool.status();
        m.pool = Some(PoolSnapshot {
            max: st.max_size as u64,
            open: st.size as u64,
            idle: u64::try_from(st.available).unwrap_or(0),
            waiting: st.waiting as u64,
        });
        m
    }
    fn health(&self) -> StoreHealth {
        self.shared.health()
    }
}
