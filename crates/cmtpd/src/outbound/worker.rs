//! A delivery worker: one connection to one domain's server, reused for as many due
//! messages as the domain has, MAILs pipelined (`pipeline` in flight: written ahead,
//! replies read behind, in order).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use cmtp_client::RouteError;
use cmtp_store::{Claim, MessageRead, RELAY_QUEUE};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::bounce::{Failure, bounce};
use super::{Item, Queue};
use crate::relay::peer::{PeerReader, PeerWriter};
use crate::relay::{MailVerdict, Peer, PeerError, QueueNote, open_peer};
use crate::shared::{Backend, Shared};

/// Bytes read from the store per write to the socket.
const CHUNK: usize = 64 * 1024;

/// Runs one worker for `domain` until it has no due messages or its connection fails.
pub(super) async fn run<S: Backend>(sh: Arc<Shared<S>>, queue: Arc<Queue>, domain: String) {
    deliver(&sh, &queue, &domain).await;
    queue.worker_done(&domain);
}

async fn deliver<S: Backend>(sh: &Arc<Shared<S>>, queue: &Arc<Queue>, domain: &str) {
    let relay = &sh.relay;
    let addrs = match relay.router.load().resolve(domain).await {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            let items = claim_all(sh, queue, domain).await;
            defer_all(sh, queue, items, &format!("{domain}: no address to try")).await;
            return;
        }
        Err(e @ RouteError::Permanent { .. }) => {
            let items = claim_all(sh, queue, domain).await;
            for (id, item) in items {
                give_up(sh, queue, id, &item, &e.to_string()).await;
            }
            return;
        }
        Err(e) => {
            let items = claim_all(sh, queue, domain).await;
            defer_all(sh, queue, items, &e.to_string()).await;
            return;
        }
    };
    let peer = match open_peer(&sh.store, &relay.metrics, domain, &addrs, relay.timeouts()).await {
        Ok(p) => p,
        Err(e) => {
            // Unreachable, or not the pinned key: everything due for the domain waits,
            // not only a batch.
            let items = claim_all(sh, queue, domain).await;
            defer_all(sh, queue, items, &e).await;
            return;
        }
    };
    let (mut rd, mut wr) = peer.split();
    // The verdicts of a batch are made durable (deletes, notes, notices) in the
    // background, all at once, while the next batch is already on the wire: they share
    // group commits instead of waiting for one fsync each.
    let mut settling = JoinSet::new();
    loop {
        let taken = queue
            .state
            .lock()
            .take(domain, relay.config.load().pipeline);
        if taken.is_empty() {
            break;
        }
        let batch = claim(sh, queue, taken).await;
        if batch.is_empty() {
            continue;
        }
        let (outcomes, err) = send_batch(sh, &mut rd, &mut wr, &batch).await;
        let failed = err.is_some();
        let why_unsent = err.map_or_else(|| "not sent".to_owned(), |e| e.to_string());
        for ((id, item), verdict) in batch.into_iter().zip(outcomes) {
            let (sh, queue, domain) = (sh.clone(), queue.clone(), domain.to_owned());
            let why_unsent = why_unsent.clone();
            settling.spawn(async move {
                match verdict {
                    Some(MailVerdict::Accepted) => delivered(&sh, &queue, id).await,
                    Some(MailVerdict::Refused(text)) => {
                        let why = format!("the server of {domain} refused it: {text}");
                        give_up(&sh, &queue, id, &item, &why).await;
                    }
                    Some(MailVerdict::Failed) => {
                        let why = format!("the server of {domain} answered FAILURE (try later)");
                        defer(&sh, &queue, id, item, &why).await;
                    }
                    None => defer(&sh, &queue, id, item, &why_unsent).await,
                }
            });
        }
        // Reap what has settled, so the set stays small on a long-lived connection.
        while settling.try_join_next().is_some() {}
        if failed {
            break;
        }
    }
    Peer::join(rd, wr).close().await;
    // The worker counts as active until its verdicts are durable.
    while settling.join_next().await.is_some() {}
}

