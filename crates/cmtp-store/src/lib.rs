//! Storage for `cmtpd`: users, mailboxes and the pinned keys of remote servers behind
//! small, backend-neutral traits ([`UserStore`], [`MailStore`], [`PeerStore`]), with an
//! embedded crash-safe default backend ([`EmbeddedStore`] = [`FsUsers`] + [`LogMail`] +
//! [`FsPeers`]).
//!
//! The contract that matters: [`Delivery::commit`] resolves only once the message (data
//! and metadata) is durable on disk, so the server may answer SUCCESS right after it.
//! Concurrent commits share one `fdatasync` (group commit). See `docs/storage.md`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod clock;
mod embedded;
mod error;
mod fsutil;
mod log;
mod metrics;
mod path_safe;
mod peers;
mod record;
mod users;

use std::collections::BTreeMap;
use std::future::Future;

pub use embedded::EmbeddedStore;
pub use error::{Result, StoreError};
pub use log::{LogDelivery, LogMail, MessageReader, Options};
pub use metrics::{BATCH_BUCKETS, FSYNC_BUCKETS_US, MetricsSnapshot, PoolSnapshot, StoreMetrics};
pub use path_safe::ensure_path_safe;
pub use peers::{FsPeers, PeerKey, PeerStore};
pub use users::FsUsers;

/// Checks that message metadata fits every backend: each string at most 255 bytes, the
/// note at most [`MAX_NOTE`] bytes, the mailbox `""` or path-safe. A failure is
/// [`StoreError::InvalidMeta`] or [`StoreError::InvalidName`].
pub fn validate_meta(meta: &MessageMeta) -> Result<()> {
    record::check_meta(meta)
}

/// Checks a mailbox name as [`validate_meta`] does: `""` (the postmaster's) or
/// path-safe.
pub fn validate_mailbox(mailbox: &str) -> Result<()> {
    record::check_mailbox(mailbox)
}

/// Checks a note's length (at most [`MAX_NOTE`] bytes) as [`MailStore::set_note`] does.
pub fn validate_note(note: &[u8]) -> Result<()> {
    record::check_note(note)
}

/// One user account as stored: the account name, its Ed25519 public key, the xzibit
/// (the encrypted private key blob, opaque to the store) and its creation time.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Account name (one safe path component, see [`ensure_path_safe`]; the protocol's
    /// stricter rule is the caller's).
    pub name: String,
    /// Ed25519 public key, 32 raw bytes.
    pub public_key: [u8; 32],
    /// The xzibit, raw bytes exactly as imported.
    pub xzibit: Vec<u8>,
    /// Creation time, Unix seconds.
    pub created: u64,
}

impl std::fmt::Debug for UserRecord {
    // The xzibit is an encrypted secret: keep it out of logs, show only its length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("public_key", &hex::encode(self.public_key))
            .field("xzibit_len", &self.xzibit.len())
            .field("created", &self.created)
            .finish()
    }
}

