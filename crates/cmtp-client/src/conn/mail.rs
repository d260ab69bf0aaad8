//! Sending a message: `MAIL` (and its 2016 variant), streamed with a watch for an
//! early refusal.

use cmtp_proto::reply::{self, StatusReply, decode_general_or_v0};
use cmtp_proto::{Command, Envelope, legacy};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Connection, Dialect, Progress, READ_CHUNK};
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

/// What the server said about one MAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    /// `SUCCESS`: durably stored or queued for relay.
    Delivered,
    /// `DELIVERYFAILURE`: account not found, relaying refused, or no server for the domain.
    DeliveryFailure,
    /// The 2016 server never answers MAIL; it read the whole message (it answered the
    /// following OBAI), which is all we can know.
    SentUnconfirmed,
}

/// Size of the chunks an upload is written in (and progress is reported by).
const CHUNK: usize = 256 * 1024;

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
        const STEP: &str = "reading the MAIL reply";
        let count = u32::try_from(attachments.len()).map_err(|_| ClientError::TooLarge {
            detail: "too many attachments".into(),
        })?;
        let envelope = Envelope {
            attachment_count: count,
            log_length: head.log.len() as u64,
            body_length: body.len() as u64,
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
        let mut env = Vec::with_capacity(8 + envelope.encoded_len() + head.log.len());
        Command::Mail.encode(&mut env);
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
        match self.read_reply(STEP, decode_general_or_v0).await? {
            StatusReply::V0(v) => {
                self.verify("message", v.signed_bytes(), &v.sig)?;
                if v.text == reply::DELIVERYFAILURE {
                    Ok(MailOutcome::DeliveryFailure)
                } else {
                    Err(self.proto(STEP, &format!("unexpected answer {:?}", v.text)))
                }
            }
            StatusReply::General(g) => {
                self.verify("reply", g.signed_bytes(), &g.sig)?;
                if !g.ok {
                    Err(ClientError::TooLarge {
                        detail: "the server refused the message (FAILURE); it is most likely \
                                 over the server's size limit"
                            .into(),
                    })
                } else if early {
                    Err(self.proto(STEP, "SUCCESS before the message was sent"))
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
                w = tokio::time::timeout(io, wr.write_all(chunk)) => match w {
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
