//! The message that follows `MAIL\0` (spec §6), and its streaming decoder.
//!
//! ```text
//! u32 version | u32 attachment_count | u64 log_length | u64 body_length |
//! dest_account NUL | dest_domain NUL | src_account NUL | src_domain NUL |
//! log | body | attachment_count × (u64 attachment_length | attachment)
//! ```
//!
//! [`MessageDecoder`] turns a byte stream into [`MessageEvent`]s whose chunks borrow
//! the caller's input, so a message of any size decodes in constant memory. Limits
//! ([`MessageLimits`]) are checked against the announced lengths before the bytes they
//! announce are consumed.

use crate::limits::{MAX_PARAM, MessageLimits};
use crate::{be_u32, be_u64};

/// Size of the fixed header (version, count, log and body lengths).
pub const HEADER_LEN: usize = 24;

/// Errors of a message on the wire. All of them are framing errors: the server answers
/// FAILURE and closes (an invalid but well-framed name is not an error here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The announced lengths exceed `max_total` (checked before reading them).
    #[error("message of at least {announced} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Lower bound of the message size, from the lengths announced so far.
        announced: u64,
        /// The limit.
        max: u64,
    },
    /// `attachment_count` exceeds `max_attachments`.
    #[error("{count} attachments exceed the limit of {max}")]
    TooManyAttachments {
        /// Announced count.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// `log_length` exceeds `max_log`.
    #[error("log of {len} bytes exceeds the limit of {max}")]
    LogTooLong {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An envelope name longer than 255 bytes (no NUL within 256 bytes).
    #[error("envelope name longer than {MAX_PARAM} bytes")]
    NameTooLong,
    /// An envelope name that is not UTF-8.
    #[error("envelope name is not valid UTF-8")]
    InvalidUtf8,
    /// An envelope name to encode contains a NUL.
    #[error("envelope name contains a NUL byte")]
    NulInName,
}

/// The plaintext routing part of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Envelope {
    /// Crypto system of body and attachments (0 plaintext, 1 sealed boxes).
    pub version: u32,
    /// Number of attachments that follow the body.
    pub attachment_count: u32,
    /// Length of the log in bytes.
    pub log_length: u64,
    /// Length of the body in bytes.
    pub body_length: u64,
    /// Recipient account; empty = the server itself. As received: validate with
    /// [`crate::name::validate_account`] before use.
    pub dest_account: String,
    /// Recipient domain; empty = the receiving server's own domain.
    pub dest_domain: String,
    /// Sender account (a claim; empty = a server notice).
    pub src_account: String,
    /// Sender domain.
    pub src_domain: String,
}

impl Envelope {
    /// An envelope with zero lengths and no attachments (fill them, or let
    /// [`encode_message`] do it).
    pub fn new(
        version: u32,
        dest_account: impl Into<String>,
        dest_domain: impl Into<String>,
        src_account: impl Into<String>,
        src_domain: impl Into<String>,
    ) -> Self {
        Envelope {
            version,
            attachment_count: 0,
            log_length: 0,
            body_length: 0,
            dest_account: dest_account.into(),
            dest_domain: dest_domain.into(),
            src_account: src_account.into(),
            src_domain: src_domain.into(),
        }
    }

    /// Appends header and names. Names are written as given: the caller keeps them
    /// within 255 bytes and free of NUL ([`Envelope::check`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.attachment_count.to_be_bytes());
        out.extend_from_slice(&self.log_length.to_be_bytes());
        out.extend_from_slice(&self.body_length.to_be_bytes());
        for n in self.names() {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
    }

    /// Checks that the names can be framed (≤ 255 bytes, no NUL).
    pub fn check(&self) -> Result<(), MessageError> {
        for n in self.names() {
            if n.len() > MAX_PARAM {
                return Err(MessageError::NameTooLong);
            }
            if n.contains('\0') {
                return Err(MessageError::NulInName);
            }
        }
        Ok(())
    }

    /// Bytes of the encoded envelope (header + four names with their NULs).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.names().iter().map(|n| n.len() + 1).sum::<usize>()
    }

    /// Offset, in the message, where the body ends (envelope + log + body): the length
    /// of a `head` fetch (D4). Saturates instead of overflowing.
    pub fn body_end(&self) -> u64 {
        (self.encoded_len() as u64)
            .saturating_add(self.log_length)
            .saturating_add(self.body_length)
    }

    fn names(&self) -> [&str; 4] {
        [
            &self.dest_account,
            &self.dest_domain,
            &self.src_account,
            &self.src_domain,
        ]
    }
}

