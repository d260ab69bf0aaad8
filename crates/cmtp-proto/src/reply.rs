//! Replies, server to client (spec §3, §4, §5; docs/protocol.md D1, D4).
//!
//! Encoders append to a `Vec<u8>`. Decoders are incremental and have the shape
//! `fn decode_*(buf) -> Result<Option<(T, usize)>, ReplyError>`: `Ok(None)` = need more
//! bytes, the `usize` is how many bytes the reply used. Signatures are 64 raw bytes
//! that may contain NUL, so every decoder reads them by length. Each decoded reply
//! exposes the bytes its signature covers (`signed_bytes`); verifying is the caller's.

use crate::{KEY_LEN, SIG_LEN, be_u32, be_u64};

/// Text of the general success reply.
pub const SUCCESS: &str = "SUCCESS";
/// Text of the general failure reply (and of a version-0 LOGIN/mailbox failure).
pub const FAILURE: &str = "FAILURE";
/// Version-0 text: no such key (KEYREQUEST).
pub const KEYNOTAVAILABLE: &str = "KEYNOTAVAILABLE";
/// Version-0 text: the message cannot be delivered (MAIL).
pub const DELIVERYFAILURE: &str = "DELIVERYFAILURE";
/// Version-0 text: mailbox request not authorised (D4).
pub const AUTHFAILURE: &str = "AUTHFAILURE";
/// Version-0 text: no such stored message (D4).
pub const NOSUCHMESSAGE: &str = "NOSUCHMESSAGE";
/// Version-0 text answering HELP (D1).
pub const HELP_TEXT: &str =
    "Commands: OHAI NOOP KEYREQUEST LOGIN MAIL SUBMIT OBAI HELP MBOXLIST MBOXFETCH MBOXDEL";
/// The refusal an SMTP client gets (D1), after which the server closes.
pub const SMTP_REFUSAL: &[u8] = b"554 5.5.1 this is a CMTP server; say OHAI\r\n";
/// The 2016 server's answer to OHAI, without its NUL.
pub const LEGACY_OHAI: &str = "HAI!!! :3\n";
/// The capability word of transport encryption in the OHAI answer (D6, D7).
pub const CAP_TLS: &str = "TLS";
/// Longest greeting a client reads, terminator included.
pub const MAX_GREETING: usize = 512;
/// Longest OHAI answer a client reads, NUL included.
pub const MAX_OHAI: usize = 512;
/// Longest version-0 message text (HELP is the longest the server sends).
pub const MAX_V0_TEXT: usize = 1024;
/// Length of a crypto-system-1 key reply.
pub const KEY_REPLY_LEN: usize = 4 + KEY_LEN + 1 + SIG_LEN + 1;

/// Errors of replies on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// No terminator within the maximum length.
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
    /// The OHAI answer is neither `OHAI…` nor the 2016 answer (not a CMTP server).
    #[error("not a CMTP server: {0:?}")]
    NotCmtp(String),
    /// A general reply whose text is not SUCCESS or FAILURE.
    #[error("unexpected reply text {0:?}")]
    UnexpectedText(String),
    /// A byte that must be NUL is not.
    #[error("missing NUL at offset {0}")]
    MissingNul(usize),
    /// A versioned reply with a version this decoder does not know.
    #[error("unsupported reply version {0}")]
    UnsupportedVersion(u32),
    /// A length field above the caller's maximum.
    #[error("announced length {len} exceeds the maximum {max}")]
    LengthTooLarge {
        /// The length the peer announced.
        len: u64,
        /// The most the caller accepts.
        max: u64,
    },
    /// Text that must be UTF-8 is not.
    #[error("reply text is not valid UTF-8")]
    InvalidUtf8,
    /// A general reply was expected but a versioned one (first byte 0) arrived, or
    /// the other way round.
    #[error("unexpected reply shape")]
    UnexpectedShape,
}

/// What every reply decoder returns: `Ok(None)` = need more bytes, otherwise the reply
/// and how many bytes it used.
pub type Decoded<T> = Result<Option<(T, usize)>, ReplyError>;

fn sig_at(buf: &[u8], at: usize) -> [u8; SIG_LEN] {
    let mut s = [0u8; SIG_LEN];
    s.copy_from_slice(&buf[at..at + SIG_LEN]);
    s
}

