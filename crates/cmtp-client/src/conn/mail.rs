//! Sending a message: `MAIL` (and its 2016 variant) and `SUBMIT` (signed by the sender,
//! for relay), streamed with a watch for an early refusal.

use cmtp_crypto::{Blake2b256, KeyPair};
use cmtp_proto::reply::{self, StatusReply, decode_general_or_v0};
use cmtp_proto::{Command, Envelope, SubmitRequest, legacy, validate_name};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Connection, Dialect, Progress, READ_CHUNK, check_name};
use crate::error::{ClientError, Result};

/// Envelope fields of an outgoing message (spec §6). The log is written as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailHead {
    /// Crypto system of the payload (1 = sealed boxes, 0 = plain).
    pub version: u32,
    /// Destination account.
    pub dest_account: String,
    /// Destination domain.
    pub dest_domain: String,
    /// Source account.
    pub src_account: String,
    /// Source domain.
    pub src_domain: String,
    /// The log (NUL-terminated strings); a single NUL is the smallest log.
    pub log: Vec<u8>,
}

/// What the server said about one MAIL or SUBMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    /// `SUCCESS` to MAIL: durably stored (or queued for relay by a server that relays
    /// MAIL).
    Delivered,
    /// `SUCCESS` to SUBMIT: durably queued for relay to the recipient's domain; a later
    /// failure comes back as a notice from `postmaster@<home domain>`.
    Queued,
    /// `DELIVERYFAILURE`: account not found, relaying refused, or no server for the domain.
    DeliveryFailure,
    /// The 2016 server never answers MAIL; it read the whole message (it answered the
    /// following OBAI), which is all we can know.
    SentUnconfirmed,
}

/// Size of the chunks an upload is written in (and progress is reported by).
const CHUNK: usize = 256 * 1024;

/// The envelope of the message `head`, `body` and `count` attachments, checked.
fn envelope_for(head: &MailHead, body_len: usize, count: usize) -> Result<Envelope> {
    let count = u32::try_from(count).map_err(|_| ClientError::TooLarge {
        detail: "too many attachments".into(),
    })?;
    let envelope = Envelope {
        attachment_count: count,
        log_length: head.log.len() as u64,
        body_length: body_len as u64,
        ..Envelope::new(
            head.version,
            head.dest_account.as_str(),
            head.dest_domain.as_str(),
            head.src_account.as_str(),
            head.src_domain.as_str(),
        )
    };
    envelope.check().map_err(|e| ClientError::BadAddress {
        address: format!("{}@{}", head.dest_account, head.dest_domain),
        why: e.to_string(),
    })?;
    Ok(envelope)
}

/// BLAKE2b-256 of the message exactly as [`Connection::send_submit`] writes it after
/// the command: envelope, log, body, then each attachment's u64 length and bytes. This
/// is the digest a SUBMIT signature covers (docs/protocol.md D5).
pub fn submit_digest(head: &MailHead, body: &[u8], attachments: &[Vec<u8>]) -> Result<[u8; 32]> {
    let envelope = envelope_for(head, body.len(), attachments.len())?;
    let mut env = Vec::with_capacity(envelope.encoded_len());
    envelope.encode(&mut env);
    let mut h = Blake2b256::new();
    h.update(&env);
    h.update(&head.log);
    h.update(body);
    for a in attachments {
        h.update(&(a.len() as u64).to_be_bytes());
        h.update(a);
    }
    Ok(h.finalize())
}

/// Signs a SUBMIT request in place with the user's key (D5): `domain` is the envelope's
/// `src_domain`, `digest` the message's [`submit_digest`].
pub fn sign_submit(req: &mut SubmitRequest, domain: &str, digest: &[u8; 32], keys: &KeyPair) {
    let sig = keys.sign(&req.signing_bytes(domain, digest));
    req.signature = *sig.as_bytes();
}

impl Connection {
    /// `MAIL`: writes the envelope, `body` and each attachment (produced one at a time,
    /// so only one sealed attachment is in memory), watching for an early refusal
    /// (the server checks the announced size before reading the body). Returns the
    /// server's verdict; FAILURE is [`ClientError::TooLarge`], since the message we
    /// build is well-formed.
    pub async fn send_mail<I>(
        &mut self,
        head: &MailHead,
        body: &[u8],
        attachments: I,
        sizes_hint: u64,
        progress: &mut dyn Progress,
    ) -> Result<MailOutcome>
    where
        I: ExactSizeIterator<Item = Result<Vec<u8>>>,
    {
        let envelope = envelope_for(head, body.len(), attachments.len())?;
        self.send_message(
            Command::Mail,
            &envelope,
            head,
            body,
            attachments,
            sizes_hint,
            progress,
        )
        .await
    }

