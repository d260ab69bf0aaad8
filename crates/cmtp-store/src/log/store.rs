//! [`LogMail`]: opening (writer or read-only) and the [`MailStore`] implementation.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::budget::Budget;
use super::delivery::LogDelivery;
use super::index::Loc;
use super::inner::Inner;
use super::options::{MAX_INLINE, Options};
use super::reader::MessageReader;
use super::recovery::{lock_exclusive, recover, spawn_writer, sweep_blobs};
use super::shared::{blocking, new_shared};
use super::writer::Op;
use crate::clock::unix_now;
use crate::fsutil::create_dirs_synced;
use crate::metrics::StoreMetrics;
use crate::{
    MailStore, MailboxStats, MessageInfo, MetricsSnapshot, Result, StoreError, StoreHealth,
    StoreStats, record,
};

/// The embedded mail store: an append-only segment log with group commit.
///
/// Writer mode (the server) holds an exclusive lock; read-only mode (the admin CLI) takes
/// no lock and rescans newly appended records on each call.
pub struct LogMail {
    pub(super) inner: Arc<Inner>,
}

impl LogMail {
    /// Opens `<data>/mail` as the writer: takes the exclusive lock, scans and verifies
    /// every segment, truncates a torn tail of the last one, removes temporary and orphan
    /// blobs, and starts the writer thread. [`StoreError::Locked`] if a writer runs.
    pub fn open(data_dir: impl AsRef<Path>, mut opts: Options) -> Result<Self> {
        opts.inline_threshold = opts.inline_threshold.min(MAX_INLINE);
        opts.max_batch_bytes = opts.max_batch_bytes.max(1);
        let sh = new_shared(
            data_dir.as_ref().join("mail"),
            opts.inline_budget,
            opts.relay_id_window_secs,
        );
        // New directories (the data dir itself, mail/, blobs/, blobs/tmp/) are fsync'd
        // with their parents, so a segment created next cannot lose its directory.
        create_dirs_synced(&sh.blobs_tmp)?;
        let lock = lock_exclusive(&sh.mail.join("LOCK"))?;
        let (index, segment) = recover(&sh)?;
        let max_blob = sweep_blobs(&sh, &index)?;
        sh.next_blob.store(max_blob + 1, Ordering::Relaxed);
        let pos = index.segments[&segment];
        // Tombstones keep each mailbox's highest id ever used, so ids are never reused.
        let last_ids = index
            .last_ids
            .iter()
            .map(|(m, id)| (m.to_string(), *id))
            .collect();
        *sh.index.lock() = index;
        let shared = Arc::new(sh);
        let (tx, thread) = spawn_writer(&shared, segment, pos, last_ids, &opts)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                thread: Some(thread),
                opts,
                _lock: Some(lock),
            }),
        })
    }

    /// Opens `<data>/mail` read-only, without the lock, while a writer may be running:
    /// the log is append-only and every record carries a CRC, so a record being written
    /// is simply not seen yet. Each call picks up newly committed records. Writes fail
    /// with [`StoreError::ReadOnly`]; nothing on disk is changed.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Result<Self> {
        let sh = new_shared(
            data_dir.as_ref().join("mail"),
            0,
            Options::default().relay_id_window_secs,
        );
        let inner = Inner {
            shared: Arc::new(sh),
            tx: None,
            thread: None,
            opts: Options::default(),
            _lock: None,
        };
        inner.refresh()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The live counters (for a metrics exporter that wants to read them itself).
    pub fn live_metrics(&self) -> &StoreMetrics {
        &self.inner.shared.metrics
    }

    /// Bytes of the inline budget ([`Options::inline_budget`]) reserved right now by
    /// deliveries buffering in memory (0 when none is in flight).
    pub fn inline_reserved(&self) -> u64 {
        self.inner.shared.inline_used.load(Ordering::Acquire)
    }

    /// Per mailbox, the largest id it ever used (messages deleted since included), for
    /// copying the store elsewhere without reusing an id.
    pub fn last_ids(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.inner.refresh()?;
        let index = self.inner.shared.index.lock();
        Ok(index
            .last_ids
            .iter()
            .map(|(k, &v)| (k.to_string(), v))
            .collect())
    }

    /// The relay ids of the dedup window ([`MailStore::seen_relay_id`]) with their commit
    /// times, deleted messages' included, for copying the store elsewhere.
    pub fn relay_ids(&self) -> Result<Vec<([u8; 16], u64)>> {
        self.inner.refresh()?;
        let index = self.inner.shared.index.lock();
        let mut v = index.relay_ids.entries(unix_now());
        v.sort_unstable();
        Ok(v)
    }

    pub(super) async fn refreshed(&self) -> Result<()> {
        if self.inner.read_only() {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.refresh())
                .await
                .map_err(|e| StoreError::TaskFailed(e.to_string()))??;
        }
        Ok(())
    }
}