/// Finds the NUL ending a text at the start of `buf`, within `max` bytes of text.
fn text_end(buf: &[u8], max: usize) -> Result<Option<usize>, ReplyError> {
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(Some(n)),
        None if window.len() > max => Err(ReplyError::TooLong(max)),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------- greeting

/// Which server sent a greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GreetingKind {
    /// `220 <domain> CMTP/1 …` (this project, spec §3).
    Cmtp1,
    /// The 2016 server: `Welcome to CMTP version < 1\n`.
    Legacy2016,
    /// Anything else (e.g. a plain SMTP server's `220 …`).
    Other,
}

/// A greeting line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Greeting {
    /// The text without its terminator (`\r\n` or NUL); lossy UTF-8.
    pub text: String,
    /// Classification of the text.
    pub kind: GreetingKind,
}

/// Appends `220 <domain> CMTP/1 ready\r\n` (D1).
pub fn encode_greeting(domain: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"220 ");
    out.extend_from_slice(domain.as_bytes());
    out.extend_from_slice(b" CMTP/1 ready\r\n");
}

/// Reads a greeting up to `\r\n` or NUL, whichever comes first (spec §3), at most
/// [`MAX_GREETING`] bytes.
pub fn decode_greeting(buf: &[u8]) -> Decoded<Greeting> {
    let window = &buf[..buf.len().min(MAX_GREETING)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        if b == 0 {
            end = Some((i, i + 1));
            break;
        }
        if b == b'\r' && window.get(i + 1) == Some(&b'\n') {
            end = Some((i, i + 2));
            break;
        }
    }
    let Some((text_len, used)) = end else {
        return if window.len() >= MAX_GREETING {
            Err(ReplyError::TooLong(MAX_GREETING))
        } else {
            Ok(None)
        };
    };
    let text = String::from_utf8_lossy(&buf[..text_len]).into_owned();
    let kind = if text.starts_with("220 ") && text.contains(" CMTP/1") {
        GreetingKind::Cmtp1
    } else if text.starts_with("Welcome to CMTP") {
        GreetingKind::Legacy2016
    } else {
        GreetingKind::Other
    };
    Ok(Some((Greeting { text, kind }, used)))
}

// ---------------------------------------------------------------- OHAI

/// The answer to OHAI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OhaiAnswer {
    /// `OHAI …` (the whole text without NUL, e.g. `OHAI CMTP/1 cmtpd/0.1.0`).
    Cmtp(String),
    /// The 2016 server's `HAI!!! :3\n`.
    Legacy2016,
}

/// Appends `OHAI CMTP/1 <software>[ <capability>…]\0` (D1, D6), e.g. software =
/// `cmtpd/0.1.0` and no capabilities. Capabilities are the extensions this server
/// offers, each one word from [`is_capability`]; a CMTP/1 client that knows none of them
/// ignores the whole text.
pub fn encode_ohai(software: &str, capabilities: &[&str], out: &mut Vec<u8>) {
    out.extend_from_slice(b"OHAI CMTP/1 ");
    out.extend_from_slice(software.as_bytes());
    for c in capabilities {
        debug_assert!(is_capability(c), "not a capability word: {c:?}");
        out.push(b' ');
        out.extend_from_slice(c.as_bytes());
    }
    out.push(0);
}

