//! `MAIL\0` + message (spec §5.5, §6): streamed from the socket into a store delivery.
//!
//! The decoder's consumed bytes are exactly the message, so they are what gets written;
//! memory stays bounded by the read buffer whatever the message size. SUCCESS is sent
//! only once `commit` has resolved (the message is durable).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use cmtp_proto::{Envelope, MessageDecoder, MessageError, MessageEvent, MessageLimits};
use cmtp_store::{Delivery, MessageMeta};

use crate::connection::{Conn, ConnError, Flow};
use crate::metrics::FailureReason;
use crate::quota::{Quota, QuotaError, QuotaHold};
use crate::relay::MailDecision;
use crate::shared::{Backend, Shared};

/// Where the message's bytes go.
enum Sink<D> {
    /// Envelope not complete yet: its bytes (≤ 24 + 4 × 256) wait here.
    Undecided(Vec<u8>),
    /// A local mailbox; the quota hold is released once the commit has resolved.
    Deliver(D, MessageMeta, QuotaHold),
    /// Read and dropped; the reply is decided by the refusal.
    Discard(Refusal),
}

/// Why a message is read and dropped.
enum Refusal {
    /// DELIVERYFAILURE: no such account, foreign domain, invalid name, full mailbox; with
    /// the failure counter to bump, if any (an unknown account is not a failure of ours).
    Delivery(Option<FailureReason>),
    /// General FAILURE, connection stays: the mailbox receives faster than its limit.
    TryLater,
    /// General FAILURE and close: the server failed (store error).
    Internal(String),
}

/// Decides where a message goes from its envelope.
fn route<S: Backend>(sh: &Shared<S>, env: &Envelope) -> Result<String, Refusal> {
    if cmtp_proto::validate_account(&env.dest_account).is_err()
        || cmtp_proto::validate_domain(&env.dest_domain).is_err()
    {
        return Err(Refusal::Delivery(None));
    }
    // Sender names follow the same rule (docs/protocol.md §4): they are stored, listed
    // and shown to people, so `../x` or control characters are refused here.
    if cmtp_proto::validate_account(&env.src_account).is_err()
        || cmtp_proto::validate_domain(&env.src_domain).is_err()
    {
        return Err(Refusal::Delivery(Some(FailureReason::BadSender)));
    }
    if !sh.is_local(&env.dest_domain) {
        return match sh.relay.mail(&env.dest_account, &env.dest_domain) {
            MailDecision::Refuse => Err(Refusal::Delivery(None)),
        };
    }
    if env.dest_account.is_empty() {
        // The server's own mailbox (postmaster).
        return Ok(String::new());
    }
    match sh.store.public_key(&env.dest_account) {
        Ok(Some(_)) => Ok(env.dest_account.clone()),
        Ok(None) => Err(Refusal::Delivery(None)),
        Err(e) => Err(Refusal::Internal(format!("user store failed on MAIL: {e}"))),
    }
}

/// Admits a message to `mailbox`: its rate bucket, then its quota (atomically with the
/// deliveries in flight).
fn admit<S: Backend>(sh: &Shared<S>, mailbox: &str, env: &Envelope) -> Result<QuotaHold, Refusal> {
    if !sh.mailbox_rates.allow(mailbox) {
        tracing::debug!(mailbox, "mailbox over its MAIL rate");
        return Err(Refusal::TryLater);
    }
    let l = &sh.config.limits;
    let quota = Quota {
        messages: l.max_mailbox_messages,
        bytes: l.max_mailbox_bytes,
    };
    sh.quotas
        .reserve(mailbox, env.body_end(), quota, || {
            sh.store.mailbox_usage(mailbox)
        })
        .map_err(|e| match e {
            QuotaError::Full { messages, bytes } => {
                tracing::debug!(mailbox, messages, bytes, "mailbox over quota");
                Refusal::Delivery(Some(FailureReason::OverQuota))
            }
            QuotaError::Unknown(e) => Refusal::Internal(format!("mailbox usage unknown: {e}")),
        })
}

