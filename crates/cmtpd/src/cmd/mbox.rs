//! The mailbox extension (docs/protocol.md D4): MBOXLIST, MBOXFETCH, MBOXDEL.
//!
//! Stateless authorisation: the request carries the user's Ed25519 signature over
//! `signing_bytes` with a timestamp within ±300 s. Success replies are
//! `u32 1 | u64 len | payload | sig`, the signature covering the request's signature and
//! the payload's BLAKE2b-256, so FETCH streams the payload and signs at the end.

use cmtp_crypto::{Blake2b256, PublicKey, Signature};
use cmtp_proto::mbox::TIMESTAMP_WINDOW_SECS;
use cmtp_proto::{FetchPart, ListEntry, MboxKind, MboxRequest};
use cmtp_store::{MessageRead, StoreError};

use crate::connection::{Conn, ConnError, Flow};
use crate::metrics::FailureReason;
use crate::shared::{Backend, Shared};

/// Chunk size of a streamed FETCH.
const FETCH_CHUNK: usize = 64 * 1024;

/// Whether the request is authorised: known user, fresh timestamp, good signature for
/// one of our domains. `Some((mailbox, created))` (the account's stored name and creation
/// time) when it is.
fn authorised<S: Backend>(
    sh: &Shared<S>,
    kind: MboxKind,
    req: &MboxRequest,
) -> Result<Option<(String, u64)>, StoreError> {
    if cmtp_proto::validate_name(&req.user).is_err() {
        return Ok(None);
    }
    if crate::unix_now().abs_diff(req.timestamp) > TIMESTAMP_WINDOW_SECS {
        return Ok(None);
    }
    // The whole record: `created` says which messages belong to this holder of the name.
    let (mailbox, key, created) = match sh.resolve(&req.user, |n| sh.store.get(n))? {
        Some((mailbox, u)) => (mailbox, PublicKey::from_array(u.public_key), u.created),
        None => return Ok(None),
    };
    let sig = Signature::from_array(req.signature);
    let ok = sh.config.load().domains.iter().any(|d| {
        // The configured spelling, or the folded one (a client that lower-cased the
        // domain the user typed): domains are case-insensitive (protocol.md §4).
        let folded = cmtp_proto::fold(d);
        key.verify(&req.signing_bytes(kind, d), &sig).is_ok()
            || (folded != *d && key.verify(&req.signing_bytes(kind, &folded), &sig).is_ok())
    });
    Ok(ok.then_some((mailbox, created)))
}

/// Whether a message belongs to a previous holder of the account name: received before
/// the account was (re)created. `user remove` cannot touch the mail log while the server
/// runs, so such messages stay stored but are hidden from LIST, FETCH and DEL.
/// Resolution is the second: a message received in the very second the account was
/// re-created counts as the new holder's.
fn previous_holders(received: u64, created: u64) -> bool {
    received < created
}

/// Handles one mailbox command.
pub(super) async fn mbox<S: Backend>(
    c: &mut Conn<S>,
    kind: MboxKind,
    req: MboxRequest,
) -> Result<Flow, ConnError> {
    let sh = c.shared().clone();
    if !c.limits().mbox_failures_left() {
        // This address failed authorisation too often: no signature check for now.
        sh.metrics.failure(FailureReason::RateLimited);
        c.reply_failure();
        return Ok(Flow::Continue);
    }
    let (mailbox, created) = match authorised(&sh, kind, &req) {
        Ok(Some(found)) => found,
        Ok(None) => {
            c.limits().charge_mbox_failure();
            sh.metrics.failure(FailureReason::MboxAuth);
            tracing::debug!(peer = %c.peer(), command = kind.word(), "mailbox request refused");
            c.reply(&sh.signer.auth_failure);
            return Ok(Flow::Continue);
        }
        Err(e) => return Ok(internal(c, &e)),
    };
    let user = mailbox.as_str();
    match kind {
        MboxKind::List => match list_payload(&sh, user, created).await {
            Ok(payload) => c.reply(&sh.signer.mbox_reply(&req.signature, &payload)),
            Err(e) => return Ok(internal(c, &e)),
        },
        MboxKind::Delete => {
            let id = req.id.unwrap_or(0);
            // A previous holder's message is not this user's to delete (it stays hidden).
            let visible = match sh.store.open(user, id).await {
                Ok(Some((info, _))) => !previous_holders(info.received, created),
                Ok(None) => false,
                Err(e) => return Ok(internal(c, &e)),
            };
            if !visible {
                c.reply(&sh.signer.no_such_message);
                return Ok(Flow::Continue);
            }
            match sh.store.delete(user, id).await {
                Ok(true) => c.reply(&sh.signer.mbox_reply(&req.signature, &[])),
                Ok(false) => c.reply(&sh.signer.no_such_message),
                Err(e) => return Ok(internal(c, &e)),
            }
        }
        MboxKind::Fetch => return fetch(c, &req, user, created).await,
    }
    Ok(Flow::Continue)
}

