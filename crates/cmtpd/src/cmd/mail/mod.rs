//! `MAIL\0` + message and `SUBMIT\0…` + message (spec §5.5, §6; docs/protocol.md D5):
//! streamed from the socket into a local mailbox or the relay queue.
//!
//! The decoder's consumed bytes are exactly the message, so they are what gets written
//! (for the relay queue, the envelope and log are rewritten to append our log entry);
//! memory stays bounded by the read buffer and the log limit whatever the message size.
//! SUCCESS is sent only once `commit` has resolved (the message is durable).

mod decide;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use cmtp_crypto::{Blake2b256, Signature};
use cmtp_proto::submit::SubmitRequest;
use cmtp_proto::{MessageDecoder, MessageError, MessageEvent, MessageLimits};
use cmtp_store::{Delivery, MessageMeta, StoreError};

use crate::connection::{Conn, ConnError, Flow};
use crate::metrics::FailureReason;
use crate::relay::Queued;
use crate::shared::{Backend, Shared};
use decide::{Proof, Refusal, Relaying, Sink, decide};

/// The message's log, gathered as it streams (bounded by `max_log_size`), and what is
/// decided once it is complete.
struct LogTap {
    /// Announced length (`None` until the envelope).
    len: Option<u64>,
    bytes: Vec<u8>,
    done: bool,
}

impl LogTap {
    fn complete(&self) -> bool {
        self.len == Some(self.bytes.len() as u64)
    }
}

/// What the per-message log line tells of a message once its envelope is known.
struct Summary {
    from: String,
    to: String,
    size: u64,
}

/// Where a message went: its id in the mailbox or the relay queue.
enum Outcome {
    Stored(u64),
    Queued(u64),
}

/// The one info line per MAIL/SUBMIT (as Postfix logs one per message): command, id,
/// from, to, size, result, peer and time taken. Addresses as `log_addresses` says.
fn log_message<S: Backend>(
    c: &Conn<S>,
    command: &'static str,
    start: Instant,
    summary: Option<&Summary>,
    id: Option<u64>,
    result: &str,
) {
    let (from, to, size) = summary.map_or(("-", "-", 0), |s| (&*s.from, &*s.to, s.size));
    let id = id.map_or_else(|| "-".to_owned(), |i| i.to_string());
    tracing::info!(
        target: "cmtpd::message",
        command = %command,
        id = %id,
        from = %from,
        to = %to,
        size,
        result = %result,
        peer = %c.peer(),
        ms = start.elapsed().as_millis() as u64,
        "message"
    );
}

/// The `result` field of a refusal.
fn refusal_text(r: &Refusal) -> String {
    match r {
        Refusal::Delivery(None) => "refused: no such account".to_owned(),
        Refusal::Delivery(Some(reason)) => format!("refused: {}", reason.label()),
        Refusal::TryLater(reason) => format!("deferred: {}", reason.label()),
        Refusal::Internal(why) => format!("failed: {why}"),
        Refusal::Duplicate => "duplicate: already received".to_owned(),
    }
}

