//! Where a message goes, decided from its envelope (and, for relaying, its log): a local
//! mailbox, the relay queue, or nowhere (refused, read to its end and dropped).

use cmtp_crypto::{Blake2b256, PublicKey};
use cmtp_proto::Envelope;
use cmtp_proto::submit::SubmitRequest;
use cmtp_store::{Delivery, MessageMeta};

use crate::connection::Conn;
use crate::metrics::FailureReason;
use crate::quota::{Quota, QuotaError, QuotaHold};
use crate::relay::QueueNote;
use crate::shared::{Backend, Shared};

/// A submission's proof (SUBMIT): checked against the envelope when it arrives, its
/// signature over the message digest once the whole message has been read.
pub(super) struct Proof {
    pub req: SubmitRequest,
    pub hasher: Blake2b256,
    /// The signer's key, once the envelope named a local account that has one.
    pub key: Option<PublicKey>,
    /// The domain the signature names (the envelope's source domain).
    pub domain: String,
}

/// Why a message is read and dropped.
pub(super) enum Refusal {
    /// DELIVERYFAILURE: no such account, invalid name, full mailbox, relaying denied, no
    /// route, hop limit; with the failure counter to bump, if any (an unknown account is
    /// not a failure of ours).
    Delivery(Option<FailureReason>),
    /// General FAILURE, connection stays: the mailbox receives faster than its limit, or
    /// the relay queue is full.
    TryLater(FailureReason),
    /// General FAILURE and close: the server failed (store error).
    Internal(String),
    /// Already received (its relay id was seen): SUCCESS, nothing stored again.
    Duplicate,
}

/// Where the message's bytes go.
pub(super) enum Sink<D> {
    /// Envelope not complete yet: its bytes (≤ 24 + 4 × 256) wait here.
    Undecided(Vec<u8>),
    /// A local mailbox; the quota hold is released once the commit has resolved.
    Deliver(D, MessageMeta, QuotaHold),
    /// The relay queue. The envelope and log are written once the log is complete
    /// (our log entry is appended to it).
    Relay(Relaying<D>),
    /// Read and dropped; the reply is decided by the refusal.
    Discard(Refusal),
}

/// A message on its way into the relay queue.
pub(super) struct Relaying<D> {
    /// The queue delivery.
    pub d: D,
    /// The envelope as received (its log length is rewritten when the log is known).
    pub env: Envelope,
    /// The queue state to commit with it.
    pub note: QueueNote,
    /// The relay id of the previous hop, if any: a repeat of it is not queued twice.
    pub relay_id: Option<[u8; 16]>,
    /// The queue's reservation, released once the commit has resolved.
    pub hold: QuotaHold,
}

/// Where a message for a local domain goes: the account's mailbox name.
fn local_mailbox<S: Backend>(sh: &Shared<S>, env: &Envelope) -> Result<String, Refusal> {
    if env.dest_account.is_empty() {
        // The server's own mailbox (postmaster).
        return Ok(String::new());
    }
    // postmaster@ (RFC 5321): the mapped account, else an account of that name, else
    // the server's own mailbox.
    let alias = sh.postmaster_alias(&env.dest_account);
    let name = alias.as_deref().unwrap_or(&env.dest_account);
    match sh.resolve(name, |n| sh.store.public_key(n)) {
        Ok(Some((mailbox, _))) => Ok(mailbox),
        Ok(None) if cmtp_proto::fold(&env.dest_account) == crate::shared::POSTMASTER => {
            Ok(String::new())
        }
        Ok(None) => Err(Refusal::Delivery(None)),
        Err(e) => Err(Refusal::Internal(format!("user store failed on MAIL: {e}"))),
    }
}

/// Checks the names of the envelope (spec §2, docs/protocol.md §4).
fn check_names(env: &Envelope) -> Result<(), Refusal> {
    if cmtp_proto::validate_account(&env.dest_account).is_err()
        || cmtp_proto::validate_domain(&env.dest_domain).is_err()
    {
        return Err(Refusal::Delivery(None));
    }
    // Sender names follow the same rule: they are stored, listed and shown to people.
    if cmtp_proto::validate_account(&env.src_account).is_err()
        || cmtp_proto::validate_domain(&env.src_domain).is_err()
    {
        return Err(Refusal::Delivery(Some(FailureReason::BadSender)));
    }
    Ok(())
}