    /// `SUBMIT`: like [`Connection::send_mail`], with the sender's proof (D5). `req`
    /// must be signed over this very message ([`submit_digest`], [`sign_submit`]) and
    /// name the envelope's source account. The attachments are given already sealed:
    /// the signature, sent first, covers them, and sealing again would give other
    /// bytes. SUCCESS is [`MailOutcome::Queued`]. A FAILURE is
    /// [`ClientError::Unsupported`]: a server without SUBMIT refuses the unknown
    /// command at once (it may also mean the message is over the server's size limit).
    pub async fn send_submit(
        &mut self,
        req: &SubmitRequest,
        head: &MailHead,
        body: &[u8],
        attachments: Vec<Vec<u8>>,
        progress: &mut dyn Progress,
    ) -> Result<MailOutcome> {
        if self.dialect == Dialect::Legacy2016 {
            return Err(ClientError::Unsupported(
                "the 2016 server has no SUBMIT (it cannot relay to other domains)".into(),
            ));
        }
        check_name(&req.user, validate_name)?;
        if req.user != head.src_account {
            return Err(ClientError::BadAddress {
                address: req.user.clone(),
                why: format!(
                    "SUBMIT names {:?} but the envelope's source account is {:?}",
                    req.user, head.src_account
                ),
            });
        }
        let envelope = envelope_for(head, body.len(), attachments.len())?;
        let sizes = attachments.iter().map(|a| 8 + a.len() as u64).sum();
        self.send_message(
            Command::Submit(req.clone()),
            &envelope,
            head,
            body,
            attachments.into_iter().map(Ok),
            sizes,
            progress,
        )
        .await
    }

    /// The upload and reply of MAIL and SUBMIT (`cmd`).
    #[allow(clippy::too_many_arguments)]
    async fn send_message<I>(
        &mut self,
        cmd: Command,
        envelope: &Envelope,
        head: &MailHead,
        body: &[u8],
        attachments: I,
        sizes_hint: u64,
        progress: &mut dyn Progress,
    ) -> Result<MailOutcome>
    where
        I: Iterator<Item = Result<Vec<u8>>>,
    {
        let submit = matches!(cmd, Command::Submit(_));
        let step = if submit {
            "reading the SUBMIT reply"
        } else {
            "reading the MAIL reply"
        };
        let mut env = Vec::with_capacity(200 + envelope.encoded_len() + head.log.len());
        cmd.encode(&mut env);
        envelope.encode(&mut env);
        env.extend_from_slice(&head.log);
        progress.set_total(env.len() as u64 + body.len() as u64 + sizes_hint);
        let r = self.upload(&env, body, attachments, progress).await;
        progress.finish();
        let early = r?;
        if self.dialect == Dialect::Legacy2016 && !early {
            // The 2016 server reads a 64-byte proof-of-work nonce after the message and
            // never replies; OBAI's `Good bye` shows it read everything.
            const BYE: &str = "waiting for the 2016 server's Good bye";
            let mut tail = Vec::with_capacity(legacy::NONCE_LEN + 8);
            legacy::encode_mail_nonce(&mut tail);
            Command::Obai.encode(&mut tail);
            self.write("sending the 2016 nonce and OBAI", &tail).await?;
            self.read_reply(BYE, legacy::decode_bye).await?;
            return Ok(MailOutcome::SentUnconfirmed);
        }
        match self.read_reply(step, decode_general_or_v0).await? {
            StatusReply::V0(v) => {
                self.verify("message", v.signed_bytes(), &v.sig)?;
                if v.text == reply::DELIVERYFAILURE {
                    Ok(MailOutcome::DeliveryFailure)
                } else {
                    Err(self.proto(step, &format!("unexpected answer {:?}", v.text)))
                }
            }
            StatusReply::General(g) => {
                self.verify("reply", g.signed_bytes(), &g.sig)?;
                if !g.ok && submit {
                    Err(ClientError::Unsupported(
                        "the home server refused SUBMIT (FAILURE): it does not relay mail to \
                         other domains, or the message is over its size limit"
                            .into(),
                    ))
                } else if !g.ok {
                    Err(ClientError::TooLarge {
                        detail: "the server refused the message (FAILURE); it is most likely \
                                 over the server's size limit"
                            .into(),
                    })
                } else if early {
                    Err(self.proto(step, "SUCCESS before the message was sent"))
                } else if submit {
                    Ok(MailOutcome::Queued)
                } else {
                    Ok(MailOutcome::Delivered)
                }
            }
        }
    }