/// User accounts. Synchronous: records are a few small files (or one row).
///
/// Every call reads the backing store afresh, so changes made by another process (the
/// admin CLI) are seen at once.
pub trait UserStore: Send + Sync + 'static {
    /// The whole record, or `None` if there is no such user.
    fn get(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Only the public key (the hot path: KEY requests).
    fn public_key(&self, name: &str) -> Result<Option<[u8; 32]>>;
    /// Only the xzibit (LOGIN).
    fn xzibit(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Adds a user durably; [`StoreError::AlreadyExists`] if the name is taken.
    fn add(&self, user: &UserRecord) -> Result<()>;
    /// Removes a user durably; `false` if there was none.
    fn remove(&self, name: &str) -> Result<bool>;
    /// All users, sorted by name.
    fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// The user's OPAQUE login (docs/protocol.md D8): bytes opaque to the store (the
    /// server keeps the registration record and its time there), `None` when the user
    /// has none or does not exist. Optional: a backend without it has no OPAQUE logins,
    /// and every account logs in the CMTP/1 way.
    fn opaque_login(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let _ = name;
        Ok(None)
    }

    /// Replaces the user's OPAQUE login, and its xzibit too when `xzibit` is given (a
    /// password change), durably and both at once: a crash leaves the old pair or the
    /// new one, never a mix (which would lock the user out). `false` if there is no
    /// such user. The default refuses ([`StoreError::Unsupported`]).
    fn set_opaque_login(&self, name: &str, login: &[u8], xzibit: Option<&[u8]>) -> Result<bool> {
        let _ = (name, login, xzibit);
        Err(StoreError::Unsupported("OPAQUE logins"))
    }
}

/// Largest [`MessageMeta::note`], in bytes.
pub const MAX_NOTE: usize = 4096;

/// The mailbox where the server keeps mail queued for other domains (federation).
///
/// A mailbox name the protocol's name rule forbids (it contains `\`), so no account can
/// ever own it; it is path-safe ([`ensure_path_safe`]) like any mailbox name. Keeping the
/// relay queue in the mail log gives queued mail the log's group commit and crash
/// safety. The store treats it like any mailbox (it appears in [`StoreStats`]); the
/// server hides it from users and from its own mailbox figures.
pub const RELAY_QUEUE: &str = "\\queue";

/// What the server knows about a message when it commits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Destination mailbox (account name); `""` is the server's own (postmaster).
    pub mailbox: String,
    /// Sender account (≤ 255 bytes).
    pub src_account: String,
    /// Sender domain (≤ 255 bytes).
    pub src_domain: String,
    /// Message (crypto) version from the envelope.
    pub version: u32,
    /// Number of attachments.
    pub attachment_count: u32,
    /// Byte offset in the stored message where the body ends (length of a `head` fetch).
    pub body_end: u64,
    /// Opaque annotation kept with the message (at most [`MAX_NOTE`] bytes), replaceable
    /// later with [`MailStore::set_note`]. The relay queue keeps each queued message's
    /// delivery state (destination, attempts, next attempt, last error) here.
    pub note: Vec<u8>,
    /// The identifier a relaying server gave this message (carried in its log entry),
    /// if any: the store remembers the relay ids of messages committed in the last
    /// [`Options::relay_id_window_secs`] (deleted or not), see
    /// [`MailStore::seen_relay_id`].
    pub relay_id: Option<[u8; 16]>,
}

/// A stored message's listing entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Message id in its mailbox's own sequence (1, 2, 3, … per mailbox): unique in the
    /// mailbox, never reused there (even after deletion), ascending in arrival order: a
    /// message committed to a mailbox after another always has a larger id. Ids of
    /// different mailboxes are unrelated, so a user's ids reveal nothing of others' mail.
    pub id: u64,
    /// Commit time, Unix seconds.
    pub received: u64,
    /// Size of the stored bytes.
    pub size: u64,
    /// Metadata given at commit.
    pub meta: MessageMeta,
}

/// Per-mailbox figures in [`StoreStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// Live messages.
    pub messages: u64,
    /// Sum of their sizes.
    pub bytes: u64,
}

/// Store-wide figures (the admin CLI's `mailbox stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Live messages in all mailboxes.
    pub messages: u64,
    /// Sum of the live messages' sizes.
    pub bytes: u64,
    /// Per mailbox (`""` = postmaster).
    pub mailboxes: BTreeMap<String, MailboxStats>,
    /// Number of log segments (0 for backends without segments).
    pub segments: u64,
    /// Bytes of all segment files.
    pub log_bytes: u64,
    /// Segment bytes belonging to live records.
    pub live_bytes: u64,
    /// Segment bytes of deleted messages, tombstones and superseded (or orphaned) note
    /// records, reclaimable by a compaction that does not exist yet.
    pub dead_bytes: u64,
    /// Live messages stored in their own blob file (larger than the inline threshold, or
    /// received while the inline budget was used up).
    pub blobs: u64,
    /// Sum of those blob files' sizes.
    pub blob_bytes: u64,
}

/// A streamed read of one stored message, in chunks, with bounded memory.
pub trait MessageRead: Send {
    /// The next chunk of at most `max` bytes (`max` ≥ 1), or `None` at the end.
    fn read_chunk(&mut self, max: usize) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Bytes not yet returned.
    fn remaining(&self) -> u64;
}

