//! [`cmtp_store::MailStore`] over `messages`, `message_chunks` and `mailboxes`.

mod commit;
mod delivery;
mod reader;

use std::sync::Arc;
use std::time::Duration;

use cmtp_store::{
    Claim, MailboxStats, MessageInfo, MessageMeta, Result, StoreStats, validate_mailbox,
    validate_note,
};
use tokio::sync::mpsc;
use tokio_postgres::Row;

pub(crate) use commit::CommitRequest;
pub use delivery::PgDelivery;
pub use reader::PgReader;

use crate::PgStore;
use crate::state::{Shared, unix_now};
use crate::state::{i64_of, u64_of};

/// Bytes per `message_chunks` row (and the most a delivery or reader buffers).
pub const CHUNK: usize = 256 * 1024;

/// Commit requests waiting for the committer (beyond them, `commit` waits its turn).
const COMMIT_QUEUE: usize = 1024;
/// How often a degraded store probes the database.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often abandoned uploads and expired relay ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Starts the committer, the health probe and the sweeper on the store's runtime (call
/// inside it); returns the committer's queue.
pub(crate) fn start_background(sh: &Arc<Shared>) -> mpsc::Sender<CommitRequest> {
    let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
    let queue: commit::Queue = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..sh.opts.committers.max(1) {
        tokio::spawn(commit::run(sh.clone(), queue.clone()));
    }
    let weak = Arc::downgrade(sh);
    tokio::spawn(async move {
        let mut probe = tokio::time::interval(PROBE_EVERY);
        let mut sweep_at = tokio::time::Instant::now();
        loop {
            probe.tick().await;
            let Some(sh) = weak.upgrade() else { return };
            if sh.is_degraded() {
                // Reconnecting is the pool's work; this only notices that it succeeded.
                if let Ok(c) = sh.pool.get().await
                    && c.simple_query("SELECT 1").await.is_ok()
                {
                    sh.mark_ok();
                }
            } else if tokio::time::Instant::now() >= sweep_at {
                sweep_at += SWEEP_EVERY;
                if let Err(e) = sweep(&sh).await {
                    tracing::warn!(error = %e, "sweeping abandoned uploads failed");
                }
            }
        }
    });
    tx
}

/// Removes uploads older than the abandonment age (chunks and all) and relay ids past
/// the window; returns the uploads removed.
pub(crate) async fn sweep(sh: &Shared) -> Result<u64> {
    let what = "sweeping";
    let c = sh.conn(what).await?;
    let now = unix_now();
    let upload_cut = i64_of(now.saturating_sub(sh.opts.abandoned_upload_secs));
    let relay_cut = i64_of(now.saturating_sub(sh.opts.relay_id_window_secs));
    let rows = c
        .query(
            "WITH u AS (DELETE FROM uploads WHERE started < $1 RETURNING key),
                  c AS (DELETE FROM message_chunks WHERE key IN (SELECT key FROM u))
             SELECT count(*) FROM u",
            &[&upload_cut],
        )
        .await
        .map_err(|e| sh.pg(what, e))?;
    c.execute("DELETE FROM relay_ids WHERE received < $1", &[&relay_cut])
        .await
        .map_err(|e| sh.pg(what, e))?;
    Ok(rows.first().map_or(0, |r| u64_of(r.get(0))))
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

pub(crate) async fn database_size(sh: &Shared) -> Result<u64> {
    let c = sh.conn("measuring the database").await?;
    let r = c
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map_err(|e| sh.pg("measuring the database", e))?;
    Ok(u64_of(r.get(0)))
}

const INFO_COLUMNS: &str = "id, received, size, src_account, src_domain, version, \
                            attachment_count, body_end, note, relay_id, key";

fn info_of(mailbox: &str, r: &Row) -> MessageInfo {
    let relay_id = r
        .get::<_, Option<&[u8]>>(9)
        .and_then(|b| <[u8; 16]>::try_from(b).ok());
    MessageInfo {
        id: u64_of(r.get(0)),
        received: u64_of(r.get(1)),
        size: u64_of(r.get(2)),
        meta: MessageMeta {
            mailbox: mailbox.to_owned(),
            src_account: r.get(3),
            src_domain: r.get(4),
            version: u32::try_from(r.get::<_, i64>(5)).unwrap_or(0),
            attachment_count: u32::try_from(r.get::<_, i64>(6)).unwrap_or(0),
            body_end: u64_of(r.get(7)),
            note: r.get(8),
            relay_id,
        },
    }
}

pub(crate) async fn list_range(
    s: &PgStore,
    mailbox: &str,
    after_id: u64,
    max: usize,
) -> Result<Vec<MessageInfo>> {
    validate_mailbox(mailbox)?;
    let (sh, mb) = (s.shared.clone(), mailbox.to_owned());
    let (after, limit) = (i64_of(after_id), i64_of(max as u64));
    s.bridge
        .run(async move {
            let what = "listing a mailbox";
            let c = sh.conn(what).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {INFO_COLUMNS} FROM messages WHERE mailbox = $1 AND id > $2
                     ORDER BY id LIMIT $3"
                ))
                .await
                .map_err(|e| sh.pg(what, e))?;
            let rows = c
                .query(&stmt, &[&mb, &after, &limit])
                .await
                .map_err(|e| sh.pg(what, e))?;
            Ok(rows.iter().map(|r| info_of(&mb, r)).collect())
        })
        .await
}

