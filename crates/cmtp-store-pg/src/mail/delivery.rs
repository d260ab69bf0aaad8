//! [`PgDelivery`]: a message streamed into `message_chunks`.
//!
//! Bytes are buffered up to one [`CHUNK`]. A message that fits in one chunk (most mail)
//! never touches the database before its commit: its bytes go into the group commit's
//! transaction. A larger one takes a key and an `uploads` row at its first full chunk
//! and writes each full chunk as one statement (its own transaction) on a connection of
//! the chunk pool, whose sessions run with `synchronous_commit = off` (no fsync per
//! chunk: the durable commit that later holds the message row flushes the WAL, chunks
//! included, as WAL is written in order). One chunk is written while the next is being
//! received (at most two chunks of memory). The message becomes visible only when the
//! commit inserts its `messages` row; a delivery dropped before deletes its chunks, and
//! one a crashed node left is swept later.

use std::sync::Arc;

use cmtp_store::{
    Delivery, MailboxLimit, MessageInfo, MessageMeta, Result, StoreError, validate_meta,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::commit::CommitRequest;
use super::{CHUNK, discard_upload};
use crate::bridge::Bridge;
use crate::state::i64_of;
use crate::state::{Shared, unix_now};

/// A message being received (see the module doc).
pub struct PgDelivery {
    shared: Arc<Shared>,
    bridge: Bridge,
    committer: mpsc::Sender<CommitRequest>,
    buf: Vec<u8>,
    /// Key and next chunk number once chunks were written to the database.
    key: Option<i64>,
    /// The chunk being written now, if any (awaited before the next one, the commit, or
    /// the clean-up of a dropped delivery).
    inflight: Option<JoinHandle<Result<()>>>,
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
            inflight: None,
            next_seq: 0,
            size: 0,
            broken: false,
            committed: false,
        }
    }

    /// Writes the full buffer as the next chunk: the first one (which takes the key) at
    /// once, later ones in the background, after the previous one has finished.
    async fn flush_chunk(&mut self) -> Result<()> {
        self.wait_inflight().await?;
        let data = std::mem::take(&mut self.buf);
        let (sh, seq) = (self.shared.clone(), self.next_seq);
        match self.key {
            None => {
                let key = self
                    .bridge
                    .run(async move { first_chunk(&sh, data).await })
                    .await?;
                self.key = Some(key);
            }
            Some(key) => {
                let bridge = self.bridge.clone();
                self.inflight = Some(tokio::spawn(async move {
                    bridge
                        .run(async move { next_chunk(&sh, key, seq, data).await })
                        .await
                }));
            }
        }
        self.next_seq += 1;
        Ok(())
    }

    /// Waits for the chunk being written, if any.
    async fn wait_inflight(&mut self) -> Result<()> {
        // Awaited in place, not taken out first: if this wait is cancelled, the handle
        // stays for the clean-up in `drop` to wait on.
        if let Some(h) = &mut self.inflight {
            let r = h.await;
            self.inflight = None;
            r.map_err(|e| StoreError::TaskFailed(e.to_string()))??;
        }
        Ok(())
    }
}

/// Writes the first chunk of a large message with a new key and its `uploads` row, in
/// one statement; the key.
async fn first_chunk(sh: &Shared, data: Vec<u8>) -> Result<i64> {
    let what = "writing a message chunk";
    let c = sh.chunk_conn(what).await?;
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "WITH u AS (INSERT INTO uploads (key, started)
                        VALUES (nextval('message_keys'), $1) RETURNING key)
             INSERT INTO message_chunks (key, seq, data) SELECT key, 0, $2 FROM u
             RETURNING key",
        )
        .await
        .map_err(|e| sh.pg(what, e))?;
    let row = c
        .query_one(&stmt, &[&now, &data])
        .await
        .map_err(|e| sh.pg(what, e))?;
    Ok(row.get(0))
}

/// Writes chunk `seq` of an upload.
async fn next_chunk(sh: &Shared, key: i64, seq: i32, data: Vec<u8>) -> Result<()> {
    let what = "writing a message chunk";
    let c = sh.chunk_conn(what).await?;
    let stmt = c
        .prepare_cached("INSERT INTO message_chunks (key, seq, data) VALUES ($1, $2, $3)")
        .await
        .map_err(|e| sh.pg(what, e))?;
    c.execute(&stmt, &[&key, &seq, &data])
        .await
        .map_err(|e| sh.pg(what, e))?;
    Ok(())
}