/// A message being received: bytes are written as they arrive, then committed.
/// Dropping it without `commit` aborts: nothing becomes visible, temporary data is removed.
pub trait Delivery: Send + 'static {
    /// Appends bytes to the message. Memory stays bounded: large messages go to disk.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<()>> + Send;
    /// Commits the message; resolves with its id only once it is durable (SUCCESS may
    /// be sent then). The stored message is exactly the bytes written.
    fn commit(self, meta: MessageMeta) -> impl Future<Output = Result<u64>> + Send;
    /// Like [`Delivery::commit`], but only if the mailbox is under `limit` when the
    /// message goes in (fewer committed messages than `limit.messages` and fewer bytes
    /// than `limit.bytes`), checked atomically with the commit; else
    /// [`StoreError::OverQuota`] and nothing is stored.
    ///
    /// The default commits unchecked: a store with one writing process leaves the check
    /// to its caller, whose reservations see every delivery in flight (cmtpd's quota
    /// gate). A store that several processes write (PostgreSQL) must check here, since
    /// one process cannot see another's deliveries in flight.
    fn commit_within(
        self,
        meta: MessageMeta,
        limit: MailboxLimit,
    ) -> impl Future<Output = Result<u64>> + Send
    where
        Self: Sized,
    {
        let _ = limit;
        self.commit(meta)
    }
}

/// A mailbox's quota, for [`Delivery::commit_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimit {
    /// Most messages.
    pub messages: u64,
    /// Most stored bytes (the last message admitted may cross it, as with the messages
    /// in flight of a quota check made before the bytes arrive).
    pub bytes: u64,
}

/// Mailboxes: append-only delivery, listing, streamed reads, deletion.
pub trait MailStore: Send + Sync + 'static {
    /// The streaming delivery type.
    type Delivery: Delivery;
    /// The streamed reader type.
    type Reader: MessageRead;
    /// Starts a streaming delivery.
    fn begin(&self) -> Self::Delivery;
    /// The mailbox's messages in ascending id order.
    fn list(&self, mailbox: &str) -> impl Future<Output = Result<Vec<MessageInfo>>> + Send;
    /// At most `max` of the mailbox's messages with an id above `after_id`, ascending:
    /// a listing in batches (pass the last id of one batch as `after_id` of the next), so
    /// a long mailbox is streamed without copying it whole. Messages committed meanwhile
    /// have larger ids and show up at the end.
    ///
    /// The default filters [`MailStore::list`]; backends override it with a range scan.
    fn list_range(
        &self,
        mailbox: &str,
        after_id: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<MessageInfo>>> + Send {
        async move {
            let all = self.list(mailbox).await?;
            Ok(all
                .into_iter()
                .filter(|i| i.id > after_id)
                .take(max)
                .collect())
        }
    }
    /// One message and a reader over its exact bytes, or `None` if it does not exist.
    fn open(
        &self,
        mailbox: &str,
        id: u64,
    ) -> impl Future<Output = Result<Option<(MessageInfo, Self::Reader)>>> + Send;
    /// Deletes a message; durable when it resolves; `false` if there was none.
    fn delete(&self, mailbox: &str, id: u64) -> impl Future<Output = Result<bool>> + Send;
    /// Replaces the [`MessageMeta::note`] of a live message; durable when it resolves
    /// (group-committed like a delete); `false` if there is no such message. A note over
    /// [`MAX_NOTE`] bytes is [`StoreError::InvalidMeta`].
    fn set_note(
        &self,
        mailbox: &str,
        id: u64,
        note: Vec<u8>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Claims messages for one node's delivery attempt (the relay queue shared by several
    /// nodes, docs/scale-out.md): each message of `ids` is leased to `owner` until
    /// `until` (Unix seconds) unless another owner holds a lease that has not ended at
    /// `now`. One answer per id, in order. A claim is atomic: of two nodes claiming the
    /// same free message at once, exactly one gets [`Claim::Granted`]. Re-claiming one's
    /// own lease extends (or shortens) it.
    ///
    /// The default, for a store only one server process writes (the embedded one),
    /// grants every message that exists: there is nobody to share the queue with.
    fn claim(
        &self,
        mailbox: &str,
        ids: &[u64],
        owner: &str,
        until: u64,
        now: u64,
    ) -> impl Future<Output = Result<Vec<Claim>>> + Send {
        let _ = (owner, until, now);
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                let found = self.list_range(mailbox, id.saturating_sub(1), 1).await?;
                out.push(match found.into_iter().next() {
                    Some(info) if info.id == id => Claim::Granted(info),
                    _ => Claim::Gone,
                });
            }
            Ok(out)
        }
    }
    /// Whether a message carrying this [`MessageMeta::relay_id`] was committed within the
    /// backend's window (the embedded one: [`Options::relay_id_window_secs`]), even if it
    /// was deleted since: a relayed message sent again is then recognised. O(1).
    ///
    /// The default says `false`: a backend without it simply does not deduplicate.
    fn seen_relay_id(&self, relay_id: &[u8; 16]) -> bool {
        let _ = relay_id;
        false
    }
    /// `(messages, bytes)` of one mailbox (0, 0 if it has none), for per-mailbox quotas.
    /// O(1) in the embedded backend (running totals in its index). Fails closed: an
    /// error is an error, never an empty mailbox (a quota must not open on a failure).
    ///
    /// The default derives it from [`MailStore::stats`] and propagates its error.
    fn mailbox_usage(&self, mailbox: &str) -> Result<(u64, u64)> {
        let s = self.stats()?;
        Ok(s.mailboxes
            .get(mailbox)
            .map_or((0, 0), |m| (m.messages, m.bytes)))
    }
    /// Store-wide figures.
    fn stats(&self) -> Result<StoreStats>;
    /// Durability-commit observations (batches, batch sizes, fsync latency, write
    /// failures) for metrics.
    fn metrics(&self) -> MetricsSnapshot;
    /// Whether writes work right now, for the server's health report.
    fn health(&self) -> StoreHealth;
}