/// Whether `word` has the form of a capability in the OHAI answer: 1 to 32 of `A`–`Z`,
/// `0`–`9`, `-`, starting with a letter (D6).
pub fn is_capability(word: &str) -> bool {
    (1..=32).contains(&word.len())
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

/// The capabilities an OHAI answer text offers (D6): the words after `OHAI CMTP/1
/// <software>` that have the form of one ([`is_capability`]); anything else there is
/// ignored, so an unknown or odd server text offers nothing rather than failing.
pub fn ohai_capabilities(text: &str) -> Vec<&str> {
    let mut words = text.split(' ');
    if words.next() != Some("OHAI") || words.next() != Some("CMTP/1") {
        return Vec::new();
    }
    words.skip(1).filter(|w| is_capability(w)).collect()
}

/// Reads the answer to OHAI. Fails as soon as the first bytes can be neither `OHAI`
/// nor the 2016 answer (an SMTP server's `500 …` fails on its first byte).
pub fn decode_ohai(buf: &[u8]) -> Decoded<OhaiAnswer> {
    let prefix_ok = |want: &[u8]| {
        let n = buf.len().min(want.len());
        buf[..n] == want[..n]
    };
    let cmtp = prefix_ok(b"OHAI");
    let legacy = prefix_ok(LEGACY_OHAI.as_bytes());
    if !cmtp && !legacy {
        let n = buf.len().min(64);
        return Err(ReplyError::NotCmtp(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    let Some(n) = text_end(buf, MAX_OHAI - 1)? else {
        return Ok(None);
    };
    let text = &buf[..n];
    if text == LEGACY_OHAI.as_bytes() {
        return Ok(Some((OhaiAnswer::Legacy2016, n + 1)));
    }
    if !text.starts_with(b"OHAI") {
        return Err(ReplyError::NotCmtp(
            String::from_utf8_lossy(text).into_owned(),
        ));
    }
    let s = std::str::from_utf8(text).map_err(|_| ReplyError::InvalidUtf8)?;
    Ok(Some((OhaiAnswer::Cmtp(s.to_owned()), n + 1)))
}

// ---------------------------------------------------------------- general

/// `SUCCESS|FAILURE NUL sig NUL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GeneralReply {
    /// True for SUCCESS.
    pub ok: bool,
    /// Server signature over [`GeneralReply::signed_bytes`].
    pub sig: [u8; SIG_LEN],
}

impl GeneralReply {
    /// The bytes the signature covers: `SUCCESS` or `FAILURE` (no NUL).
    pub fn signed_bytes(&self) -> &'static [u8] {
        general_text(self.ok).as_bytes()
    }
}

/// `SUCCESS` or `FAILURE`.
pub fn general_text(ok: bool) -> &'static str {
    if ok { SUCCESS } else { FAILURE }
}

/// Appends `SUCCESS|FAILURE NUL sig NUL`. `sig` signs [`general_text`]`(ok)`.
pub fn encode_general(ok: bool, sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    out.extend_from_slice(general_text(ok).as_bytes());
    out.push(0);
    out.extend_from_slice(sig);
    out.push(0);
}

/// Reads a general reply (73 bytes).
pub fn decode_general(buf: &[u8]) -> Decoded<GeneralReply> {
    if buf.first() == Some(&0) {
        return Err(ReplyError::UnexpectedShape);
    }
    // Both texts are 7 bytes; refuse a wrong prefix as soon as it shows.
    let n = buf.len().min(7);
    let ok = if SUCCESS.as_bytes()[..n] == buf[..n] {
        true
    } else if FAILURE.as_bytes()[..n] == buf[..n] {
        false
    } else {
        return Err(ReplyError::UnexpectedText(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    };
    let len = 7 + 1 + SIG_LEN + 1;
    if buf.len() < len {
        if buf.len() > 7 && buf[7] != 0 {
            return Err(ReplyError::MissingNul(7));
        }
        return Ok(None);
    }
    if buf[7] != 0 {
        return Err(ReplyError::MissingNul(7));
    }
    if buf[len - 1] != 0 {
        return Err(ReplyError::MissingNul(len - 1));
    }
    Ok(Some((
        GeneralReply {
            ok,
            sig: sig_at(buf, 8),
        },
        len,
    )))
}

// ---------------------------------------------------------------- version 0

/// A version-0 message: `u32 0 | TEXT NUL | sig NUL`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct V0Reply {
    /// The message (e.g. `KEYNOTAVAILABLE`).
    pub text: String,
    /// Server signature over the text (without NUL).
    pub sig: [u8; SIG_LEN],
}

impl V0Reply {
    /// The bytes the signature covers: the text without its NUL.
    pub fn signed_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

/// Appends `u32 0 | text NUL | sig NUL`; `sig` signs `text`.
pub fn encode_v0(text: &str, sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    out.extend_from_slice(sig);
    out.push(0);
}

/// Reads a version-0 message body that starts after its `u32 0` (at `buf[0]`).
fn decode_v0_body(buf: &[u8]) -> Decoded<V0Reply> {
    let Some(n) = text_end(buf, MAX_V0_TEXT)? else {
        return Ok(None);
    };
    let len = n + 1 + SIG_LEN + 1;
    if buf.len() < len {
        return Ok(None);
    }
    if buf[len - 1] != 0 {
        return Err(ReplyError::MissingNul(len - 1));
    }
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| ReplyError::InvalidUtf8)?;
    Ok(Some((
        V0Reply {
            text: text.to_owned(),
            sig: sig_at(buf, n + 1),
        },
        len,
    )))
}

/// Reads a version-0 message (`u32 0 | TEXT NUL | sig NUL`).
pub fn decode_v0(buf: &[u8]) -> Decoded<V0Reply> {
    if buf.len() < 4 {
        return if buf.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(ReplyError::UnexpectedShape)
        };
    }
    let v = be_u32(buf);
    if v != 0 {
        return Err(ReplyError::UnsupportedVersion(v));
    }
    Ok(decode_v0_body(&buf[4..])?.map(|(r, n)| (r, n + 4)))
}

/// A reply that is either general or version 0 (MAIL, NOOP, HELP...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatusReply {
    /// SUCCESS / FAILURE.
    General(GeneralReply),
    /// A version-0 message such as DELIVERYFAILURE.
    V0(V0Reply),
}

