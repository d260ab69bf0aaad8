//! `MAIL\0` + message (spec §5.5, §6): streamed from the socket into a store delivery.
//!
//! The decoder's consumed bytes are exactly the message, so they are what gets written;
//! memory stays bounded by the read buffer whatever the message size. SUCCESS is sent
//! only once `commit` has resolved (the message is durable).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Buf;
use cmtp_proto::{Envelope, MessageDecoder, MessageEvent, MessageLimits};
use cmtp_store::{Delivery, LogDelivery, MailStore, MessageMeta, UserStore};

use crate::connection::{ConnError, Flow};
use crate::metrics::FailureReason;
use crate::relay::MailDecision;
use crate::{connection::Conn, server::Shared};

/// Where the message's bytes go.
enum Sink {
    /// Envelope not complete yet: its bytes (≤ 24 + 4 × 256) wait here.
    Undecided(Vec<u8>),
    /// A local mailbox.
    Deliver(LogDelivery, MessageMeta),
    /// Read and dropped; the reply is `reply`.
    Discard(Refusal),
}

#[derive(Clone, Copy)]
enum Refusal {
    /// DELIVERYFAILURE (no such account, foreign domain, invalid name).
    Delivery,
    /// General FAILURE (the store failed; the connection stays usable).
    Internal,
}

/// Decides where a message goes from its envelope.
fn route(sh: &Shared, env: &Envelope) -> Result<String, Refusal> {
    if cmtp_proto::validate_account(&env.dest_account).is_err()
        || cmtp_proto::validate_domain(&env.dest_domain).is_err()
    {
        return Err(Refusal::Delivery);
    }
    if !sh.is_local(&env.dest_domain) {
        return match sh.relay.mail(&env.dest_account, &env.dest_domain) {
            MailDecision::Refuse => Err(Refusal::Delivery),
        };
    }
    if env.dest_account.is_empty() {
        // The server's own mailbox (postmaster).
        return Ok(String::new());
    }
    match sh.store.public_key(&env.dest_account) {
        Ok(Some(_)) => Ok(env.dest_account.clone()),
        Ok(None) => Err(Refusal::Delivery),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on MAIL");
            Err(Refusal::Internal)
        }
    }
}

/// Refuses (DELIVERYFAILURE) a mailbox at or over its quota: `max_mailbox_messages`
/// messages or `max_mailbox_bytes` bytes already stored. Checked before the message is
/// read, so one message may take a mailbox over the byte quota by at most its own size.
fn over_quota(sh: &Shared, mailbox: &str) -> Result<(), Refusal> {
    let l = &sh.config.limits;
    let (messages, bytes) = MailStore::mailbox_usage(&sh.store, mailbox).map_err(|e| {
        tracing::error!(error = %e, "mail store failed on the quota check");
        Refusal::Internal
    })?;
    if messages >= l.max_mailbox_messages || bytes >= l.max_mailbox_bytes {
        tracing::debug!(mailbox, messages, bytes, "mailbox over quota");
        return Err(Refusal::Delivery);
    }
    Ok(())
}

/// Receives one message. Framing errors and limit violations answer FAILURE and close;
/// a refused destination is read to its end and answered DELIVERYFAILURE.
pub(crate) async fn mail(c: &mut Conn) -> Result<Flow, ConnError> {
    let sh = c.shared.clone();
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
        let (used, envelope, end, need_more) = match dec.decode(&c.inbuf) {
            Ok((used, ev)) => match ev {
                Some(MessageEvent::Envelope(e)) => (used, Some(e), false, false),
                Some(MessageEvent::End) => (used, None, true, false),
                Some(_) => (used, None, false, false),
                None => (used, None, false, true),
            },
            Err(e) => {
                tracing::debug!(peer = %c.peer, error = %e, "message refused");
                let reason = match e {
                    cmtp_proto::MessageError::TooLarge { .. }
                    | cmtp_proto::MessageError::TooManyAttachments { .. }
                    | cmtp_proto::MessageError::LogTooLong { .. } => FailureReason::TooLarge,
                    _ => FailureReason::BadMessage,
                };
                sh.metrics.failure(reason);
                sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
                c.reply_failure();
                return Ok(Flow::Close);
            }
        };
        let bytes = &c.inbuf[..used];
        match &mut sink {
            Sink::Undecided(head) => {
                head.extend_from_slice(bytes);
                if let Some(env) = envelope {
                    let routed = route(&sh, &env).and_then(|m| over_quota(&sh, &m).map(|()| m));
                    sink = match routed {
                        Ok(mailbox) => {
                            let mut d = sh.store.begin();
                            let head = std::mem::take(head);
                            if let Err(e) = d.write(&head).await {
                                tracing::error!(error = %e, "store write failed");
                                Sink::Discard(Refusal::Internal)
                            } else {
                                let meta = MessageMeta {
                                    mailbox,
                                    src_account: env.src_account.clone(),
                                    src_domain: env.src_domain.clone(),
                                    version: env.version,
                                    attachment_count: env.attachment_count,
                                    body_end: env.body_end(),
                                };
                                Sink::Deliver(d, meta)
                            }
                        }
                        Err(r) => Sink::Discard(r),
                    };
                }
            }
            Sink::Deliver(d, _) => {
                if !bytes.is_empty()
                    && let Err(e) = d.write(bytes).await
                {
                    tracing::error!(error = %e, "store write failed");
                    sink = Sink::Discard(Refusal::Internal);
                }
            }
            Sink::Discard(_) => {}
        }
        c.inbuf.advance(used);
        if end {
            break;
        }
        if need_more {
            // Past the grace period the message must have arrived at min_transfer_rate on
            // average: the next byte is due when what we have would be exactly on time.
            c.deadline = (l.min_transfer_rate > 0).then(|| {
                let on_time =
                    Duration::from_secs_f64(dec.consumed() as f64 / l.min_transfer_rate as f64);
                start + grace.max(on_time)
            });
            // Dropping `sink` on error aborts the delivery: nothing is stored.
            c.fill().await?;
        }
    }
    c.deadline = None;
    match sink {
        Sink::Deliver(d, meta) => match d.commit(meta).await {
            Ok(id) => {
                sh.metrics.deliveries_ok.fetch_add(1, Relaxed);
                tracing::debug!(peer = %c.peer, id, "message stored");
                c.out.extend_from_slice(&sh.signer.success);
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                sh.metrics.failure(FailureReason::Internal);
                sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
                c.reply_failure();
            }
        },
        Sink::Discard(Refusal::Delivery) => {
            sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
            c.out.extend_from_slice(&sh.signer.delivery_failure);
        }
        Sink::Discard(Refusal::Internal) => {
            sh.metrics.failure(FailureReason::Internal);
            sh.metrics.deliveries_failed.fetch_add(1, Relaxed);
            c.reply_failure();
        }
        // The decoder returns End only after the envelope.
        Sink::Undecided(_) => c.reply_failure(),
    }
    Ok(Flow::Continue)
}