/// One answer of [`MailStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is the caller's; the message as stored now (its note may have been
    /// rewritten by the node that held it before).
    Granted(MessageInfo),
    /// Another owner's lease runs until `until` (Unix seconds).
    Held {
        /// Who holds it.
        owner: String,
        /// When the lease ends.
        until: u64,
    },
    /// No such message (delivered, dropped or given up meanwhile).
    Gone,
}

/// Writing what another store holds as it was there, for moving an installation
/// (`cmtpd store copy`): messages keep their ids and receive times, peer records their
/// times, and ids are never reused. A separate trait: only a copy's target needs it
/// (today the PostgreSQL backend).
pub trait StoreImport: MailStore {
    /// Whether the store holds nothing: no user, message, mailbox or peer record. A copy
    /// goes only into an empty store, so ids and names cannot collide.
    fn is_empty(&self) -> Result<bool>;
    /// Commits `delivery` (all its bytes written) as `info` says: message `info.id` of
    /// `info.meta.mailbox`, received at `info.received`. The mailbox's later ids follow
    /// the largest imported one. [`StoreError::AlreadyExists`] if the id is taken,
    /// [`StoreError::InvalidMeta`] if `info.size` is not the number of bytes written.
    /// Durable once [`StoreImport::finish`] has returned (it may be sooner).
    fn import(
        &self,
        delivery: Self::Delivery,
        info: MessageInfo,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Makes the ids of `mailbox` continue after `last_id` (which messages deleted in the
    /// source may have used), even if the mailbox has no message.
    fn reserve_ids(&self, mailbox: &str, last_id: u64) -> impl Future<Output = Result<()>> + Send;
    /// Remembers relay ids ([`MailStore::seen_relay_id`]) as committed at the given
    /// times (Unix s).
    fn import_relay_ids(
        &self,
        ids: Vec<([u8; 16], u64)>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Writes a domain's peer record as it was: its pinned key (with its time and any
    /// refused offer) if `peer` is given, and its TLS mark.
    fn import_peer(&self, domain: &str, peer: Option<&PeerKey>, tls: bool) -> Result<()>;
    /// Makes everything imported so far durable (one synchronous commit).
    fn finish(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Whether the store accepts writes, as [`MailStore::health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Writes work (or none has failed since the last one that worked).
    Ok,
    /// The last write or fsync failed and none has succeeded since: deliveries are
    /// failing now. The store retries with each new delivery (repairing its log first)
    /// and is `Ok` again once one is durable; no restart is needed.
    Degraded {
        /// What failed and the OS error, e.g. "writing the log: No space left on device".
        reason: String,
        /// Unix seconds of the first failure of this episode.
        since: u64,
    },
}