impl StatusReply {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        match self {
            StatusReply::General(g) => g.signed_bytes(),
            StatusReply::V0(v) => v.signed_bytes(),
        }
    }
}

/// Reads a general or version-0 reply, told apart by the first byte (spec §4).
pub fn decode_general_or_v0(buf: &[u8]) -> Decoded<StatusReply> {
    match buf.first() {
        None => Ok(None),
        Some(0) => Ok(decode_v0(buf)?.map(|(r, n)| (StatusReply::V0(r), n))),
        Some(_) => Ok(decode_general(buf)?.map(|(r, n)| (StatusReply::General(r), n))),
    }
}

// ---------------------------------------------------------------- KEYREQUEST

/// The answer to KEYREQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyReply {
    /// `u32 version | key | NUL | sig | NUL` (version 1, 102 bytes).
    Key {
        /// Crypto system (1).
        version: u32,
        /// Ed25519 public key.
        key: [u8; KEY_LEN],
        /// Server signature over the 32 key bytes.
        sig: [u8; SIG_LEN],
    },
    /// A version-0 message (`KEYNOTAVAILABLE`).
    V0(V0Reply),
}

impl KeyReply {
    /// The bytes the signature covers: the key, or the version-0 text.
    pub fn signed_bytes(&self) -> &[u8] {
        match self {
            KeyReply::Key { key, .. } => key,
            KeyReply::V0(v) => v.signed_bytes(),
        }
    }
}

/// Appends `u32 version | key | NUL | sig | NUL`; `sig` signs the key bytes.
pub fn encode_key(version: u32, key: &[u8; KEY_LEN], sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(sig);
    out.push(0);
}

/// Reads the answer to KEYREQUEST (version 1 key, or version 0 message).
pub fn decode_key_reply(buf: &[u8]) -> Decoded<KeyReply> {
    if buf.len() < 4 {
        return Ok(None);
    }
    match be_u32(buf) {
        0 => Ok(decode_v0_body(&buf[4..])?.map(|(r, n)| (KeyReply::V0(r), n + 4))),
        1 => {
            if buf.len() > 4 + KEY_LEN && buf[4 + KEY_LEN] != 0 {
                return Err(ReplyError::MissingNul(4 + KEY_LEN));
            }
            if buf.len() < KEY_REPLY_LEN {
                return Ok(None);
            }
            if buf[KEY_REPLY_LEN - 1] != 0 {
                return Err(ReplyError::MissingNul(KEY_REPLY_LEN - 1));
            }
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(&buf[4..4 + KEY_LEN]);
            Ok(Some((
                KeyReply::Key {
                    version: 1,
                    key,
                    sig: sig_at(buf, 4 + KEY_LEN + 1),
                },
                KEY_REPLY_LEN,
            )))
        }
        v => Err(ReplyError::UnsupportedVersion(v)),
    }
}

// ---------------------------------------------------------------- LOGIN

/// The answer to LOGIN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LoginReply {
    /// `u32 version | u32 len | xzibit | sig` (no trailing NUL).
    Xzibit {
        /// Crypto system of the signature (1).
        version: u32,
        /// The xzibit bytes (its own version is inside).
        xzibit: Vec<u8>,
        /// Server signature over the xzibit bytes.
        sig: [u8; SIG_LEN],
    },
    /// A version-0 message (`FAILURE`: unknown user).
    V0(V0Reply),
}

impl LoginReply {
    /// The bytes the signature covers: the xzibit, or the version-0 text.
    pub fn signed_bytes(&self) -> &[u8] {
        match self {
            LoginReply::Xzibit { xzibit, .. } => xzibit,
            LoginReply::V0(v) => v.signed_bytes(),
        }
    }
}