/// Receives one message (after `MAIL\0`, or after `SUBMIT\0…` with its `submit` proof).
/// Framing errors and limit violations answer FAILURE and close; a refused destination
/// is read to its end and answered DELIVERYFAILURE.
pub(super) async fn mail<S: Backend>(
    c: &mut Conn<S>,
    submit: Option<SubmitRequest>,
) -> Result<Flow, ConnError> {
    let sh = c.shared().clone();
    let command = if submit.is_some() { "SUBMIT" } else { "MAIL" };
    let mut summary: Option<Summary> = None;
    let cfg = sh.config.load();
    let l = &cfg.limits;
    let mut dec = MessageDecoder::new(MessageLimits {
        max_total: l.max_message_size,
        max_attachments: l.max_attachments,
        max_log: l.max_log_size,
    });
    let mut proof = submit.map(|req| Proof {
        req,
        hasher: Blake2b256::new(),
        key: None,
        domain: String::new(),
    });
    let mut sink = Sink::Undecided(Vec::new());
    let mut log = LogTap {
        len: None,
        bytes: Vec::new(),
        done: false,
    };
    let start = Instant::now();
    let grace = Duration::from_secs(l.transfer_grace_secs);
    loop {
        // `(n, None)` from the decoder means every byte given was used and more are
        // needed; any event may be followed by more without reading (e.g. `End`).
        let (used, envelope, is_log, end, need_more) = match dec.decode(c.input()) {
            Ok((used, ev)) => match ev {
                Some(MessageEvent::Envelope(e)) => (used, Some(e), false, false, false),
                Some(MessageEvent::Log(chunk)) => {
                    log.bytes.extend_from_slice(chunk);
                    (used, None, true, false, false)
                }
                Some(MessageEvent::End) => (used, None, false, true, false),
                Some(_) => (used, None, false, false, false),
                None => (used, None, false, false, true),
            },
            Err(e) => {
                tracing::debug!(peer = %c.peer(), error = %e, "message refused");
                log_message(
                    c,
                    command,
                    start,
                    summary.as_ref(),
                    None,
                    &format!("refused: {e}"),
                );
                let reason = match e {
                    MessageError::TooLarge { .. }
                    | MessageError::TooManyAttachments { .. }
                    | MessageError::LogTooLong { .. } => FailureReason::TooLarge,
                    _ => FailureReason::BadMessage,
                };
                sh.metrics.failure(reason);
                sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
                c.reply_failure();
                return Ok(Flow::Close);
            }
        };
        let bytes = &c.input()[..used];
        if let Some(p) = proof.as_mut() {
            p.hasher.update(bytes);
        }
        match &mut sink {
            Sink::Undecided(head) => {
                head.extend_from_slice(bytes);
                if let Some(env) = envelope {
                    summary = Some(Summary {
                        from: sh.log_address(&env.src_account, &env.src_domain),
                        to: sh.log_address(&env.dest_account, &env.dest_domain),
                        size: env.body_end(),
                    });
                    log.len = Some(env.log_length);
                    let head = std::mem::take(head);
                    sink = decide(c, &env, head, proof.as_mut()).await;
                }
            }
            Sink::Deliver(d, _, _) => {
                if !bytes.is_empty()
                    && let Err(e) = d.write(bytes).await
                {
                    // Dropping the delivery aborts it: nothing is stored.
                    sink = Sink::Discard(Refusal::Internal(format!("store write failed: {e}")));
                }
            }
            // The envelope and log are written, rewritten, once the log is complete.
            Sink::Relay(r) if log.done && !is_log => {
                if !bytes.is_empty()
                    && let Err(e) = r.d.write(bytes).await
                {
                    sink = Sink::Discard(Refusal::Internal(format!("store write failed: {e}")));
                }
            }
            Sink::Relay(..) | Sink::Discard(_) => {}
        }
        c.consume(used);
        if !log.done && log.complete() {
            log.done = true;
            sink = log_complete(c, sink, &log.bytes).await;
        }
        if end {
            break;
        }
        if need_more {
            // Past the grace period the message must have arrived at min_transfer_rate on
            // average: the next byte is due when what we have would be exactly on time.
            c.set_deadline((l.min_transfer_rate > 0).then(|| {
                let on_time =
                    Duration::from_secs_f64(dec.consumed() as f64 / l.min_transfer_rate as f64);
                start + grace.max(on_time)
            }));
            // Dropping `sink` on error aborts the delivery: nothing is stored.
            if let Err(e) = c.fill().await {
                log_message(
                    c,
                    command,
                    start,
                    summary.as_ref(),
                    None,
                    &format!("aborted: {e}"),
                );
                return Err(e);
            }
        }
    }
    c.set_deadline(None);
    if let Some(p) = proof
        && !matches!(sink, Sink::Discard(_))
        && !proof_holds(p)
    {
        tracing::debug!(peer = %c.peer(), "SUBMIT signature does not verify");
        sink = Sink::Discard(Refusal::Delivery(Some(FailureReason::RelayDenied)));
    }
    let refusal = match finish(&sh, sink).await {
        Ok(outcome) => {
            let (id, result) = match outcome {
                Outcome::Stored(id) => (id, "stored"),
                Outcome::Queued(id) => (id, "queued"),
            };
            log_message(c, command, start, summary.as_ref(), Some(id), result);
            c.reply(&sh.signer.success);
            return Ok(Flow::Continue);
        }
        Err(r) => r,
    };
    log_message(
        c,
        command,
        start,
        summary.as_ref(),
        None,
        &refusal_text(&refusal),
    );
    if let Refusal::Duplicate = refusal {
        sh.relay.metrics.duplicates.fetch_add(1, Relaxed);
        tracing::debug!(peer = %c.peer(), "message already received (relay id seen)");
        c.reply(&sh.signer.success);
        return Ok(Flow::Continue);
    }
    sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
    Ok(match refusal {
        Refusal::Delivery(reason) => {
            if let Some(reason) = reason {
                sh.metrics.failure(reason);
                if matches!(
                    reason,
                    FailureReason::RelayDenied | FailureReason::HopLimit | FailureReason::NoRoute
                ) {
                    sh.relay.metrics.refused.fetch_add(1, Relaxed);
                }
            }
            c.reply(&sh.signer.delivery_failure);
            Flow::Continue
        }
        Refusal::TryLater(reason) => {
            sh.metrics.failure(reason);
            c.reply_failure();
            Flow::Continue
        }
        Refusal::Internal(why) => c.internal_failure("delivery failed", &why),
        Refusal::Duplicate => unreachable!("answered above"),
    })
}

