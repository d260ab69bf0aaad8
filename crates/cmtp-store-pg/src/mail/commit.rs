//! The committer: one task per node that turns concurrent [`Delivery::commit`] calls
//! into one transaction (group commit), so a burst of deliveries costs one durable
//! COMMIT (one WAL flush) instead of one each.
//!
//! [`Delivery::commit`]: cmtp_store::Delivery::commit

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cmtp_store::{MailboxLimit, MessageMeta, Result, StoreError};
use tokio::sync::{mpsc, oneshot};

use super::discard_upload;
use crate::state::i64_of;
use crate::state::{Shared, unix_now};

/// One delivery waiting for its commit.
pub(crate) struct CommitRequest {
    pub(crate) meta: MessageMeta,
    /// Key of the chunks already written (large messages), if any.
    pub(crate) key: Option<i64>,
    /// Number of the tail chunk (= chunks already written).
    pub(crate) tail_seq: i32,
    /// The last (or only) bytes, at most one chunk; empty if none are left.
    pub(crate) tail: Vec<u8>,
    /// Total bytes of the message.
    pub(crate) size: u64,
    /// The mailbox's quota, checked in the transaction ([`cmtp_store::Delivery::commit_within`]).
    pub(crate) limit: Option<MailboxLimit>,
    /// Gets the id once the transaction has committed.
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

/// The committer's queue, shared by the node's committers: one takes a batch while
/// another waits for its COMMIT.
pub(crate) type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<CommitRequest>>>;

/// Takes the next batch: waits for one request, then adds whatever is queued.
async fn next_batch(sh: &Shared, queue: &Queue) -> Option<Vec<CommitRequest>> {
    let mut rx = queue.lock().await;
    let first = rx.recv().await?;
    let mut bytes = first.tail.len();
    let mut batch = vec![first];
    while batch.len() < sh.opts.max_batch && bytes < sh.opts.max_batch_bytes {
        match rx.try_recv() {
            Ok(r) => {
                bytes += r.tail.len();
                batch.push(r);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// One committer; runs until every sender (the store and its deliveries) is gone.
/// Several run per node ([`crate::PgOptions::committers`]): while one waits for its
/// COMMIT (the WAL flush), the next builds its transaction, and PostgreSQL flushes
/// both together when they meet. Their batches lock mailbox rows in name order, so
/// they cannot deadlock; two batches for one mailbox commit one after the other.
pub(crate) async fn run(sh: Arc<Shared>, queue: Queue) {
    while let Some(batch) = next_batch(&sh, &queue).await {
        let result = match tokio::time::timeout(sh.opts.op_timeout, commit_batch(&sh, &batch)).await
        {
            Ok(r) => r,
            Err(_) => {
                let msg = format!(
                    "committing deliveries: no answer within {:?}",
                    sh.opts.op_timeout
                );
                sh.mark_degraded(&msg);
                Err(StoreError::Database(msg))
            }
        };
        match result {
            Ok(ids) => {
                let done = batch.iter().zip(&ids).filter(|(_, id)| id.is_ok());
                let (n, total) = done.fold((0, 0), |(n, b), (r, _)| (n + 1, b + r.size));
                if n > 0 {
                    sh.metrics.observe_batch(n, total);
                }
                sh.mark_ok();
                for (r, id) in batch.into_iter().zip(ids) {
                    if let (Err(_), Some(key)) = (&id, r.key) {
                        // Refused over its quota: never committed, so its chunks go.
                        let sh2 = sh.clone();
                        tokio::spawn(async move { discard_upload(&sh2, key).await });
                    }
                    let _ = r.reply.send(id);
                }
            }
            Err(e) => {
                sh.metrics.observe_write_failure();
                let msg = e.to_string();
                for r in batch {
                    if let Some(key) = r.key {
                        // Removed only if the commit really did not happen (see there).
                        let sh2 = sh.clone();
                        tokio::spawn(async move { discard_upload(&sh2, key).await });
                    }
                    let _ = r.reply.send(Err(StoreError::Database(msg.clone())));
                }
            }
        }
    }
}

const UPSERT_MAILBOXES: &str = "\
INSERT INTO mailboxes (name, last_id, messages, bytes)
SELECT * FROM unnest($1::text[], $2::bigint[], $2::bigint[], $3::bigint[])
ON CONFLICT (name) DO UPDATE SET
    last_id = mailboxes.last_id + EXCLUDED.last_id,
    messages = mailboxes.messages + EXCLUDED.messages,
    bytes = mailboxes.bytes + EXCLUDED.bytes
RETURNING name, last_id, messages, bytes";

const INSERT_MESSAGES: &str = "\
INSERT INTO messages (mailbox, id, key, received, size, src_account, src_domain, version,
                      attachment_count, body_end, note, relay_id)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],
                     $11::bytea[], $12::bytea[])";

const INSERT_TAILS: &str = "\
INSERT INTO message_chunks (key, seq, data)
SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bytea[])";

const UPSERT_RELAY_IDS: &str = "\
INSERT INTO relay_ids (relay_id, received)
SELECT * FROM unnest($1::bytea[], $2::bigint[])
ON CONFLICT (relay_id) DO UPDATE SET received = EXCLUDED.received";

/// One transaction for the whole batch; in batch order, each delivery's id, or
/// [`StoreError::OverQuota`] for those its mailbox's quota refused (the others are
/// committed without them).
async fn commit_batch(sh: &Shared, batch: &[CommitRequest]) -> Result<Vec<Result<u64>>> {
    let mut refused = vec![false; batch.len()];
    // Each round either commits or refuses one more delivery, so this ends.
    loop {
        let admitted: Vec<&CommitRequest> = batch
            .iter()
            .zip(&refused)
            .filter(|(_, r)| !**r)
            .map(|(b, _)| b)
            .collect();
        let ids = if admitted.is_empty() {
            Vec::new()
        } else {
            match commit_admitted(sh, &admitted).await? {
                Ok(ids) => ids,
                Err(over) => {
                    // Rolled back: the same batch without the refused ones.
                    let positions: Vec<usize> = (0..batch.len()).filter(|i| !refused[*i]).collect();
                    for i in over {
                        refused[positions[i]] = true;
                    }
                    continue;
                }
            }
        };
        let mut ids = ids.into_iter();
        return Ok(refused
            .iter()
            .map(|r| {
                if *r {
                    Err(StoreError::OverQuota)
                } else {
                    ids.next()
                        .ok_or_else(|| StoreError::Database("an id was not assigned".into()))
                }
            })
            .collect());
    }
}

/// Which deliveries of `batch` (positions) the quotas refuse, given each mailbox's
/// committed totals `before` (messages, bytes): in batch order, a delivery with a limit
/// goes in only while its mailbox is under it, as the quota gate of one node decides.
fn over_quota(batch: &[&CommitRequest], before: &BTreeMap<String, (i64, i64)>) -> Vec<usize> {
    let mut now = before.clone();
    let mut over = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        let cur = now.entry(r.meta.mailbox.clone()).or_default();
        if let Some(l) = r.limit
            && !(cur.0 < i64_of(l.messages) && cur.1 < i64_of(l.bytes))
        {
            over.push(i);
            continue;
        }
        cur.0 += 1;
        cur.1 += i64_of(r.size);
    }
    over
}