/// Starts the delivery once the envelope is known.
async fn decide<S: Backend>(sh: &Shared<S>, env: &Envelope, head: Vec<u8>) -> Sink<S::Delivery> {
    let hold = match route(sh, env).and_then(|m| admit(sh, &m, env).map(|h| (m, h))) {
        Ok(x) => x,
        Err(r) => return Sink::Discard(r),
    };
    let (mailbox, hold) = hold;
    let mut d = sh.store.begin();
    if let Err(e) = d.write(&head).await {
        return Sink::Discard(Refusal::Internal(format!("store write failed: {e}")));
    }
    let meta = MessageMeta {
        mailbox,
        src_account: env.src_account.clone(),
        src_domain: env.src_domain.clone(),
        version: env.version,
        attachment_count: env.attachment_count,
        body_end: env.body_end(),
        note: Vec::new(),
        relay_id: None,
    };
    Sink::Deliver(d, meta, hold)
}

/// Receives one message. Framing errors and limit violations answer FAILURE and close;
/// a refused destination is read to its end and answered DELIVERYFAILURE.
pub(super) async fn mail<S: Backend>(c: &mut Conn<S>) -> Result<Flow, ConnError> {
    let sh = c.shared().clone();
    let l = &sh.config.limits;
    let mut dec = MessageDecoder::new(MessageLimits {
        max_total: l.max_message_size,
        max_attachments: l.max_attachments,
        max_log: l.max_log_size,
    });
    let mut sink = Sink::Undecided(Vec::new());
    let start = Instant::now();
    let grace = Duration::from_secs(l.transfer_grace_secs);
    loop {
        // `(n, None)` from the decoder means every byte given was used and more are
        // needed; any event may be followed by more without reading (e.g. `End`).
        let (used, envelope, end, need_more) = match dec.decode(c.input()) {
            Ok((used, ev)) => match ev {
                Some(MessageEvent::Envelope(e)) => (used, Some(e), false, false),
                Some(MessageEvent::End) => (used, None, true, false),
                Some(_) => (used, None, false, false),
                None => (used, None, false, true),
            },
            Err(e) => {
                tracing::debug!(peer = %c.peer(), error = %e, "message refused");
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
        match &mut sink {
            Sink::Undecided(head) => {
                head.extend_from_slice(bytes);
                if let Some(env) = envelope {
                    let head = std::mem::take(head);
                    sink = decide(&sh, &env, head).await;
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
            Sink::Discard(_) => {}
        }
        c.consume(used);
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
            c.fill().await?;
        }
    }
    c.set_deadline(None);
    let refusal = match sink {
        Sink::Deliver(d, meta, hold) => {
            let committed = d.commit(meta).await;
            // The store counts the message in its usage before the commit resolves.
            drop(hold);
            match committed {
                Ok(id) => {
                    sh.metrics.deliveries_ok.fetch_add(1, Relaxed);
                    tracing::debug!(peer = %c.peer(), id, "message stored");
                    c.reply(&sh.signer.success);
                    return Ok(Flow::Continue);
                }
                Err(e) => Refusal::Internal(format!("store commit failed: {e}")),
            }
        }
        Sink::Discard(r) => r,
        // The decoder returns End only after the envelope.
        Sink::Undecided(_) => Refusal::Internal("message ended before its envelope".into()),
    };
    sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
    Ok(match refusal {
        Refusal::Delivery(reason) => {
            if let Some(reason) = reason {
                sh.metrics.failure(reason);
            }
            c.reply(&sh.signer.delivery_failure);
            Flow::Continue
        }
        Refusal::TryLater => {
            sh.metrics.failure(FailureReason::MailboxRate);
            c.reply_failure();
            Flow::Continue
        }
        Refusal::Internal(why) => c.internal_failure("delivery failed", &why),
    })
}