/// The whole log is known: a local delivery checks the relay id (a repeat is not stored
/// twice); a relayed message gets the hop check and our log entry, and its envelope and
/// log are written.
async fn log_complete<S: Backend>(
    c: &Conn<S>,
    sink: Sink<S::Delivery>,
    log: &[u8],
) -> Sink<S::Delivery> {
    let sh = c.shared();
    // The previous hop's relay id: a repeat of a message already stored or queued here
    // (that hop lost our SUCCESS) is acknowledged, not kept twice. (A message seen before
    // had this same log, so it was under the hop limit then too.)
    let prev = cmtp_proto::log::last_relay_entry(log).map(|e| e.id);
    if prev.is_some_and(|id| sh.store.seen_relay_id(&id)) {
        return match sink {
            Sink::Deliver(..) | Sink::Relay(_) => Sink::Discard(Refusal::Duplicate),
            other => other,
        };
    }
    match sink {
        Sink::Deliver(d, mut meta, hold) => {
            meta.relay_id = prev;
            Sink::Deliver(d, meta, hold)
        }
        Sink::Relay(mut r) => {
            if cmtp_proto::log::count_entries(log) >= sh.relay.config.load().max_hops {
                tracing::info!(peer = %c.peer(), to = %r.note.recipient(), "hop limit reached: not relayed");
                return Sink::Discard(Refusal::Delivery(Some(FailureReason::HopLimit)));
            }
            r.relay_id = prev;
            r.note.bounce = cmtp_proto::log::is_bounce(log);
            let mut id = [0u8; 16];
            if let Err(e) = cmtp_crypto::random_bytes(&mut id) {
                return Sink::Discard(Refusal::Internal(format!("no randomness: {e}")));
            }
            // The entry's `for=` is informational: names with spaces (which the name rule
            // allows) are shown with `_` so the entry stays parseable.
            let plain = |s: &str| s.replace(|c: char| c.is_whitespace() || c.is_control(), "_");
            let entry = cmtp_proto::log::RelayEntry {
                by: plain(sh.config.load().primary_domain()),
                from: c.peer().ip().to_string(),
                at: crate::unix_now(),
                id,
                for_account: plain(&r.env.dest_account),
                for_domain: plain(&r.env.dest_domain).replace('@', "_"),
            };
            let text = match entry.encode() {
                Ok(t) => t,
                Err(e) => return Sink::Discard(Refusal::Internal(format!("log entry: {e}"))),
            };
            let mut new_log = Vec::with_capacity(log.len() + 160);
            cmtp_proto::log::append_entry(log, &text, &mut new_log);
            r.env.log_length = new_log.len() as u64;
            let mut head = Vec::with_capacity(r.env.encoded_len() + new_log.len());
            r.env.encode(&mut head);
            head.extend_from_slice(&new_log);
            if let Err(e) = r.d.write(&head).await {
                return Sink::Discard(Refusal::Internal(format!("store write failed: {e}")));
            }
            Sink::Relay(r)
        }
        other => other,
    }
}