impl MailStore for LogMail {
    type Delivery = LogDelivery;
    type Reader = MessageReader;

    fn begin(&self) -> LogDelivery {
        LogDelivery {
            inner: self.inner.clone(),
            buf: Vec::new(),
            budget: Budget::new(self.inner.shared.clone()),
            crc: crc32fast::Hasher::new(),
            size: 0,
            spill: None,
        }
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
        self.refreshed().await?;
        let index = self.inner.shared.index.lock();
        let Some((name, mb)) = index.mailboxes.get_key_value(mailbox) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(max.min(mb.messages.len()));
        out.extend(
            mb.messages
                .range((Bound::Excluded(after_id), Bound::Unbounded))
                .take(max)
                .map(|(&id, e)| e.info(id, name)),
        );
        Ok(out)
    }

    async fn open(&self, mailbox: &str, id: u64) -> Result<Option<(MessageInfo, MessageReader)>> {
        self.refreshed().await?;
        let Some(entry) = self.inner.shared.index.lock().get(mailbox, id).cloned() else {
            return Ok(None);
        };
        let sh = self.inner.shared.clone();
        let size = entry.size;
        let opened = blocking(move || {
            Ok(match entry.loc {
                Loc::Inline { segment, offset } => Some((sh.segment_reader(segment)?, offset)),
                // Deleted (and unlinked) since the index lookup: as if it never existed.
                Loc::Blob { file } => match File::open(sh.blob_path(file)) {
                    Ok(f) => Some((Arc::new(f), 0)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e.into()),
                },
            })
        })
        .await?;
        let Some((file, pos)) = opened else {
            return Ok(None);
        };
        Ok(Some((
            entry.info(id, mailbox),
            MessageReader {
                file,
                pos,
                end: pos + size,
            },
        )))
    }

    async fn delete(&self, mailbox: &str, id: u64) -> Result<bool> {
        if self.inner.read_only() {
            return Err(StoreError::ReadOnly);
        }
        if self.inner.shared.index.lock().get(mailbox, id).is_none() {
            return Ok(false);
        }
        let rec = record::encode_delete(id, mailbox);
        let existed = self
            .inner
            .submit(Op::Delete {
                id,
                mailbox: mailbox.to_owned(),
                rec,
            })
            .await?;
        Ok(existed != 0)
    }

    async fn set_note(&self, mailbox: &str, id: u64, note: Vec<u8>) -> Result<bool> {
        if self.inner.read_only() {
            return Err(StoreError::ReadOnly);
        }
        record::check_mailbox(mailbox)?;
        record::check_note(&note)?;
        if self.inner.shared.index.lock().get(mailbox, id).is_none() {
            return Ok(false);
        }
        // Checked again when the record is applied (a delete may come first in the log).
        let rec = record::encode_note(id, mailbox, &note);
        let existed = self
            .inner
            .submit(Op::Note {
                id,
                mailbox: mailbox.to_owned(),
                note,
                rec,
            })
            .await?;
        Ok(existed != 0)
    }

    /// In read-only mode: among the records read by the last call that rescanned.
    fn seen_relay_id(&self, relay_id: &[u8; 16]) -> bool {
        let now = unix_now();
        let mut index = self.inner.shared.index.lock();
        index.relay_ids.prune(now);
        index.relay_ids.contains(relay_id, now)
    }

    fn mailbox_usage(&self, mailbox: &str) -> Result<(u64, u64)> {
        // Read-only mode: new records first; an error is an error (fail closed).
        self.inner.refresh()?;
        let index = self.inner.shared.index.lock();
        Ok(index
            .mailboxes
            .get(mailbox)
            .map_or((0, 0), |mb| (mb.messages.len() as u64, mb.bytes)))
    }

    fn stats(&self) -> Result<StoreStats> {
        self.inner.refresh()?;
        let index = self.inner.shared.index.lock();
        let mut s = StoreStats {
            segments: index.segments.len() as u64,
            log_bytes: index.segments.values().sum(),
            live_bytes: index.live_bytes,
            dead_bytes: index.dead_bytes,
            blobs: index.blobs,
            blob_bytes: index.blob_bytes,
            ..StoreStats::default()
        };
        for (name, mb) in &index.mailboxes {
            let m = MailboxStats {
                messages: mb.messages.len() as u64,
                bytes: mb.bytes,
            };
            s.messages += m.messages;
            s.bytes += m.bytes;
            s.mailboxes.insert(name.to_string(), m);
        }
        Ok(s)
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.inner.shared.metrics.snapshot()
    }

    fn health(&self) -> StoreHealth {
        self.inner.shared.health()
    }
}