/// Entries fetched from the store per index-lock acquisition.
const LIST_BATCH: usize = 1024;

/// Builds the LIST payload from short batches of the index (`list_range`), so the
/// store's lock is never held for a whole large mailbox and no intermediate copy of every
/// entry exists: only the encoded payload, which the reply needs whole because its
/// length precedes it on the wire (D4). Its size is bounded by the quota: at most
/// `max_mailbox_messages` entries (the oldest) of at most ~550 bytes each.
async fn list_payload<S: Backend>(
    sh: &Shared<S>,
    user: &str,
    created: u64,
) -> Result<Vec<u8>, StoreError> {
    let cap = sh.config.load().limits.max_mailbox_messages;
    let mut payload = vec![0u8; 4];
    let mut count: u32 = 0;
    let mut after = 0u64;
    'batches: loop {
        let batch = sh.store.list_range(user, after, LIST_BATCH).await?;
        let full = batch.len() == LIST_BATCH;
        for m in batch {
            after = m.id;
            if previous_holders(m.received, created) {
                continue;
            }
            if u64::from(count) >= cap || count == u32::MAX {
                break 'batches;
            }
            ListEntry {
                id: m.id,
                received: m.received,
                size: m.size,
                version: m.meta.version,
                attachment_count: m.meta.attachment_count,
                body_end: m.meta.body_end,
                src_account: m.meta.src_account,
                src_domain: m.meta.src_domain,
            }
            .encode(&mut payload);
            count += 1;
        }
        if !full {
            break;
        }
    }
    payload[..4].copy_from_slice(&count.to_be_bytes());
    Ok(payload)
}

/// A store error on a mailbox command: the version-0 FAILURE of the mailbox extension
/// (D4), and the connection closes like any internal error.
fn internal<S>(c: &mut Conn<S>, e: &StoreError) -> Flow {
    tracing::error!(error = %e, "mail store failed on a mailbox command");
    c.shared().metrics.failure(FailureReason::Internal);
    let failure = c.shared().signer.v0_failure.clone();
    c.reply(&failure);
    Flow::Close
}

/// Streams a stored message (or its head), hashing as it goes, and signs at the end.
async fn fetch<S: Backend>(
    c: &mut Conn<S>,
    req: &MboxRequest,
    mailbox: &str,
    created: u64,
) -> Result<Flow, ConnError> {
    let sh = c.shared().clone();
    let id = req.id.unwrap_or(0);
    let (info, mut reader) = match sh.store.open(mailbox, id).await {
        Ok(Some(x)) if !previous_holders(x.0.received, created) => x,
        Ok(_) => {
            c.reply(&sh.signer.no_such_message);
            return Ok(Flow::Continue);
        }
        Err(e) => return Ok(internal(c, &e)),
    };
    let len = match req.part.unwrap_or(FetchPart::Full) {
        FetchPart::Full => info.size,
        FetchPart::Head => info.meta.body_end.min(info.size),
    };
    let mut head = Vec::with_capacity(cmtp_proto::reply::MBOX_HEAD_LEN);
    cmtp_proto::reply::encode_mbox_ok(len, &mut head);
    c.reply(&head);
    let mut hasher = Blake2b256::new();
    let mut left = len;
    while left > 0 {
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(FETCH_CHUNK);
        let chunk = match reader.read_chunk(max).await {
            Ok(Some(ch)) if !ch.is_empty() && ch.len() <= max => ch,
            Ok(_) => {
                // The store gave fewer bytes than it announced: the reply's length is
                // already sent, so the framing is lost. Close.
                tracing::error!(id, "stored message shorter than its size");
                sh.metrics.failure(FailureReason::Internal);
                return Ok(Flow::Close);
            }
            Err(e) => {
                tracing::error!(error = %e, id, "reading a stored message failed");
                sh.metrics.failure(FailureReason::Internal);
                return Ok(Flow::Close);
            }
        };
        hasher.update(&chunk);
        c.reply(&chunk);
        left -= chunk.len() as u64;
        c.backpressure().await?;
    }
    let mut trailer = Vec::with_capacity(cmtp_proto::SIG_LEN);
    sh.signer
        .mbox_trailer(&req.signature, &hasher.finalize(), &mut trailer);
    c.reply(&trailer);
    Ok(Flow::Continue)
}