/// Whether a submission's signature covers the message just read.
fn proof_holds(p: Proof) -> bool {
    let Some(key) = p.key else { return false };
    let digest = p.hasher.finalize();
    let signed =
        cmtp_proto::submit::signing_bytes(&p.req.user, &p.domain, p.req.timestamp, &digest);
    let Ok(sig) = Signature::from_bytes(&p.req.signature) else {
        return false;
    };
    key.verify(&signed, &sig).is_ok()
}

/// Commits the message where it goes; `Err` is the refusal to answer.
async fn finish<S: Backend>(sh: &Shared<S>, sink: Sink<S::Delivery>) -> Result<Outcome, Refusal> {
    match sink {
        Sink::Deliver(d, meta, hold) => {
            let committed = d.commit_within(meta, hold.limit()).await;
            // The store counts the message in its usage before the commit resolves.
            drop(hold);
            match committed {
                Ok(id) => {
                    sh.metrics.deliveries_ok.fetch_add(1, Relaxed);
                    Ok(Outcome::Stored(id))
                }
                // Another node's deliveries filled the mailbox meanwhile.
                Err(StoreError::OverQuota) => {
                    tracing::debug!("mailbox over quota at commit");
                    Err(Refusal::Delivery(Some(FailureReason::OverQuota)))
                }
                Err(e) => Err(Refusal::Internal(format!("store commit failed: {e}"))),
            }
        }
        Sink::Relay(r) => {
            let Relaying {
                d,
                env,
                note,
                relay_id,
                hold,
            } = r;
            let meta = MessageMeta {
                mailbox: cmtp_store::RELAY_QUEUE.to_owned(),
                src_account: env.src_account.clone(),
                src_domain: env.src_domain.clone(),
                version: env.version,
                attachment_count: env.attachment_count,
                body_end: env.body_end(),
                note: note.encode(),
                relay_id,
            };
            let committed = d.commit_within(meta, hold.limit()).await;
            drop(hold);
            match committed {
                Ok(id) => {
                    sh.metrics.deliveries_ok.fetch_add(1, Relaxed);
                    tracing::debug!(id, to = %note.recipient(), "message queued for relay");
                    sh.relay.queued(Queued {
                        id,
                        note,
                        src_account: env.src_account,
                        src_domain: env.src_domain,
                    });
                    Ok(Outcome::Queued(id))
                }
                Err(StoreError::OverQuota) => {
                    tracing::warn!("relay queue full at commit");
                    Err(Refusal::TryLater(FailureReason::QueueFull))
                }
                Err(e) => Err(Refusal::Internal(format!("queue commit failed: {e}"))),
            }
        }
        Sink::Discard(r) => Err(r),
        // The decoder returns End only after the envelope.
        Sink::Undecided(_) => Err(Refusal::Internal(
            "message ended before its envelope".into(),
        )),
    }
}