/// Appends `u32 version | u32 len | xzibit | sig`; `sig` signs the xzibit. An xzibit
/// is small; one longer than `u32::MAX` bytes is truncated to that length.
pub fn encode_login(version: u32, xzibit: &[u8], sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    let len = u32::try_from(xzibit.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&xzibit[..len as usize]);
    out.extend_from_slice(sig);
}

/// Reads the CMTP/1 answer to LOGIN; an xzibit longer than `max_len` is refused as
/// soon as its length is visible.
pub fn decode_login_reply(buf: &[u8], max_len: u32) -> Decoded<LoginReply> {
    if buf.len() < 4 {
        return Ok(None);
    }
    match be_u32(buf) {
        0 => Ok(decode_v0_body(&buf[4..])?.map(|(r, n)| (LoginReply::V0(r), n + 4))),
        1 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            let len = be_u32(&buf[4..]);
            if len > max_len {
                return Err(ReplyError::LengthTooLarge {
                    len: len.into(),
                    max: max_len.into(),
                });
            }
            let total = 8 + len as usize + SIG_LEN;
            if buf.len() < total {
                return Ok(None);
            }
            Ok(Some((
                LoginReply::Xzibit {
                    version: 1,
                    xzibit: buf[8..8 + len as usize].to_vec(),
                    sig: sig_at(buf, 8 + len as usize),
                },
                total,
            )))
        }
        v => Err(ReplyError::UnsupportedVersion(v)),
    }
}

// ---------------------------------------------------------------- mailbox (D4)

/// The head of a mailbox reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MboxHead {
    /// `u32 1 | u64 payload_length`: `payload_length` bytes follow, then sig(64).
    Ok {
        /// Length of the payload that follows.
        payload_len: u64,
    },
    /// A version-0 error (`AUTHFAILURE`, `NOSUCHMESSAGE`, `FAILURE`).
    Error(V0Reply),
}

/// Length of [`MboxHead::Ok`] on the wire.
pub const MBOX_HEAD_LEN: usize = 12;

/// Appends the success head `u32 1 | u64 payload_len`; the payload and then
/// [`encode_mbox_trailer`] follow.
pub fn encode_mbox_ok(payload_len: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&payload_len.to_be_bytes());
}

/// Appends the trailer of a success reply: the signature over
/// [`crate::mbox::reply_signing_bytes`].
pub fn encode_mbox_trailer(sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    out.extend_from_slice(sig);
}

/// Reads the trailer of a success reply: the bare signature after the payload.
pub fn decode_mbox_trailer(buf: &[u8]) -> Decoded<[u8; SIG_LEN]> {
    Ok(buf.first_chunk::<SIG_LEN>().map(|s| (*s, SIG_LEN)))
}

/// Reads the head of a mailbox reply. For `Ok`, the caller then streams
/// `payload_len` bytes and reads the 64-byte signature.
pub fn decode_mbox_reply_head(buf: &[u8]) -> Decoded<MboxHead> {
    if buf.len() < 4 {
        return Ok(None);
    }
    match be_u32(buf) {
        0 => Ok(decode_v0_body(&buf[4..])?.map(|(r, n)| (MboxHead::Error(r), n + 4))),
        1 => {
            if buf.len() < MBOX_HEAD_LEN {
                return Ok(None);
            }
            Ok(Some((
                MboxHead::Ok {
                    payload_len: be_u64(&buf[4..]),
                },
                MBOX_HEAD_LEN,
            )))
        }
        v => Err(ReplyError::UnsupportedVersion(v)),
    }
}

/// A whole mailbox reply, for small payloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MboxReply {
    /// Success: the payload and the server's signature over
    /// `reply_signing_bytes(request_sig, BLAKE2b-256(payload))`.
    Ok {
        /// The payload.
        payload: Vec<u8>,
        /// The signature.
        sig: [u8; SIG_LEN],
    },
    /// A version-0 error.
    Error(V0Reply),
}