/// One transaction for `batch`: the ids in batch order, or (rolled back) the positions
/// the quotas refuse.
async fn commit_admitted(
    sh: &Shared,
    batch: &[&CommitRequest],
) -> Result<std::result::Result<Vec<u64>, Vec<usize>>> {
    let what = "committing deliveries";
    let pg = |e| sh.pg(what, e);
    let mut c = sh.conn(what).await?;
    let tx = c.transaction().await.map_err(pg)?;

    // Ids: one row per mailbox, locked in name order (every writer takes them in that
    // order, so two nodes' batches cannot deadlock) and held until COMMIT, which makes
    // ids ascend in commit order across nodes. The same lock makes the quota check
    // below exact across nodes.
    let mut per: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in batch {
        let e = per.entry(r.meta.mailbox.as_str()).or_default();
        e.0 += 1;
        e.1 += i64_of(r.size);
    }
    let names: Vec<&str> = per.keys().copied().collect();
    let counts: Vec<i64> = per.values().map(|v| v.0).collect();
    let sizes: Vec<i64> = per.values().map(|v| v.1).collect();
    let stmt = tx.prepare_cached(UPSERT_MAILBOXES).await.map_err(pg)?;
    let rows = tx
        .query(&stmt, &[&names, &counts, &sizes])
        .await
        .map_err(pg)?;
    // The first id of each mailbox's share of the batch; its totals before the batch.
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    let mut before: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let last: i64 = row.get(1);
        let (messages, bytes): (i64, i64) = (row.get(2), row.get(3));
        let (n, b) = per.get(name.as_str()).copied().unwrap_or_default();
        next.insert(name.clone(), last - n + 1);
        before.insert(name, (messages - n, bytes - b));
    }
    let over = over_quota(batch, &before);
    if !over.is_empty() {
        // Nothing of this round stays; the rows' locks go with it.
        tx.rollback().await.map_err(pg)?;
        return Ok(Err(over));
    }

    // Keys for the messages whose bytes were all buffered.
    let need = batch.iter().filter(|r| r.key.is_none()).count() as i64;
    let mut fresh = Vec::new();
    if need > 0 {
        let stmt = tx
            .prepare_cached("SELECT nextval('message_keys') FROM generate_series(1, $1::bigint)")
            .await
            .map_err(pg)?;
        fresh = tx
            .query(&stmt, &[&need])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect();
    }
    let mut fresh = fresh.into_iter();

    let now = i64_of(unix_now());
    let n = batch.len();
    let (mut mb, mut ids, mut keys, mut recv, mut size) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut sa, mut sd, mut ver, mut att, mut body, mut note, mut rid) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut t_key, mut t_seq, mut t_data) = (Vec::new(), Vec::new(), Vec::new());
    let mut uploads = Vec::new();
    let mut relay: BTreeMap<&[u8], i64> = BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    for r in batch {
        let m = &r.meta;
        let slot = next
            .get_mut(m.mailbox.as_str())
            .ok_or_else(|| StoreError::Database("a mailbox row was not returned".into()))?;
        let id = *slot;
        *slot += 1;
        let key = match r.key {
            Some(k) => {
                uploads.push(k);
                k
            }
            None => fresh
                .next()
                .ok_or_else(|| StoreError::Database("too few message keys".into()))?,
        };
        mb.push(m.mailbox.as_str());
        ids.push(id);
        keys.push(key);
        recv.push(now);
        size.push(i64_of(r.size));
        sa.push(m.src_account.as_str());
        sd.push(m.src_domain.as_str());
        ver.push(i64::from(m.version));
        att.push(i64::from(m.attachment_count));
        body.push(i64_of(m.body_end));
        note.push(m.note.as_slice());
        rid.push(m.relay_id.as_ref().map(|x| x.as_slice()));
        if let Some(x) = &m.relay_id {
            relay.insert(x.as_slice(), now);
        }
        if !r.tail.is_empty() {
            t_key.push(key);
            t_seq.push(r.tail_seq);
            t_data.push(r.tail.as_slice());
        }
        out.push(u64::try_from(id).unwrap_or(0));
    }
    let stmt = tx.prepare_cached(INSERT_MESSAGES).await.map_err(pg)?;
    tx.execute(
        &stmt,
        &[
            &mb, &ids, &keys, &recv, &size, &sa, &sd, &ver, &att, &body, &note, &rid,
        ],
    )
    .await
    .map_err(pg)?;
    if !t_key.is_empty() {
        let stmt = tx.prepare_cached(INSERT_TAILS).await.map_err(pg)?;
        tx.execute(&stmt, &[&t_key, &t_seq, &t_data])
            .await
            .map_err(pg)?;
    }
    if !uploads.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM uploads WHERE key = ANY($1)")
            .await
            .map_err(pg)?;
        tx.execute(&stmt, &[&uploads]).await.map_err(pg)?;
    }
    if !relay.is_empty() {
        let r_ids: Vec<&[u8]> = relay.keys().copied().collect();
        let r_at: Vec<i64> = relay.values().copied().collect();
        let stmt = tx.prepare_cached(UPSERT_RELAY_IDS).await.map_err(pg)?;
        tx.execute(&stmt, &[&r_ids, &r_at]).await.map_err(pg)?;
    }
    let t0 = Instant::now();
    tx.commit().await.map_err(pg)?;
    sh.metrics.observe_fsync(t0.elapsed());
    Ok(Ok(out))
}