impl PgDelivery {
    /// [`cmtp_store::StoreImport::import`]: one transaction of its own (outside the group
    /// commit) that stores the message under the id and time `info` gives. The
    /// transaction does not wait for its WAL flush: the copy's final synchronous commit
    /// ([`crate::import`]'s `finish`) flushes the WAL up to it, as it is written in order.
    pub(crate) async fn import(mut self, info: MessageInfo) -> Result<()> {
        if self.broken {
            return Err(StoreError::DeliveryIncomplete);
        }
        // Every chunk is written before the transaction that makes the message visible.
        self.broken = true;
        self.wait_inflight().await?;
        self.broken = false;
        validate_meta(&info.meta)?;
        if info.size != self.size {
            return Err(StoreError::InvalidMeta(
                "the size given is not the number of bytes written",
            ));
        }
        let (sh, key, seq) = (self.shared.clone(), self.key, self.next_seq);
        let tail = std::mem::take(&mut self.buf);
        // From here this function owns the upload: it discards it if the import fails.
        self.committed = true;
        let r = self
            .bridge
            .run(async move { import_tx(&sh, key, seq, tail, info).await })
            .await;
        if r.is_err()
            && let Some(key) = key
        {
            discard_upload(&self.shared, key).await;
        }
        r
    }
}

async fn import_tx(
    sh: &Shared,
    key: Option<i64>,
    tail_seq: i32,
    tail: Vec<u8>,
    info: MessageInfo,
) -> Result<()> {
    let what = "importing a message";
    let pg = |e| sh.pg(what, e);
    let mut c = sh.conn(what).await?;
    let tx = c.transaction().await.map_err(pg)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(pg)?;
    let m = &info.meta;
    let (id, received, size) = (i64_of(info.id), i64_of(info.received), i64_of(info.size));
    tx.execute(
        "INSERT INTO mailboxes (name, last_id, messages, bytes) VALUES ($1, $2, 1, $3)
         ON CONFLICT (name) DO UPDATE SET
             last_id = GREATEST(mailboxes.last_id, EXCLUDED.last_id),
             messages = mailboxes.messages + 1,
             bytes = mailboxes.bytes + EXCLUDED.bytes",
        &[&m.mailbox, &id, &size],
    )
    .await
    .map_err(pg)?;
    let key = match key {
        Some(k) => k,
        None => tx
            .query_one("SELECT nextval('message_keys')", &[])
            .await
            .map_err(pg)?
            .get(0),
    };
    let r = tx
        .execute(
            "INSERT INTO messages (mailbox, id, key, received, size, src_account, src_domain,
                 version, attachment_count, body_end, note, relay_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &m.mailbox,
                &id,
                &key,
                &received,
                &size,
                &m.src_account,
                &m.src_domain,
                &i64::from(m.version),
                &i64::from(m.attachment_count),
                &i64_of(m.body_end),
                &m.note,
                &m.relay_id.as_ref().map(|r| r.as_slice()),
            ],
        )
        .await;
    if let Err(e) = r {
        return Err(
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                StoreError::AlreadyExists
            } else {
                pg(e)
            },
        );
    }
    if !tail.is_empty() {
        tx.execute(
            "INSERT INTO message_chunks (key, seq, data) VALUES ($1, $2, $3)",
            &[&key, &tail_seq, &tail],
        )
        .await
        .map_err(pg)?;
    }
    tx.execute("DELETE FROM uploads WHERE key = $1", &[&key])
        .await
        .map_err(pg)?;
    if let Some(rid) = &m.relay_id {
        tx.execute(
            "INSERT INTO relay_ids (relay_id, received) VALUES ($1, $2)
             ON CONFLICT (relay_id) DO UPDATE
                 SET received = GREATEST(relay_ids.received, EXCLUDED.received)",
            &[&rid.as_slice(), &received],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)?;
    Ok(())
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
        // Every chunk is written before the commit that makes them durable is asked for.
        self.broken = true;
        self.wait_inflight().await?;
        self.broken = false;
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
            // A chunk still being written would land after the clean-up and be left
            // behind with no upload row to find it by: let it finish first.
            let inflight = self.inflight.take();
            self.bridge.spawn(async move {
                if let Some(h) = inflight {
                    let _ = h.await;
                }
                discard_upload(&sh, key).await
            });
        }
    }
}
