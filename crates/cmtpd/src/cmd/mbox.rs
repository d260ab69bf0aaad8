//! The mailbox extension (docs/protocol.md D4): MBOXLIST, MBOXFETCH, MBOXDEL.
//!
//! Stateless authorisation: the request carries the user's Ed25519 signature over
//! `signing_bytes` with a timestamp within ±300 s. Success replies are
//! `u32 1 | u64 len | payload | sig`, the signature covering the request's signature and
//! the payload's BLAKE2b-256, so FETCH streams the payload and signs at the end.

use std::time::{SystemTime, UNIX_EPOCH};

use cmtp_crypto::{Blake2b256, PublicKey, Signature};
use cmtp_proto::mbox::{TIMESTAMP_WINDOW_SECS, reply_signing_bytes};
use cmtp_proto::{FetchPart, ListEntry, MboxKind, MboxRequest};
use cmtp_store::{MailStore, MessageRead, UserStore};

use crate::connection::{Conn, ConnError, Flow, OUT_HIGH_WATER};
use crate::metrics::FailureReason;
use crate::server::Shared;

/// Chunk size of a streamed FETCH.
const FETCH_CHUNK: usize = 64 * 1024;

/// Whether the request is authorised: known user, fresh timestamp, good signature for
/// one of our domains. `Some(created)` (the account's creation time) when it is.
fn authorised(sh: &Shared, kind: MboxKind, req: &MboxRequest) -> Result<Option<u64>, ()> {
    if cmtp_proto::validate_name(&req.user).is_err() {
        return Ok(None);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now.abs_diff(req.timestamp) > TIMESTAMP_WINDOW_SECS {
        return Ok(None);
    }
    // The whole record: `created` says which messages belong to this holder of the name.
    let (key, created) = match sh.store.get(&req.user) {
        Ok(Some(u)) => (PublicKey::from_array(u.public_key), u.created),
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "user store failed on a mailbox command");
            return Err(());
        }
    };
    let sig = Signature::from_array(req.signature);
    let ok = sh
        .config
        .domains
        .iter()
        .any(|d| key.verify(&req.signing_bytes(kind, d), &sig).is_ok());
    Ok(ok.then_some(created))
}

/// Whether a message belongs to a previous holder of the account name: received before
/// the account was (re)created. `user remove` cannot touch the mail log while the server
/// runs, so such messages stay stored but are hidden from LIST, FETCH and DEL.
/// Resolution is the second: a message received in the very second the account was
/// re-created counts as the new holder's.
fn previous_holders(received: u64, created: u64) -> bool {
    received < created
}

/// Appends a whole (small) success reply for `payload`.
fn reply_ok(c: &mut Conn, req: &MboxRequest, payload: &[u8]) {
    let digest = cmtp_crypto::blake2b_256(payload);
    let sig = c
        .shared
        .signer
        .sign(&reply_signing_bytes(&req.signature, &digest));
    c.out.extend_from_slice(&1u32.to_be_bytes());
    c.out
        .extend_from_slice(&(payload.len() as u64).to_be_bytes());
    c.out.extend_from_slice(payload);
    c.out.extend_from_slice(&sig);
}

/// Handles one mailbox command.
pub(crate) async fn mbox(
    c: &mut Conn,
    kind: MboxKind,
    req: MboxRequest,
) -> Result<Flow, ConnError> {
    let sh = c.shared.clone();
    if !c.slot.entry.mbox_failures_left() {
        // This address failed authorisation too often: no signature check for now.
        sh.metrics.failure(FailureReason::RateLimited);
        c.reply_failure();
        return Ok(Flow::Continue);
    }
    let created = match authorised(&sh, kind, &req) {
        Ok(Some(created)) => created,
        Ok(None) => {
            c.slot.entry.charge_mbox_failure();
            sh.metrics.failure(FailureReason::MboxAuth);
            tracing::debug!(peer = %c.peer, command = kind.word(), "mailbox request refused");
            c.out.extend_from_slice(&sh.signer.auth_failure);
            return Ok(Flow::Continue);
        }
        Err(()) => {
            sh.metrics.failure(FailureReason::Internal);
            c.out.extend_from_slice(&sh.signer.v0_failure);
            return Ok(Flow::Continue);
        }
    };
    let user = req.user.as_str();
    match kind {
        MboxKind::List => match list_payload(&sh, user, created).await {
            Ok(payload) => reply_ok(c, &req, &payload),
            Err(e) => internal(c, &e),
        },
        MboxKind::Delete => {
            let id = req.id.unwrap_or(0);
            // A previous holder's message is not this user's to delete (it stays hidden).
            let visible = match sh.store.open(user, id).await {
                Ok(Some((info, _))) => !previous_holders(info.received, created),
                Ok(None) => false,
                Err(e) => {
                    internal(c, &e);
                    return Ok(Flow::Continue);
                }
            };
            if !visible {
                c.out.extend_from_slice(&sh.signer.no_such_message);
                return Ok(Flow::Continue);
            }
            match sh.store.delete(user, id).await {
                Ok(true) => reply_ok(c, &req, &[]),
                Ok(false) => c.out.extend_from_slice(&sh.signer.no_such_message),
                Err(e) => internal(c, &e),
            }
        }
        MboxKind::Fetch => return fetch(c, &req, created).await,
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
async fn list_payload(
    sh: &Shared,
    user: &str,
    created: u64,
) -> Result<Vec<u8>, cmtp_store::StoreError> {
    let cap = sh.config.limits.max_mailbox_messages;
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

fn internal(c: &mut Conn, e: &cmtp_store::StoreError) {
    tracing::error!(error = %e, "mail store failed on a mailbox command");
    c.shared.metrics.failure(FailureReason::Internal);
    c.out.extend_from_slice(&c.shared.signer.v0_failure);
}

/// Streams a stored message (or its head), hashing as it goes, and signs at the end.
async fn fetch(c: &mut Conn, req: &MboxRequest, created: u64) -> Result<Flow, ConnError> {
    let sh = c.shared.clone();
    let id = req.id.unwrap_or(0);
    let (info, mut reader) = match sh.store.open(&req.user, id).await {
        Ok(Some(x)) if !previous_holders(x.0.received, created) => x,
        Ok(_) => {
            c.out.extend_from_slice(&sh.signer.no_such_message);
            return Ok(Flow::Continue);
        }
        Err(e) => {
            internal(c, &e);
            return Ok(Flow::Continue);
        }
    };
    let len = match req.part.unwrap_or(FetchPart::Full) {
        FetchPart::Full => info.size,
        FetchPart::Head => info.meta.body_end.min(info.size),
    };
    c.out.extend_from_slice(&1u32.to_be_bytes());
    c.out.extend_from_slice(&len.to_be_bytes());
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
        c.out.extend_from_slice(&chunk);
        left -= chunk.len() as u64;
        if c.out.len() >= OUT_HIGH_WATER {
            c.flush().await?;
        }
    }
    let sig = sh
        .signer
        .sign(&reply_signing_bytes(&req.signature, &hasher.finalize()));
    c.out.extend_from_slice(&sig);
    Ok(Flow::Continue)
}