    /// Writes the message; `Ok(true)` when the server answered before it was complete.
    async fn upload<I>(
        &mut self,
        env: &[u8],
        body: &[u8],
        attachments: I,
        progress: &mut dyn Progress,
    ) -> Result<bool>
    where
        I: Iterator<Item = Result<Vec<u8>>>,
    {
        if self.write_watch(env, progress).await? || self.write_watch(body, progress).await? {
            return Ok(true);
        }
        for a in attachments {
            let a = a?;
            if self
                .write_watch(&(a.len() as u64).to_be_bytes(), progress)
                .await?
                || self.write_watch(&a, progress).await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes `data` in chunks while watching the read side; `Ok(true)` = the server
    /// sent something (an early refusal) and the rest was not written.
    async fn write_watch(&mut self, data: &[u8], progress: &mut dyn Progress) -> Result<bool> {
        const STEP: &str = "uploading the message";
        let io = self.timeouts.io;
        let peer = self.peer;
        for chunk in data.chunks(CHUNK) {
            if !self.inbuf.is_empty() {
                // The server already said something.
                return Ok(true);
            }
            self.inbuf.reserve(READ_CHUNK);
            let rd = &mut self.rd;
            let inbuf = &mut self.inbuf;
            let wr = &mut self.wr;
            tokio::select! {
                biased;
                // Cancel-safe: when the write wins, nothing was read.
                r = rd.read_buf(inbuf) => {
                    // Something (or EOF / reset) arrived while we were still sending.
                    let _ = r;
                    return Ok(true);
                }
                w = tokio::time::timeout(io, async {
                    wr.write_all(chunk).await?;
                    wr.flush().await
                }) => match w {
                    Err(_) => return Err(ClientError::Timeout { step: STEP, after: io, peer }),
                    Ok(Err(e)) => {
                        // A reset while uploading usually follows an early refusal that
                        // may still sit in the socket's receive queue.
                        let quick = io.min(Duration::from_secs(2));
                        if let Ok(Ok(n)) =
                            tokio::time::timeout(quick, self.rd.read_buf(&mut self.inbuf)).await
                            && n > 0
                        {
                            return Ok(true);
                        }
                        use std::io::ErrorKind as K;
                        if matches!(e.kind(), K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted) {
                            // The server closes mid-MAIL only to refuse the message, and our
                            // message is well-formed: it is over the size limit.
                            return Err(ClientError::TooLarge {
                                detail: format!(
                                    "the server closed the connection during the upload ({e}); \
                                     it does so for a message over its size limit"
                                ),
                            });
                        }
                        return Err(ClientError::Io { step: STEP, peer, source: e });
                    }
                    Ok(Ok(())) => progress.advance(chunk.len() as u64),
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmtp_crypto::{Signature, blake2b_256};

    #[test]
    fn the_submit_signature_covers_the_whole_message_as_encoded() {
        let head = MailHead {
            version: 1,
            dest_account: "bob".into(),
            dest_domain: "other.example".into(),
            src_account: "alice".into(),
            src_domain: "home.example".into(),
            log: vec![0],
        };
        let atts = vec![vec![7u8; 1000], Vec::new(), b"x\0y".to_vec()];
        let digest = submit_digest(&head, b"sealed body", &atts).unwrap();
        // Independently: the proto crate's encoder, hashed in one piece.
        let env = Envelope::new(1, "bob", "other.example", "alice", "home.example");
        let refs: Vec<&[u8]> = atts.iter().map(|a| a.as_slice()).collect();
        let mut wire = Vec::new();
        cmtp_proto::message::encode_message(&env, &[0], b"sealed body", &refs, &mut wire).unwrap();
        assert_eq!(digest, blake2b_256(&wire));
        // One byte more anywhere is another digest.
        let mut other = atts.clone();
        other[1].push(0);
        assert_ne!(
            submit_digest(&head, b"sealed body", &other).unwrap(),
            digest
        );

        let keys = KeyPair::generate().unwrap();
        let mut req = SubmitRequest::new("alice", 1_700_000_000);
        sign_submit(&mut req, "home.example", &digest, &keys);
        let mut signed = b"CMTP-SUBMIT/1\0alice\0home.example\x001700000000\0".to_vec();
        signed.extend_from_slice(&blake2b_256(&wire));
        let sig = Signature::from_array(req.signature);
        keys.public().verify(&signed, &sig).unwrap();
        // Bound to the domain and the time.
        let mut elsewhere = signed.clone();
        elsewhere[20] = b'H'; // "home.example" → "Home.example"
        assert!(keys.public().verify(&elsewhere, &sig).is_err());
        req.timestamp += 1;
        let later = req.signing_bytes("home.example", &digest);
        assert!(keys.public().verify(&later, &sig).is_err());
    }

    #[test]
    fn an_envelope_that_cannot_be_framed_has_no_digest() {
        let head = MailHead {
            version: 1,
            dest_account: "b".repeat(256),
            dest_domain: "x".into(),
            src_account: "a".into(),
            src_domain: "y".into(),
            log: vec![0],
        };
        assert!(matches!(
            submit_digest(&head, b"", &[]),
            Err(ClientError::BadAddress { .. })
        ));
    }
}