/// Appends a whole message: `envelope` (its names and version; its length fields and
/// count are ignored and computed from the parts), `log`, `body`, then each attachment
/// with its length.
pub fn encode_message(
    envelope: &Envelope,
    log: &[u8],
    body: &[u8],
    attachments: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), MessageError> {
    envelope.check()?;
    let count = u32::try_from(attachments.len()).map_err(|_| MessageError::TooManyAttachments {
        count: u32::MAX,
        max: u32::MAX,
    })?;
    let env = Envelope {
        attachment_count: count,
        log_length: log.len() as u64,
        body_length: body.len() as u64,
        ..envelope.clone()
    };
    env.encode(out);
    out.extend_from_slice(log);
    out.extend_from_slice(body);
    for a in attachments {
        out.extend_from_slice(&(a.len() as u64).to_be_bytes());
        out.extend_from_slice(a);
    }
    Ok(())
}

/// One step of a decoded message. Chunks borrow the input passed to
/// [`MessageDecoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageEvent<'a> {
    /// The envelope is complete; limits on the announced lengths have passed.
    Envelope(Envelope),
    /// A chunk of the log (no event when the log is empty).
    Log(&'a [u8]),
    /// A chunk of the body (no event when the body is empty).
    Body(&'a [u8]),
    /// Attachment `index` (from 0) of `len` bytes begins; its chunks follow.
    AttachmentStart {
        /// Index from 0.
        index: u32,
        /// Announced length.
        len: u64,
    },
    /// A chunk of the current attachment.
    Attachment(&'a [u8]),
    /// The message is complete. Returned again on every later call.
    End,
}

#[derive(Debug, Clone)]
enum State {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Names,
    Log {
        remaining: u64,
    },
    Body {
        remaining: u64,
    },
    AttLen {
        index: u32,
        buf: [u8; 8],
        have: usize,
    },
    Attachment {
        index: u32,
        remaining: u64,
    },
    Done,
}

/// Streaming decoder of one message (spec §6).
///
/// Call [`decode`](Self::decode) with the bytes available; it returns how many it
/// consumed and at most one event. `(n, None)` always means `n == input.len()`: all
/// input was used and more is needed. The consumed bytes, concatenated, are exactly
/// the message; bytes after it are never consumed.
#[derive(Debug, Clone)]
pub struct MessageDecoder {
    limits: MessageLimits,
    state: State,
    env: Envelope,
    names_done: usize,
    name_buf: Vec<u8>,
    total: u64,
    consumed: u64,
    error: Option<MessageError>,
}

impl MessageDecoder {
    /// A decoder for one message under `limits`.
    pub fn new(limits: MessageLimits) -> Self {
        MessageDecoder {
            limits,
            state: State::Header {
                buf: [0; HEADER_LEN],
                have: 0,
            },
            env: Envelope::default(),
            names_done: 0,
            name_buf: Vec::new(),
            total: 0,
            consumed: 0,
            error: None,
        }
    }

    /// Bytes of the message consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The envelope, once it has been decoded.
    pub fn envelope(&self) -> Option<&Envelope> {
        match self.state {
            State::Header { .. } | State::Names => None,
            _ => Some(&self.env),
        }
    }

    /// Offset where the body ends (see [`Envelope::body_end`]), once known.
    pub fn body_end(&self) -> Option<u64> {
        self.envelope().map(Envelope::body_end)
    }

    /// True once every byte of the message has been consumed.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feeds bytes; see the type's documentation for the contract.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<MessageEvent<'a>>), MessageError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let r = self.step(input);
        match &r {
            Ok((n, _)) => {
                self.consumed += *n as u64;
                self.settle();
            }
            Err(e) => self.error = Some(e.clone()),
        }
        r
    }

    /// Moves past fields with nothing left to read, so that [`Self::is_done`] is true
    /// as soon as the last byte has been consumed.
    fn settle(&mut self) {
        loop {
            self.state = match self.state {
                State::Log { remaining: 0 } => State::Body {
                    remaining: self.env.body_length,
                },
                State::Body { remaining: 0 } => self.attachment_state(0),
                State::Attachment {
                    index,
                    remaining: 0,
                } => self.attachment_state(index + 1),
                _ => return,
            };
        }
    }

    fn fail<T>(&self, e: MessageError) -> Result<T, MessageError> {
        Err(e)
    }

    fn check_total(&self, announced: u64) -> Result<(), MessageError> {
        if announced > self.limits.max_total {
            return self.fail(MessageError::TooLarge {
                announced,
                max: self.limits.max_total,
            });
        }
        Ok(())
    }

    fn step<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<MessageEvent<'a>>), MessageError> {
        let mut used = 0usize;
        loop {
            let rest = &input[used..];
            match &mut self.state {
                State::Header { buf, have } => {
                    let k = (HEADER_LEN - *have).min(rest.len());
                    buf[*have..*have + k].copy_from_slice(&rest[..k]);
                    *have += k;
                    used += k;
                    if *have < HEADER_LEN {
                        return Ok((used, None));
                    }
                    let h = *buf;
                    self.env.version = be_u32(&h[0..]);
                    self.env.attachment_count = be_u32(&h[4..]);
                    self.env.log_length = be_u64(&h[8..]);
                    self.env.body_length = be_u64(&h[16..]);
                    let env = &self.env;
                    if env.attachment_count > self.limits.max_attachments {
                        return self.fail(MessageError::TooManyAttachments {
                            count: env.attachment_count,
                            max: self.limits.max_attachments,
                        });
                    }
                    if env.log_length > self.limits.max_log {
                        return self.fail(MessageError::LogTooLong {
                            len: env.log_length,
                            max: self.limits.max_log,
                        });
                    }
                    // Lower bound: four empty names, every attachment empty.
                    let min_total = (HEADER_LEN as u64 + 4)
                        .saturating_add(env.log_length)
                        .saturating_add(env.body_length)
                        .saturating_add(8 * u64::from(env.attachment_count));
                    self.check_total(min_total)?;
                    self.state = State::Names;
                }
                State::Names => {
                    let room = MAX_PARAM + 1 - self.name_buf.len();
                    let window = &rest[..rest.len().min(room)];
                    match window.iter().position(|&b| b == 0) {
                        Some(p) => {
                            self.name_buf.extend_from_slice(&window[..p]);
                            used += p + 1;
                            let name = std::str::from_utf8(&self.name_buf)
                                .map_err(|_| MessageError::InvalidUtf8)?
                                .to_owned();
                            self.name_buf.clear();
                            match self.names_done {
                                0 => self.env.dest_account = name,
                                1 => self.env.dest_domain = name,
                                2 => self.env.src_account = name,
                                _ => self.env.src_domain = name,
                            }
                            self.names_done += 1;
                            if self.names_done == 4 {
                                self.name_buf = Vec::new();
                                let env = &self.env;
                                let total = (env.encoded_len() as u64)
                                    .saturating_add(env.log_length)
                                    .saturating_add(env.body_length);
                                self.check_total(
                                    total.saturating_add(8 * u64::from(env.attachment_count)),
                                )?;
                                self.total = total;
                                self.state = State::Log {
                                    remaining: env.log_length,
                                };
                                return Ok((used, Some(MessageEvent::Envelope(env.clone()))));
                            }
                        }
                        None if self.name_buf.len() + window.len() > MAX_PARAM => {
                            return self.fail(MessageError::NameTooLong);
                        }
                        None => {
                            self.name_buf.extend_from_slice(window);
                            used += window.len();
                            return Ok((used, None));
                        }
                    }
                }
                State::Log { remaining } => {
                    if *remaining == 0 {
                        self.state = State::Body {
                            remaining: self.env.body_length,
                        };
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let k = chunk(*remaining, rest.len());
                    *remaining -= k as u64;
                    if *remaining == 0 {
                        // Advance now so that `is_done` is true after the last byte.
                        self.state = State::Body {
                            remaining: self.env.body_length,
                        };
                    }
                    return Ok((used + k, Some(MessageEvent::Log(&rest[..k]))));
                }
                State::Body { remaining } => {
                    if *remaining == 0 {
                        self.state = self.attachment_state(0);
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let k = chunk(*remaining, rest.len());
                    *remaining -= k as u64;
                    if *remaining == 0 {
                        self.state = self.attachment_state(0);
                    }
                    return Ok((used + k, Some(MessageEvent::Body(&rest[..k]))));
                }
                State::AttLen { index, buf, have } => {
                    let k = (8 - *have).min(rest.len());
                    buf[*have..*have + k].copy_from_slice(&rest[..k]);
                    *have += k;
                    used += k;
                    if *have < 8 {
                        return Ok((used, None));
                    }
                    let index = *index;
                    let len = be_u64(&buf[..]);
                    // Running total, plus the length fields still to come.
                    let later = 8 * u64::from(self.env.attachment_count - index - 1);
                    let total = self.total.saturating_add(8).saturating_add(len);
                    self.check_total(total.saturating_add(later))?;
                    self.total = total;
                    self.state = State::Attachment {
                        index,
                        remaining: len,
                    };
                    return Ok((used, Some(MessageEvent::AttachmentStart { index, len })));
                }
                State::Attachment { index, remaining } => {
                    if *remaining == 0 {
                        let next = *index + 1;
                        self.state = self.attachment_state(next);
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    let k = chunk(*remaining, rest.len());
                    *remaining -= k as u64;
                    if *remaining == 0 {
                        let next = *index + 1;
                        self.state = self.attachment_state(next);
                    }
                    return Ok((used + k, Some(MessageEvent::Attachment(&rest[..k]))));
                }
                State::Done => return Ok((used, Some(MessageEvent::End))),
            }
        }
    }

    fn attachment_state(&self, index: u32) -> State {
        if index < self.env.attachment_count {
            State::AttLen {
                index,
                buf: [0; 8],
                have: 0,
            }
        } else {
            State::Done
        }
    }
}

/// How many of `available` bytes belong to a field with `remaining` bytes left.
fn chunk(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(atts: &[&[u8]]) -> Vec<u8> {
        let env = Envelope::new(1, "bob", "hawaii.edu", "alice", "hawaii.edu");
        let mut out = Vec::new();
        encode_message(&env, b"hop\0", b"body bytes", atts, &mut out).unwrap();
        out
    }

    fn collect(dec: &mut MessageDecoder, input: &[u8]) -> (usize, Vec<String>) {
        let mut pos = 0;
        let mut evs = Vec::new();
        loop {
            let (n, ev) = dec.decode(&input[pos..]).unwrap();
            pos += n;
            match ev {
                Some(MessageEvent::End) => {
                    assert!(dec.is_done());
                    evs.push("End".into());
                    return (pos, evs);
                }
                Some(e) => evs.push(format!("{e:?}")),
                None => {
                    assert_eq!(pos, input.len());
                    return (pos, evs);
                }
            }
        }
    }

    #[test]
    fn decodes_whole_message_and_stops() {
        let mut m = msg(&[b"a1", b""]);
        let len = m.len();
        m.extend_from_slice(b"NEXT\0");
        let mut d = MessageDecoder::new(MessageLimits::default());
        let (used, evs) = collect(&mut d, &m);
        assert_eq!(used, len);
        assert!(d.is_done());
        assert_eq!(d.consumed(), len as u64);
        assert_eq!(evs.len(), 7, "{evs:?}");
        assert!(evs[1].contains("Log"));
        assert_eq!(d.body_end(), Some((len - 8 - 2 - 8) as u64));
    }

    #[test]
    fn limits_before_bytes() {
        let mut h = Vec::new();
        h.extend_from_slice(&1u32.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes());
        h.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert!(matches!(d.decode(&h), Err(MessageError::TooLarge { .. })));
        // And it stays failed.
        assert!(d.decode(b"x").is_err());

        let mut h2 = h.clone();
        h2[4..8].copy_from_slice(&65u32.to_be_bytes());
        h2[16..24].copy_from_slice(&0u64.to_be_bytes());
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert_eq!(
            d.decode(&h2),
            Err(MessageError::TooManyAttachments { count: 65, max: 64 })
        );

        let mut h3 = h.clone();
        h3[8..16].copy_from_slice(&(64 * 1024 + 1u64).to_be_bytes());
        h3[16..24].copy_from_slice(&0u64.to_be_bytes());
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert!(matches!(
            d.decode(&h3),
            Err(MessageError::LogTooLong { .. })
        ));
    }

    #[test]
    fn attachment_running_total() {
        let limits = MessageLimits {
            max_total: 200,
            ..MessageLimits::default()
        };
        let env = Envelope::new(1, "b", "d", "a", "d");
        let mut m = Vec::new();
        encode_message(&env, b"", b"", &[&[7u8; 100], &[8u8; 100]], &mut m).unwrap();
        let mut d = MessageDecoder::new(limits);
        let mut pos = 0;
        let err = loop {
            match d.decode(&m[pos..]) {
                Ok((n, _)) => pos += n,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MessageError::TooLarge { .. }));
        // Refused when the second length arrives, before its bytes.
        assert_eq!(pos, env.encoded_len() + 8 + 100);
    }

    #[test]
    fn names_limits() {
        let mut m = Vec::new();
        Envelope::new(0, "", "", "", "").encode(&mut m);
        let mut long = m[..HEADER_LEN].to_vec();
        long.extend(std::iter::repeat_n(b'a', 256));
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert_eq!(d.decode(&long), Err(MessageError::NameTooLong));
        let mut ok = m[..HEADER_LEN].to_vec();
        ok.extend(std::iter::repeat_n(b'a', 255));
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert_eq!(d.decode(&ok), Ok((ok.len(), None)));
        let mut bad = m[..HEADER_LEN].to_vec();
        bad.extend_from_slice(b"\xff\0");
        let mut d = MessageDecoder::new(MessageLimits::default());
        assert_eq!(d.decode(&bad), Err(MessageError::InvalidUtf8));
    }
}