/// Reads a whole mailbox reply whose payload is at most `max_payload` bytes (refused
/// as soon as the length is visible).
pub fn decode_mbox_reply(buf: &[u8], max_payload: u64) -> Decoded<MboxReply> {
    let Some((head, n)) = decode_mbox_reply_head(buf)? else {
        return Ok(None);
    };
    match head {
        MboxHead::Error(v) => Ok(Some((MboxReply::Error(v), n))),
        MboxHead::Ok { payload_len } => {
            if payload_len > max_payload {
                return Err(ReplyError::LengthTooLarge {
                    len: payload_len,
                    max: max_payload,
                });
            }
            let Ok(plen) = usize::try_from(payload_len) else {
                return Err(ReplyError::LengthTooLarge {
                    len: payload_len,
                    max: usize::MAX as u64,
                });
            };
            let Some(total) = n.checked_add(plen).and_then(|t| t.checked_add(SIG_LEN)) else {
                return Err(ReplyError::LengthTooLarge {
                    len: payload_len,
                    max: max_payload,
                });
            };
            if buf.len() < total {
                return Ok(None);
            }
            Ok(Some((
                MboxReply::Ok {
                    payload: buf[n..n + plen].to_vec(),
                    sig: sig_at(buf, n + plen),
                },
                total,
            )))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sig() -> [u8; 64] {
        let mut s = [0u8; 64];
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i % 3) as u8; // contains NULs on purpose
        }
        s
    }

    /// Every strict prefix of `b` is `Ok(None)` (need more bytes); shared with `legacy`.
    pub(crate) fn all_prefixes_need_more<T: std::fmt::Debug>(
        b: &[u8],
        f: impl Fn(&[u8]) -> Decoded<T>,
    ) {
        for cut in 0..b.len() {
            assert!(
                matches!(f(&b[..cut]), Ok(None)),
                "cut {cut}: {:?}",
                f(&b[..cut])
            );
        }
    }

    #[test]
    fn greeting() {
        let mut b = Vec::new();
        encode_greeting("hawaii.edu", &mut b);
        let (g, n) = decode_greeting(&b).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(g.kind, GreetingKind::Cmtp1);
        assert_eq!(g.text, "220 hawaii.edu CMTP/1 ready");
        let (g, n) = decode_greeting(b"Welcome to CMTP version < 1\n\0OHAI")
            .unwrap()
            .unwrap();
        assert_eq!((g.kind, n), (GreetingKind::Legacy2016, 29));
        assert_eq!(decode_greeting(b"220 x\r"), Ok(None));
        assert!(decode_greeting(&[b'a'; 600]).is_err());
        let (g, _) = decode_greeting(b"220 smtp ESMTP\r\n").unwrap().unwrap();
        assert_eq!(g.kind, GreetingKind::Other);
    }

    #[test]
    fn ohai() {
        let mut b = Vec::new();
        encode_ohai("cmtpd/0.1.0", &[], &mut b);
        assert_eq!(b, b"OHAI CMTP/1 cmtpd/0.1.0\0");
        all_prefixes_need_more(&b, decode_ohai);
        assert_eq!(
            decode_ohai(&b).unwrap(),
            Some((OhaiAnswer::Cmtp("OHAI CMTP/1 cmtpd/0.1.0".into()), b.len()))
        );
        assert_eq!(
            decode_ohai(b"HAI!!! :3\n\0").unwrap(),
            Some((OhaiAnswer::Legacy2016, 11))
        );
        assert!(matches!(decode_ohai(b"5"), Err(ReplyError::NotCmtp(_))));
        assert!(matches!(
            decode_ohai(b"HAI!!! :3\nx\0"),
            Err(ReplyError::NotCmtp(_))
        ));
    }

    /// Capabilities ride after the software word and read back; odd words and other
    /// texts offer nothing.
    #[test]
    fn ohai_capabilities_round_trip() {
        let mut b = Vec::new();
        encode_ohai("cmtpd/0.2.0", &["TLS", "OPAQUE-1"], &mut b);
        assert_eq!(b, b"OHAI CMTP/1 cmtpd/0.2.0 TLS OPAQUE-1\0");
        let Some((OhaiAnswer::Cmtp(text), _)) = decode_ohai(&b).unwrap() else {
            panic!("not a CMTP answer");
        };
        assert_eq!(ohai_capabilities(&text), ["TLS", "OPAQUE-1"]);
        assert!(ohai_capabilities("OHAI CMTP/1 cmtpd/0.1.0").is_empty());
        assert_eq!(
            ohai_capabilities("OHAI CMTP/1 x/1 tls TLS 9X  -A OPAQUE"),
            ["TLS", "OPAQUE"]
        );
        assert!(ohai_capabilities("OHAI CMTP/2 x TLS").is_empty());
        assert!(ohai_capabilities("HAI!!! :3").is_empty());
        assert!(is_capability("A"));
        assert!(!is_capability(&"A".repeat(33)));
        assert!(!is_capability(""));
    }

    #[test]
    fn general_and_v0() {
        let mut b = Vec::new();
        encode_general(true, &sig(), &mut b);
        assert_eq!(b.len(), 73);
        all_prefixes_need_more(&b, decode_general);
        let (g, n) = decode_general(&b).unwrap().unwrap();
        assert_eq!((g.ok, g.sig, n), (true, sig(), 73));
        assert_eq!(g.signed_bytes(), b"SUCCESS");
        assert!(decode_general(b"O_O\n\0").is_err());
        let mut v = Vec::new();
        encode_v0(DELIVERYFAILURE, &sig(), &mut v);
        all_prefixes_need_more(&v, decode_general_or_v0);
        let (r, n) = decode_general_or_v0(&v).unwrap().unwrap();
        assert_eq!(n, v.len());
        assert_eq!(r.signed_bytes(), b"DELIVERYFAILURE");
        let (r, _) = decode_general_or_v0(&b).unwrap().unwrap();
        assert!(matches!(
            r,
            StatusReply::General(GeneralReply { ok: true, .. })
        ));
    }

    #[test]
    fn key_reply() {
        let mut b = Vec::new();
        encode_key(1, &[9; 32], &sig(), &mut b);
        assert_eq!(b.len(), 102);
        all_prefixes_need_more(&b, decode_key_reply);
        let (k, n) = decode_key_reply(&b).unwrap().unwrap();
        assert_eq!(n, 102);
        assert_eq!(k.signed_bytes(), &[9; 32]);
        let mut v = Vec::new();
        encode_v0(KEYNOTAVAILABLE, &sig(), &mut v);
        let (k, _) = decode_key_reply(&v).unwrap().unwrap();
        assert_eq!(k.signed_bytes(), b"KEYNOTAVAILABLE");
        b[36] = 1;
        assert_eq!(decode_key_reply(&b), Err(ReplyError::MissingNul(36)));
        assert_eq!(
            decode_key_reply(&[0, 0, 0, 2]),
            Err(ReplyError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn login_reply() {
        let x = vec![7u8; 156];
        let mut b = Vec::new();
        encode_login(1, &x, &sig(), &mut b);
        assert_eq!(b.len(), 8 + 156 + 64);
        all_prefixes_need_more(&b, |b| decode_login_reply(b, 4096));
        let (r, n) = decode_login_reply(&b, 4096).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(r.signed_bytes(), &x[..]);
        assert!(matches!(
            decode_login_reply(&b[..8], 100),
            Err(ReplyError::LengthTooLarge { len: 156, max: 100 })
        ));
    }

    #[test]
    fn mbox_reply() {
        let mut b = Vec::new();
        encode_mbox_ok(3, &mut b);
        b.extend_from_slice(b"abc");
        encode_mbox_trailer(&sig(), &mut b);
        all_prefixes_need_more(&b[15..], decode_mbox_trailer);
        assert_eq!(decode_mbox_trailer(&b[15..]), Ok(Some((sig(), 64))));
        all_prefixes_need_more(&b, |b| decode_mbox_reply(b, 10));
        assert_eq!(
            decode_mbox_reply_head(&b).unwrap(),
            Some((MboxHead::Ok { payload_len: 3 }, 12))
        );
        let (r, n) = decode_mbox_reply(&b, 10).unwrap().unwrap();
        assert_eq!(n, b.len());
        assert_eq!(
            r,
            MboxReply::Ok {
                payload: b"abc".to_vec(),
                sig: sig()
            }
        );
        assert!(decode_mbox_reply(&b, 2).is_err());
        let mut e = Vec::new();
        encode_v0(AUTHFAILURE, &sig(), &mut e);
        let (r, _) = decode_mbox_reply(&e, 0).unwrap().unwrap();
        assert!(matches!(r, MboxReply::Error(v) if v.text == AUTHFAILURE));
        let mut huge = Vec::new();
        encode_mbox_ok(u64::MAX, &mut huge);
        assert!(
            decode_mbox_reply(&huge, u64::MAX).is_err()
                || decode_mbox_reply(&huge, u64::MAX) == Ok(None)
        );
    }
}