pub(crate) async fn open(
    s: &PgStore,
    mailbox: &str,
    id: u64,
) -> Result<Option<(MessageInfo, PgReader)>> {
    validate_mailbox(mailbox)?;
    let (sh, mb, idv) = (s.shared.clone(), mailbox.to_owned(), i64_of(id));
    let found = s
        .bridge
        .run(async move {
            let what = "opening a message";
            let c = sh.conn(what).await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {INFO_COLUMNS} FROM messages WHERE mailbox = $1 AND id = $2"
                ))
                .await
                .map_err(|e| sh.pg(what, e))?;
            let row = c
                .query_opt(&stmt, &[&mb, &idv])
                .await
                .map_err(|e| sh.pg(what, e))?;
            Ok(row.map(|r| (info_of(&mb, &r), r.get::<_, i64>(10))))
        })
        .await?;
    Ok(found.map(|(info, key)| {
        let size = info.size;
        (
            info,
            PgReader::new(s.shared.clone(), s.bridge.clone(), key, size),
        )
    }))
}

pub(crate) async fn delete(s: &PgStore, mailbox: &str, id: u64) -> Result<bool> {
    validate_mailbox(mailbox)?;
    let (sh, mb, idv) = (s.shared.clone(), mailbox.to_owned(), i64_of(id));
    s.bridge
        .run(async move {
            let what = "deleting a message";
            let c = sh.conn(what).await?;
            // One statement, so one transaction: the row, its chunks and the mailbox's
            // totals go together (the mailbox row stays: its ids are never reused).
            let stmt = c
                .prepare_cached(
                    "WITH d AS (DELETE FROM messages WHERE mailbox = $1 AND id = $2
                                RETURNING key, size),
                          c AS (DELETE FROM message_chunks
                                WHERE key IN (SELECT key FROM d)),
                          u AS (UPDATE mailboxes SET messages = messages - 1,
                                       bytes = bytes - (SELECT size FROM d)
                                WHERE name = $1 AND EXISTS (SELECT 1 FROM d))
                     SELECT count(*) FROM d",
                )
                .await
                .map_err(|e| sh.pg(what, e))?;
            let r = c
                .query_one(&stmt, &[&mb, &idv])
                .await
                .map_err(|e| sh.pg(what, e))?;
            sh.mark_ok();
            Ok(r.get::<_, i64>(0) > 0)
        })
        .await
}

pub(crate) async fn set_note(s: &PgStore, mailbox: &str, id: u64, note: Vec<u8>) -> Result<bool> {
    validate_mailbox(mailbox)?;
    validate_note(&note)?;
    let (sh, mb, idv) = (s.shared.clone(), mailbox.to_owned(), i64_of(id));
    s.bridge
        .run(async move {
            let what = "replacing a note";
            let c = sh.conn(what).await?;
            let stmt = c
                .prepare_cached("UPDATE messages SET note = $3 WHERE mailbox = $1 AND id = $2")
                .await
                .map_err(|e| sh.pg(what, e))?;
            let n = c
                .execute(&stmt, &[&mb, &idv, &note])
                .await
                .map_err(|e| sh.pg(what, e))?;
            sh.mark_ok();
            Ok(n > 0)
        })
        .await
}

