//! [`PgDelivery`]: a message streamed into `message_chunks`.
//!
//! Bytes are buffered up to one [`CHUNK`]. A message that fits in one chunk (most mail)
//! never touches the database before its commit: its bytes go into the group commit's
//! transaction. A larger one takes a key and an `uploads` row at its first full chunk
//! and writes each full chunk in a short transaction of its own with
//! `synchronous_commit = off` (no fsync per chunk: the durable commit that later holds
//! the message row flushes the WAL, chunks included, as WAL is written in order). The
//! message becomes visible only when the commit inserts its `messages` row; a delivery
//! dropped before deletes its chunks, and one a crashed node left is swept later.

use std::sync::Arc;

use cmtp_store::{Delivery, MailboxLimit, MessageMeta, Result, StoreError, validate_meta};
use tokio::sync::{mpsc, oneshot};

use super::CHUNK;
use super::commit::CommitRequest;
use crate::bridge::Bridge;
use crate::state::{Shared, unix_now};

/// A message being received (see the module doc).
pub struct PgDelivery {
    shared: Arc<Shared>,
    bridge: Bridge,
    committer: mpsc::Sender<CommitRequest>,
    buf: Vec<u8>,
    /// Key and next chunk number once chunks were written to the database.
    key: Option<i64>,
    next_seq: i32,
    size: u64,
    /// A write failed or was cancelled midway: the data is not what was sent.
    broken: bool,
    committed: bool,
}

impl PgDelivery {
    pub(crate) fn new(
        shared: Arc<Shared>,
        bridge: Bridge,
        committer: mpsc::Sender<CommitRequest>,
    ) -> Self {
        Self {
            shared,
            bridge,
            committer,
            buf: Vec::new(),
            key: None,
            next_seq: 0,
            size: 0,
            broken: false,
            committed: false,
        }
    }

    /// Writes the full buffer as the next chunk (taking a key first if needed).
    async fn flush_chunk(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.buf);
        let (sh, key, seq) = (self.shared.clone(), self.key, self.next_seq);
        let key = self
            .bridge
            .run(async move { write_chunk(&sh, key, seq, data).await })
            .await?;
        self.key = Some(key);
        self.next_seq += 1;
        Ok(())
    }
}

async fn write_chunk(sh: &Shared, key: Option<i64>, seq: i32, data: Vec<u8>) -> Result<i64> {
    let what = "writing a message chunk";
    let mut c = sh.conn(what).await?;
    let tx = c.transaction().await.map_err(|e| sh.pg(what, e))?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(|e| sh.pg(what, e))?;
    let key = match key {
        Some(k) => k,
        None => {
            let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
            tx.query_one(
                "INSERT INTO uploads (key, started) VALUES (nextval('message_keys'), $1)
                 RETURNING key",
                &[&now],
            )
            .await
            .map_err(|e| sh.pg(what, e))?
            .get(0)
        }
    };
    let stmt = tx
        .prepare_cached("INSERT INTO message_chunks (key, seq, data) VALUES ($1, $2, $3)")
        .await
        .map_err(|e| sh.pg(what, e))?;
    tx.execute(&stmt, &[&key, &seq, &data])
        .await
        .map_err(|e| sh.pg(what, e))?;
    tx.commit().await.map_err(|e| sh.pg(what, e))?;
    Ok(key)
}

/// Removes the chunks and upload row of a delivery that was not committed. Only while
/// its `uploads` row exists: a commit whose answer was lost may have succeeded, and then
/// the row is gone and the chunks belong to a stored message.
pub(crate) async fn discard_upload(sh: &Shared, key: i64) {
    let what = "discarding an upload";
    let r = async {
        let c = sh.conn(what).await?;
        c.execute(
            "WITH u AS (DELETE FROM uploads WHERE key = $1 RETURNING key)
             DELETE FROM message_chunks WHERE key IN (SELECT key FROM u)",
            &[&key],
        )
        .await
        .map_err(|e| sh.pg(what, e))
    }
    .await;
    if let Err(e) = r {
        // The sweeper removes it later (the upload row stays until then).
        tracing::warn!(error = %e, "could not discard an abandoned delivery now");
    }
}

impl Delivery for PgDelivery {
    async fn write(&mut self, mut chunk: &[u8]) -> Result<()> {
        if self.broken {
            return Err(StoreError::DeliveryIncomplete);
        }
        // Set until this call completes: a cancelled write leaves the delivery broken.
        self.broken = true;
        while !chunk.is_empty() {
            let room = CHUNK - self.buf.len();
            let take = room.min(chunk.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(CHUNK.min(chunk.len().max(4096)));
            }
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            self.size += take as u64;
            if self.buf.len() == CHUNK {
                self.flush_chunk().await?;
            }
        }
        self.broken = false;
        Ok(())
    }

    async fn commit(self, meta: MessageMeta) -> Result<u64> {
        self.hand_to_committer(meta, None).await
    }

    /// The quota is checked in the commit's transaction, under the mailbox row's lock,
    /// so it holds across every node of the database.
    async fn commit_within(self, meta: MessageMeta, limit: MailboxLimit) -> Result<u64> {
        self.hand_to_committer(meta, Some(limit)).await
    }
}

impl PgDelivery {
    /// Queues the delivery for the committer and waits for its answer.
    async fn hand_to_committer(
        mut self,
        meta: MessageMeta,
        limit: Option<MailboxLimit>,
    ) -> Result<u64> {
        if self.broken {
            return Err(StoreError::DeliveryIncomplete);
        }
        validate_meta(&meta)?;
        let (tx, rx) = oneshot::channel();
        let req = CommitRequest {
            meta,
            key: self.key,
            tail_seq: self.next_seq,
            tail: std::mem::take(&mut self.buf),
            size: self.size,
            limit,
            reply: tx,
        };
        // From here the committer owns the upload: if the commit fails, it discards it.
        self.committed = true;
        if self.committer.send(req).await.is_err() {
            self.committed = false;
            return Err(StoreError::TaskFailed("the committer stopped".into()));
        }
        rx.await
            .map_err(|_| StoreError::TaskFailed("the committer stopped".into()))?
    }
}

impl Drop for PgDelivery {
    fn drop(&mut self) {
        if let (Some(key), false) = (self.key, self.committed) {
            let sh = self.shared.clone();
            self.bridge
                .spawn(async move { discard_upload(&sh, key).await });
        }
    }
}
