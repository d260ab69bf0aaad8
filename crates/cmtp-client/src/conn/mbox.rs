//! The mailbox extension (docs/protocol.md D4): list, fetch and delete, each request
//! signed by the user and each reply's signature checked over its payload's digest.

use cmtp_crypto::Blake2b256;
use cmtp_proto::reply::{self, MboxHead, decode_mbox_reply_head, decode_mbox_trailer};
use cmtp_proto::{Command, ListEntry, MboxKind, MboxRequest, validate_name};

use super::{Connection, Dialect, MAX_PREALLOC, NoProgress, Progress, check_name};
use crate::error::{ClientError, Result};

impl Connection {
    /// `MBOXLIST`: the user's messages. `req` must be signed (see [`sign_mbox`]).
    pub async fn mbox_list(&mut self, req: &MboxRequest) -> Result<Vec<ListEntry>> {
        let payload = self.mbox(MboxKind::List, req, &mut NoProgress).await?;
        cmtp_proto::mbox::decode_list(&payload, 1_000_000)
            .map_err(|e| self.proto("reading the MBOXLIST payload", &e.to_string()))
    }

    /// `MBOXFETCH`: the stored message (`full`) or its part up to the end of the body
    /// (`head`), after verifying the server's signature over its digest.
    pub async fn mbox_fetch(&mut self, req: &MboxRequest) -> Result<Vec<u8>> {
        self.mbox(MboxKind::Fetch, req, &mut NoProgress).await
    }

    /// [`Connection::mbox_fetch`], reporting the payload's bytes to `progress` as they
    /// arrive (a progress bar for a large message).
    pub async fn mbox_fetch_with(
        &mut self,
        req: &MboxRequest,
        progress: &mut dyn Progress,
    ) -> Result<Vec<u8>> {
        let r = self.mbox(MboxKind::Fetch, req, progress).await;
        progress.finish();
        r
    }

    /// `MBOXDEL`: deletes one message.
    pub async fn mbox_delete(&mut self, req: &MboxRequest) -> Result<()> {
        self.mbox(MboxKind::Delete, req, &mut NoProgress)
            .await
            .map(|_| ())
    }

    async fn mbox(
        &mut self,
        kind: MboxKind,
        req: &MboxRequest,
        progress: &mut dyn Progress,
    ) -> Result<Vec<u8>> {
        const STEP: &str = "reading a mailbox reply";
        if self.dialect == Dialect::Legacy2016 {
            return Err(ClientError::Unsupported(
                "the 2016 server has no remote mailbox (its client read the mail folder directly)"
                    .into(),
            ));
        }
        check_name(&req.user, validate_name)?;
        let ask = match kind {
            MboxKind::List => Command::MboxList(req.clone()),
            MboxKind::Fetch => Command::MboxFetch(req.clone()),
            MboxKind::Delete => Command::MboxDelete(req.clone()),
        };
        self.send("sending a mailbox request", ask).await?;
        let len = match self.read_versioned(STEP, decode_mbox_reply_head).await? {
            MboxHead::Error(v) => {
                self.verify("message", v.signed_bytes(), &v.sig)?;
                return Err(match v.text.as_str() {
                    reply::NOSUCHMESSAGE => ClientError::NoSuchMessage {
                        id: req.id.unwrap_or(0),
                    },
                    reply::AUTHFAILURE => ClientError::MailboxRefused {
                        text: v.text,
                        hint: " (the server does not know this account or key, does not serve \
                               its domain, or the clocks differ by more than 5 minutes)",
                    },
                    _ => ClientError::MailboxRefused {
                        text: v.text,
                        hint: "",
                    },
                });
            }
            MboxHead::Ok { payload_len } => payload_len,
        };
        if len > self.max_payload {
            return Err(ClientError::TooLarge {
                detail: format!(
                    "the server announces a {len}-byte mailbox reply, over the limit of {}",
                    self.max_payload
                ),
            });
        }
        // Streamed through the input buffer (what is already there first), so the
        // payload is held once and hashed as it arrives.
        let mut payload = Vec::with_capacity((len as usize).min(MAX_PREALLOC));
        let mut hasher = Blake2b256::new();
        let mut left = len as usize;
        progress.set_total(len);
        while left > 0 {
            let chunk = self
                .read_reply(STEP, |b| {
                    let n = b.len().min(left);
                    Ok((n > 0).then(|| (b[..n].to_vec(), n)))
                })
                .await?;
            hasher.update(&chunk);
            payload.extend_from_slice(&chunk);
            left -= chunk.len();
            progress.advance(chunk.len() as u64);
        }
        let digest = hasher.finalize();
        let sig = self.read_reply(STEP, decode_mbox_trailer).await?;
        let signed = cmtp_proto::mbox::reply_signing_bytes(&req.signature, &digest);
        self.verify("mailbox reply", &signed, &sig)?;
        Ok(payload)
    }
}

/// Signs a mailbox request in place with the user's key (D4), for `domain`, the
/// domain of the user's address.
pub fn sign_mbox(req: &mut MboxRequest, kind: MboxKind, domain: &str, keys: &cmtp_crypto::KeyPair) {
    let sig = keys.sign(&req.signing_bytes(kind, domain));
    req.signature = *sig.as_bytes();
}
