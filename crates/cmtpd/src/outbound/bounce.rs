//! Delivery-failure notices ("bounces"): a message in the sender's own mailbox, sealed
//! to the sender's key like any mail, from `postmaster@<sender's domain>`, naming the
//! recipient, the reason and the remote server's answer. Its log carries a
//! `cmtp-bounce/1` entry, so a notice is never itself bounced.

use std::sync::atomic::Ordering::Relaxed;

use cmtp_crypto::PublicKey;
use cmtp_proto::{Envelope, InternalBody};
use cmtp_store::{Delivery, MessageMeta};

use crate::relay::QueueNote;
use crate::shared::{Backend, Shared};

/// The account a notice comes from.
pub use crate::shared::POSTMASTER;

/// What the sender is told.
pub struct Failure<'a> {
    /// The queued message's state (recipient, attempts, when queued).
    pub note: &'a QueueNote,
    /// Sender account.
    pub src_account: &'a str,
    /// Sender domain.
    pub src_domain: &'a str,
    /// Why delivery ended, in words.
    pub reason: &'a str,
}

/// Writes a notice of `f` into the sender's mailbox when the sender is a local account;
/// returns whether one was written. Never for a notice (`note.bounce`).
pub async fn bounce<S: Backend>(sh: &Shared<S>, f: &Failure<'_>) -> bool {
    let rcpt = f.note.recipient();
    if f.note.bounce {
        tracing::warn!(to = %rcpt, reason = f.reason, "a delivery-failure notice failed; not bounced");
        return false;
    }
    if f.src_account.is_empty() || !sh.is_local(f.src_domain) {
        // Relayed for a trusted network: the sender's server is not us.
        tracing::warn!(to = %rcpt, from_domain = f.src_domain, reason = f.reason,
            "undeliverable message of a non-local sender dropped without notice");
        return false;
    }
    let (mailbox, key) = match sh.resolve(f.src_account, |n| sh.store.public_key(n)) {
        Ok(Some(found)) => found,
        Ok(None) => {
            tracing::warn!(to = %rcpt, "the sender's account is gone; no notice");
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "user store failed while bouncing");
            return false;
        }
    };
    match write_notice(sh, f, &mailbox, &key).await {
        Ok(id) => {
            sh.relay.metrics.bounces.fetch_add(1, Relaxed);
            tracing::info!(id, to = %rcpt, reason = f.reason, "delivery-failure notice written");
            true
        }
        Err(e) => {
            tracing::error!(to = %rcpt, error = %e, "cannot write the delivery-failure notice");
            false
        }
    }
}

/// The notice's text.
pub fn notice_text(f: &Failure<'_>) -> String {
    format!(
        "Your message to {rcpt} could not be delivered.\n\n\
         Recipient: {rcpt}\n\
         Reason: {reason}\n\
         Attempts: {attempts}\n\
         Queued at: {queued} (Unix time)\n\
         Last error: {last}\n\n\
         This notice was written by the mail server of {domain}; the message itself \
         has been removed from its queue.\n",
        rcpt = f.note.recipient(),
        reason = f.reason,
        attempts = f.note.attempts,
        queued = f.note.queued,
        last = if f.note.last_error.is_empty() {
            "none"
        } else {
            &f.note.last_error
        },
        domain = f.src_domain,
    )
}

async fn write_notice<S: Backend>(
    sh: &Shared<S>,
    f: &Failure<'_>,
    mailbox: &str,
    key: &[u8; 32],
) -> Result<u64, String> {
    let now = crate::unix_now();
    let body = InternalBody {
        timestamp: u32::try_from(now).unwrap_or(u32::MAX),
        subject: format!("Undeliverable: your message to {}", f.note.recipient()),
        reply_to: String::new(),
        cc: Vec::new(),
        text: notice_text(f),
    }
    .to_bytes()
    .map_err(|e| e.to_string())?;
    let pk = PublicKey::from_bytes(key).map_err(|e| e.to_string())?;
    let sealed = cmtp_crypto::seal(&body, &pk).map_err(|e| e.to_string())?;
    let mut log = Vec::new();
    let entry = cmtp_proto::log::BounceEntry {
        by: sh.config.load().primary_domain().to_owned(),
        at: now,
    };
    let text = entry.encode().map_err(|e| e.to_string())?;
    cmtp_proto::log::append_entry(&[], &text, &mut log);
    let env = Envelope::new(1, f.src_account, f.src_domain, POSTMASTER, f.src_domain);
    let mut bytes = Vec::with_capacity(sealed.len() + log.len() + 600);
    cmtp_proto::message::encode_message(&env, &log, &sealed, &[], &mut bytes)
        .map_err(|e| e.to_string())?;
    let body_end = bytes.len() as u64;
    let mut d = sh.store.begin();
    d.write(&bytes).await.map_err(|e| e.to_string())?;
    d.commit(MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: POSTMASTER.to_owned(),
        src_domain: f.src_domain.to_owned(),
        version: 1,
        attachment_count: 0,
        body_end,
        note: Vec::new(),
        relay_id: None,
    })
    .await
    .map_err(|e| e.to_string())
}