pub(crate) async fn claim(
    s: &PgStore,
    mailbox: &str,
    ids: &[u64],
    owner: &str,
    until: u64,
    now: u64,
) -> Result<Vec<Claim>> {
    validate_mailbox(mailbox)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (sh, mb, owner) = (s.shared.clone(), mailbox.to_owned(), owner.to_owned());
    let want: Vec<i64> = ids.iter().map(|&i| i64_of(i)).collect();
    let (until, now) = (i64_of(until), i64_of(now));
    let (granted, held) = s
        .bridge
        .run(async move {
            let what = "claiming queued messages";
            let c = sh.conn(what).await?;
            // One statement, so one short transaction. `FOR UPDATE` makes a concurrent
            // claim of the same row wait for this one and then re-check the condition
            // against the new lease (READ COMMITTED re-evaluates locked rows), so
            // exactly one node wins; taking the locks in id order means two claims of
            // overlapping batches cannot deadlock.
            let stmt = c
                .prepare_cached(&format!(
                    "UPDATE messages m SET lease_owner = $3, lease_until = $4
                     FROM (SELECT mailbox, id FROM messages
                           WHERE mailbox = $1 AND id = ANY($2)
                             AND (lease_until IS NULL OR lease_until <= $5
                                  OR lease_owner = $3)
                           ORDER BY id FOR UPDATE) f
                     WHERE m.mailbox = f.mailbox AND m.id = f.id
                     RETURNING {}",
                    INFO_COLUMNS
                        .split(", ")
                        .map(|c| format!("m.{}", c.trim()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .await
                .map_err(|e| sh.pg(what, e))?;
            let rows = c
                .query(&stmt, &[&mb, &want, &owner, &until, &now])
                .await
                .map_err(|e| sh.pg(what, e))?;
            let granted: Vec<MessageInfo> = rows.iter().map(|r| info_of(&mb, r)).collect();
            let mut held = Vec::new();
            if granted.len() < want.len() {
                let missing: Vec<i64> = want
                    .iter()
                    .copied()
                    .filter(|&i| !granted.iter().any(|g| i64_of(g.id) == i))
                    .collect();
                let stmt = c
                    .prepare_cached(
                        "SELECT id, coalesce(lease_owner, ''), coalesce(lease_until, 0)
                         FROM messages WHERE mailbox = $1 AND id = ANY($2)",
                    )
                    .await
                    .map_err(|e| sh.pg(what, e))?;
                for r in c
                    .query(&stmt, &[&mb, &missing])
                    .await
                    .map_err(|e| sh.pg(what, e))?
                {
                    held.push((u64_of(r.get(0)), r.get::<_, String>(1), u64_of(r.get(2))));
                }
            }
            sh.mark_ok();
            Ok((granted, held))
        })
        .await?;
    Ok(ids
        .iter()
        .map(|&id| {
            if let Some(g) = granted.iter().find(|g| g.id == id) {
                Claim::Granted(g.clone())
            } else if let Some((_, owner, until)) = held.iter().find(|h| h.0 == id) {
                Claim::Held {
                    owner: owner.clone(),
                    until: *until,
                }
            } else {
                Claim::Gone
            }
        })
        .collect())
}

pub(crate) fn seen_relay_id(s: &PgStore, relay_id: &[u8; 16]) -> bool {
    let (sh, rid) = (s.shared.clone(), relay_id.to_vec());
    let cut = i64_of(unix_now().saturating_sub(s.shared.opts.relay_id_window_secs));
    let r = s.bridge.block_store(async move {
        let what = "looking up a relay id";
        let c = sh.conn(what).await?;
        let stmt = c
            .prepare_cached("SELECT 1 FROM relay_ids WHERE relay_id = $1 AND received >= $2")
            .await
            .map_err(|e| sh.pg(what, e))?;
        let row = c
            .query_opt(&stmt, &[&rid, &cut])
            .await
            .map_err(|e| sh.pg(what, e))?;
        Ok(row.is_some())
    });
    r.unwrap_or_else(|e| {
        // The trait has no error here: not recognised means at worst a duplicate, and
        // the delivery's own commit fails the same way while the database is down.
        tracing::warn!(error = %e, "relay id lookup failed");
        false
    })
}

pub(crate) fn mailbox_usage(s: &PgStore, mailbox: &str) -> Result<(u64, u64)> {
    validate_mailbox(mailbox)?;
    let (sh, mb) = (s.shared.clone(), mailbox.to_owned());
    s.bridge.block_store(async move {
        let what = "reading a mailbox's usage";
        let c = sh.conn(what).await?;
        let stmt = c
            .prepare_cached("SELECT messages, bytes FROM mailboxes WHERE name = $1")
            .await
            .map_err(|e| sh.pg(what, e))?;
        let row = c
            .query_opt(&stmt, &[&mb])
            .await
            .map_err(|e| sh.pg(what, e))?;
        Ok(row.map_or((0, 0), |r| (u64_of(r.get(0)), u64_of(r.get(1)))))
    })
}

pub(crate) fn stats(s: &PgStore) -> Result<StoreStats> {
    let sh = s.shared.clone();
    s.bridge.block_store(async move {
        let what = "reading store figures";
        let c = sh.conn(what).await?;
        let rows = c
            .query(
                "SELECT name, messages, bytes FROM mailboxes WHERE messages > 0",
                &[],
            )
            .await
            .map_err(|e| sh.pg(what, e))?;
        let mut out = StoreStats::default();
        for r in rows {
            let m = MailboxStats {
                messages: u64_of(r.get(1)),
                bytes: u64_of(r.get(2)),
            };
            out.messages += m.messages;
            out.bytes += m.bytes;
            out.mailboxes.insert(r.get(0), m);
        }
        Ok(out)
    })
}