/// Checks a submission's claims against the envelope: the signer is the sender, a local
/// account with a key, and the timestamp is fresh. The signature itself is checked at
/// the end.
fn check_proof<S: Backend>(sh: &Shared<S>, env: &Envelope, p: &mut Proof) -> Result<(), Refusal> {
    let denied = || Refusal::Delivery(Some(FailureReason::RelayDenied));
    if p.req.user != env.src_account || env.src_account.is_empty() || !sh.is_local(&env.src_domain)
    {
        return Err(denied());
    }
    let now = crate::unix_now();
    if now.abs_diff(p.req.timestamp) > cmtp_proto::submit::TIMESTAMP_WINDOW_SECS {
        return Err(denied());
    }
    let key = match sh.resolve(&env.src_account, |n| sh.store.public_key(n)) {
        Ok(Some((_, k))) => k,
        Ok(None) => return Err(denied()),
        Err(e) => {
            return Err(Refusal::Internal(format!(
                "user store failed on SUBMIT: {e}"
            )));
        }
    };
    p.key = Some(PublicKey::from_bytes(&key).map_err(|_| denied())?);
    p.domain = env.src_domain.clone();
    Ok(())
}

/// Admits a message to `mailbox`: its rate bucket, then its quota (atomically with the
/// deliveries in flight).
fn admit<S: Backend>(sh: &Shared<S>, mailbox: &str, env: &Envelope) -> Result<QuotaHold, Refusal> {
    if !sh.mailbox_rates.allow(mailbox) {
        tracing::debug!(mailbox, "mailbox over its MAIL rate");
        return Err(Refusal::TryLater(FailureReason::MailboxRate));
    }
    let cfg = sh.config.load();
    let l = &cfg.limits;
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

/// Admits a message for another domain: a proven local sender or a trusted network, a
/// domain that exists, room in the queue.
async fn admit_relay<S: Backend>(
    c: &Conn<S>,
    env: &Envelope,
    proven: bool,
) -> Result<QuotaHold, Refusal> {
    let sh = c.shared();
    let relay = &sh.relay;
    if !proven && !relay.trusts(c.peer().ip()) {
        tracing::debug!(peer = %c.peer(), domain = %env.dest_domain, "relaying denied");
        return Err(Refusal::Delivery(Some(FailureReason::RelayDenied)));
    }
    // Only what is known at once is refused now (spec §5.5): a domain without a server is
    // permanent; DNS trouble is not, the queue retries it.
    if let Err(e @ cmtp_client::RouteError::Permanent { .. }) =
        relay.router.load().resolve(&env.dest_domain).await
    {
        tracing::debug!(error = %e, "no route");
        return Err(Refusal::Delivery(Some(FailureReason::NoRoute)));
    }
    let quota = Quota {
        messages: relay.config.load().max_queue_messages,
        bytes: u64::MAX,
    };
    sh.quotas
        .reserve(cmtp_store::RELAY_QUEUE, env.body_end(), quota, || {
            sh.store.mailbox_usage(cmtp_store::RELAY_QUEUE)
        })
        .map_err(|e| match e {
            QuotaError::Full { messages, .. } => {
                tracing::warn!(messages, "relay queue full");
                Refusal::TryLater(FailureReason::QueueFull)
            }
            QuotaError::Unknown(e) => Refusal::Internal(format!("queue usage unknown: {e}")),
        })
}

/// Starts the delivery once the envelope is known. `head` is the envelope's bytes.
pub(super) async fn decide<S: Backend>(
    c: &Conn<S>,
    env: &Envelope,
    head: Vec<u8>,
    proof: Option<&mut Proof>,
) -> Sink<S::Delivery> {
    let sh = c.shared().clone();
    if let Err(r) = check_names(env) {
        return Sink::Discard(r);
    }
    let has_proof = proof.is_some();
    if let Some(p) = proof
        && let Err(r) = check_proof(&sh, env, p)
    {
        return Sink::Discard(r);
    }
    if !sh.is_local(&env.dest_domain) {
        let hold = match admit_relay(c, env, has_proof).await {
            Ok(h) => h,
            Err(r) => return Sink::Discard(r),
        };
        let note = QueueNote::new(
            &env.dest_account,
            &env.dest_domain,
            crate::unix_now(),
            false,
        );
        return Sink::Relay(Relaying {
            d: sh.store.begin(),
            env: env.clone(),
            note,
            relay_id: None,
            hold,
        });
    }
    let admitted = local_mailbox(&sh, env).and_then(|m| admit(&sh, &m, env).map(|h| (m, h)));
    let (mailbox, hold) = match admitted {
        Ok(x) => x,
        Err(r) => return Sink::Discard(r),
    };
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