/// Claims `items` for this node ([`cmtp_store::MailStore::claim`]: the queue may be shared by
/// several nodes on one database) and returns those granted, with their notes as
/// stored now. One that another node holds waits in the index until that lease ends
/// (then this node asks again: that is how a dead node's work is taken over); one that
/// is gone (delivered or dropped elsewhere) leaves the index. Nothing else is done with
/// a message this node has not claimed: no attempt, no note written, no bounce.
async fn claim<S: Backend>(
    sh: &Shared<S>,
    queue: &Queue,
    items: Vec<(u64, Item)>,
) -> Vec<(u64, Item)> {
    if items.is_empty() {
        return items;
    }
    let cfg = sh.relay.config.load();
    let now = crate::unix_now();
    let ids: Vec<u64> = items.iter().map(|(id, _)| *id).collect();
    let until = now.saturating_add(cfg.queue_lease_secs);
    let claims = sh
        .store
        .claim(RELAY_QUEUE, &ids, &queue.node, until, now)
        .await;
    let mut st = queue.state.lock();
    let claims = match claims {
        Ok(c) => c,
        Err(e) => {
            // The store is unavailable: nothing can be sent or recorded now. Try again
            // after the first retry delay (the note is not touched).
            tracing::warn!(error = %e, "cannot claim queued messages; trying again later");
            let retry = now.saturating_add(cfg.retry_secs.first().copied().unwrap_or(60));
            for (id, mut item) in items {
                item.note.next = retry;
                st.reschedule(id, item.note);
            }
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for ((id, mut item), answer) in items.into_iter().zip(claims) {
        match answer {
            Claim::Granted(info) => {
                if let Some(note) = QueueNote::decode(&info.meta.note) {
                    item.note = note;
                }
                out.push((id, item));
            }
            Claim::Held { owner, until } => {
                sh.relay.metrics.claims_held.fetch_add(1, Relaxed);
                tracing::debug!(id, %owner, until, "queued message held by another node");
                item.note.next = until.max(now.saturating_add(1));
                st.reschedule(id, item.note);
            }
            Claim::Gone => st.remove(id),
        }
    }
    out
}

/// Claims every due message of `domain` ([`claim`]).
async fn claim_all<S: Backend>(sh: &Shared<S>, queue: &Queue, domain: &str) -> Vec<(u64, Item)> {
    // The index's lock is released before the store is asked.
    let due = queue.state.lock().take_all(domain);
    claim(sh, queue, due).await
}

/// Sends a batch pipelined; returns each message's verdict (None = no verdict: not sent,
/// or the connection failed first) and the connection's error, if any.
async fn send_batch<S: Backend>(
    sh: &Shared<S>,
    rd: &mut PeerReader,
    wr: &mut PeerWriter,
    batch: &[(u64, Item)],
) -> (Vec<Option<MailVerdict>>, Option<PeerError>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
    let writer = async {
        for (i, (id, _)) in batch.iter().enumerate() {
            let opened = sh.store.open(cmtp_store::RELAY_QUEUE, *id).await;
            let mut reader = match opened {
                Ok(Some((_, r))) => r,
                // Dropped by the operator meanwhile, or unreadable: not sent.
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(id, error = %e, "cannot read a queued message");
                    continue;
                }
            };
            wr.mail_command().await?;
            loop {
                match reader.read_chunk(CHUNK).await {
                    Ok(Some(chunk)) => wr.write("sending a message", &chunk).await?,
                    Ok(None) => break,
                    Err(e) => {
                        // Half a message was sent: the connection cannot be framed any
                        // more. Fail it; everything unanswered is retried.
                        return Err(PeerError::Local(format!(
                            "reading queued message {id} failed: {e}"
                        )));
                    }
                }
            }
            let _ = tx.send(i);
        }
        drop(tx);
        Ok::<(), PeerError>(())
    };
    let mut verdicts: Vec<Option<MailVerdict>> = vec![None; batch.len()];
    let reader = async {
        while let Some(i) = rx.recv().await {
            match rd.mail_verdict().await {
                Ok(v) => verdicts[i] = Some(v),
                Err(e) => return Err(e),
            }
        }
        Ok::<(), PeerError>(())
    };
    let (w, r) = tokio::join!(writer, reader);
    let err = r.err().or(w.err());
    (verdicts, err)
}

/// The remote accepted: the message leaves the queue.
async fn delivered<S: Backend>(sh: &Shared<S>, queue: &Queue, id: u64) {
    match sh.store.delete(cmtp_store::RELAY_QUEUE, id).await {
        Ok(_) => {}
        // Delivered but not removed: it would be sent again, and the remote, seeing
        // its relay id, would store it once. Logged, not fatal.
        Err(e) => {
            tracing::error!(id, error = %e, "cannot remove a delivered message from the queue")
        }
    }
    queue.state.lock().remove(id);
    sh.relay.metrics.delivered.fetch_add(1, Relaxed);
    tracing::info!(id, "relayed message delivered");
}

/// A temporary failure: the state is saved with the next attempt, or the message is
/// given up when it is too old.
async fn defer<S: Backend>(sh: &Shared<S>, queue: &Queue, id: u64, mut item: Item, why: &str) {
    let cfg = sh.relay.config.load();
    let now = crate::unix_now();
    sh.relay.metrics.deferred.fetch_add(1, Relaxed);
    if !item
        .note
        .failed(now, why, &cfg.retry_secs, cfg.max_queue_age_secs)
    {
        let reason = format!(
            "no delivery within {} s (last error: {why})",
            cfg.max_queue_age_secs
        );
        give_up(sh, queue, id, &item, &reason).await;
        return;
    }
    tracing::info!(id, to = %item.note.recipient(), attempts = item.note.attempts,
        next = item.note.next, error = why, "relay deferred");
    if let Err(e) = sh
        .store
        .set_note(cmtp_store::RELAY_QUEUE, id, item.note.encode())
        .await
    {
        // The attempt count is lost on a restart; the message itself is safe.
        tracing::error!(id, error = %e, "cannot save the queue state");
    }
    // This node keeps the message until a while after its next attempt: the other nodes
    // leave it alone unless this one is dead by then.
    let until = item.note.next.saturating_add(cfg.queue_lease_secs);
    if let Err(e) = sh
        .store
        .claim(RELAY_QUEUE, &[id], &queue.node, until, now)
        .await
    {
        tracing::warn!(id, error = %e, "cannot extend the claim on a deferred message");
    }
    queue.state.lock().reschedule(id, item.note);
}

async fn defer_all<S: Backend>(sh: &Shared<S>, queue: &Queue, items: Vec<(u64, Item)>, why: &str) {
    for (id, item) in items {
        defer(sh, queue, id, item, why).await;
    }
}

/// A permanent failure: the sender gets a notice and the message leaves the queue.
async fn give_up<S: Backend>(sh: &Shared<S>, queue: &Queue, id: u64, item: &Item, why: &str) {
    sh.relay.metrics.failed.fetch_add(1, Relaxed);
    tracing::info!(id, to = %item.note.recipient(), reason = why, "relay failed permanently");
    bounce(
        sh,
        &Failure {
            note: &item.note,
            src_account: &item.src_account,
            src_domain: &item.src_domain,
            reason: why,
        },
    )
    .await;
    if let Err(e) = sh.store.delete(cmtp_store::RELAY_QUEUE, id).await {
        tracing::error!(id, error = %e, "cannot remove a failed message from the queue");
    }
    queue.state.lock().remove(id);
}
