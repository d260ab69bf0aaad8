//! The mailbox extension (docs/protocol.md D4): list, fetch and delete a user's stored
//! messages, authorised statelessly by the user's Ed25519 key.
//!
//! This module gives the exact bytes a user signs for a request ([`signing_bytes`]),
//! the bytes a server signs for a successful reply ([`reply_signing_bytes`]), and the
//! LIST payload format ([`ListEntry`], [`encode_list`], [`decode_list`]).

use crate::limits::MAX_PARAM;
use crate::{SIG_LEN, be_u32, be_u64};

/// Domain-separation prefix of a signed mailbox request.
pub const REQUEST_CONTEXT: &[u8] = b"CMTP-MBOX/1";
/// Domain-separation prefix of a signed mailbox success reply.
pub const REPLY_CONTEXT: &[u8] = b"CMTP-MBOX-REPLY/1";
/// A server accepts request timestamps within this many seconds of its clock.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// Which mailbox command a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MboxKind {
    /// `MBOXLIST`
    List,
    /// `MBOXFETCH`
    Fetch,
    /// `MBOXDEL`
    Delete,
}

impl MboxKind {
    /// The command word on the wire (and in the signed bytes).
    pub fn word(self) -> &'static str {
        match self {
            MboxKind::List => "MBOXLIST",
            MboxKind::Fetch => "MBOXFETCH",
            MboxKind::Delete => "MBOXDEL",
        }
    }
}

/// Which part of a stored message MBOXFETCH returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchPart {
    /// The whole stored message (`full`).
    Full,
    /// The stored message up to the end of its body, without attachments (`head`).
    Head,
}

impl FetchPart {
    /// The wire spelling: `full` or `head`.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchPart::Full => "full",
            FetchPart::Head => "head",
        }
    }

    /// Parses the wire spelling (exact, lower case).
    pub fn parse(s: &str) -> Option<FetchPart> {
        match s {
            "full" => Some(FetchPart::Full),
            "head" => Some(FetchPart::Head),
            _ => None,
        }
    }
}

/// The parameters of one mailbox command (`MBOXLIST`, `MBOXFETCH`, `MBOXDEL`).
///
/// `id` is present for FETCH and DEL, `part` for FETCH; the parser always fills them
/// for those commands. The encoder writes `0` / `full` if a FETCH or DEL lacks them;
/// build requests with [`MboxRequest::list`], [`MboxRequest::fetch`],
/// [`MboxRequest::delete`] to avoid that.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MboxRequest {
    /// The account (no domain; the domain is implied by the server and signed).
    pub user: String,
    /// Unix seconds when the request was made (ASCII decimal on the wire).
    pub timestamp: u64,
    /// Message id (FETCH, DEL).
    pub id: Option<u64>,
    /// Part to fetch (FETCH).
    pub part: Option<FetchPart>,
    /// The user's Ed25519 signature over [`signing_bytes`] (hex on the wire).
    pub signature: [u8; SIG_LEN],
}

impl MboxRequest {
    /// A LIST request with a zero signature (sign [`Self::signing_bytes`], then set it).
    pub fn list(user: impl Into<String>, timestamp: u64) -> Self {
        MboxRequest {
            user: user.into(),
            timestamp,
            id: None,
            part: None,
            signature: [0; SIG_LEN],
        }
    }

    /// A FETCH request with a zero signature.
    pub fn fetch(user: impl Into<String>, timestamp: u64, id: u64, part: FetchPart) -> Self {
        MboxRequest {
            user: user.into(),
            timestamp,
            id: Some(id),
            part: Some(part),
            signature: [0; SIG_LEN],
        }
    }

    /// A DEL request with a zero signature.
    pub fn delete(user: impl Into<String>, timestamp: u64, id: u64) -> Self {
        MboxRequest {
            user: user.into(),
            timestamp,
            id: Some(id),
            part: None,
            signature: [0; SIG_LEN],
        }
    }

    /// The exact bytes the user signs for this request as command `kind`, for the
    /// user's address domain `domain`. See [`signing_bytes`].
    pub fn signing_bytes(&self, kind: MboxKind, domain: &str) -> Vec<u8> {
        signing_bytes(kind, &self.user, domain, self.timestamp, self.id, self.part)
    }
}

/// The exact bytes a user signs for a mailbox request (D4):
/// `"CMTP-MBOX/1" NUL word NUL user NUL domain NUL timestamp NUL`, then for FETCH
/// `id NUL part NUL`, for DEL `id NUL`. Numbers are canonical ASCII decimal. An absent
/// id is written `0`, an absent part `full` (as the encoder does).
pub fn signing_bytes(
    kind: MboxKind,
    user: &str,
    domain: &str,
    timestamp: u64,
    id: Option<u64>,
    part: Option<FetchPart>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + user.len() + domain.len());
    for field in [
        REQUEST_CONTEXT,
        kind.word().as_bytes(),
        user.as_bytes(),
        domain.as_bytes(),
        timestamp.to_string().as_bytes(),
    ] {
        out.extend_from_slice(field);
        out.push(0);
    }
    match kind {
        MboxKind::List => {}
        MboxKind::Fetch => {
            out.extend_from_slice(id.unwrap_or(0).to_string().as_bytes());
            out.push(0);
            out.extend_from_slice(part.unwrap_or(FetchPart::Full).as_str().as_bytes());
            out.push(0);
        }
        MboxKind::Delete => {
            out.extend_from_slice(id.unwrap_or(0).to_string().as_bytes());
            out.push(0);
        }
    }
    out
}

/// The exact bytes a server signs for a successful mailbox reply (D4):
/// `"CMTP-MBOX-REPLY/1" NUL || request_signature(64) || BLAKE2b-256(payload)(32)`.
pub fn reply_signing_bytes(request_sig: &[u8; SIG_LEN], payload_digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REPLY_CONTEXT.len() + 1 + SIG_LEN + 32);
    out.extend_from_slice(REPLY_CONTEXT);
    out.push(0);
    out.extend_from_slice(request_sig);
    out.extend_from_slice(payload_digest);
    out
}

/// A malformed LIST payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MboxError {
    /// The payload ends inside an entry or its count.
    #[error("LIST payload truncated")]
    Truncated,
    /// Bytes remain after the announced entries.
    #[error("{0} trailing bytes after LIST entries")]
    TrailingBytes(usize),
    /// A source name is longer than 255 bytes or has no NUL.
    #[error("LIST entry name too long or unterminated")]
    NameTooLong,
    /// A source name is not UTF-8.
    #[error("LIST entry name is not valid UTF-8")]
    InvalidUtf8,
    /// More entries announced than the caller allows.
    #[error("LIST announces {0} entries, more than allowed")]
    TooManyEntries(u32),
}

/// One message in a LIST payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListEntry {
    /// Message id (server-assigned, ascending).
    pub id: u64,
    /// When the server received it, Unix seconds.
    pub received: u64,
    /// Stored size in bytes (the whole message as received after `MAIL\0`).
    pub size: u64,
    /// The message's crypto system (envelope `version`).
    pub version: u32,
    /// The envelope's attachment count.
    pub attachment_count: u32,
    /// Offset in the stored message where the body ends (= length of a `head` fetch).
    pub body_end: u64,
    /// The envelope's source account, as received.
    pub src_account: String,
    /// The envelope's source domain, as received.
    pub src_domain: String,
}

/// Fixed-size part of a LIST entry.
const ENTRY_FIXED: usize = 8 + 8 + 8 + 4 + 4 + 8;

impl ListEntry {
    /// Appends this entry's wire form:
    /// `u64 id | u64 received | u64 size | u32 version | u32 attachment_count |
    /// u64 body_end | src_account NUL | src_domain NUL`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.received.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.attachment_count.to_be_bytes());
        out.extend_from_slice(&self.body_end.to_be_bytes());
        out.extend_from_slice(self.src_account.as_bytes());
        out.push(0);
        out.extend_from_slice(self.src_domain.as_bytes());
        out.push(0);
    }

    /// Decodes one entry from the start of `buf`; returns it and the bytes used.
    pub fn decode(buf: &[u8]) -> Result<(ListEntry, usize), MboxError> {
        if buf.len() < ENTRY_FIXED {
            return Err(MboxError::Truncated);
        }
        let mut pos = ENTRY_FIXED;
        let src_account = take_name(buf, &mut pos)?;
        let src_domain = take_name(buf, &mut pos)?;
        Ok((
            ListEntry {
                id: be_u64(&buf[0..]),
                received: be_u64(&buf[8..]),
                size: be_u64(&buf[16..]),
                version: be_u32(&buf[24..]),
                attachment_count: be_u32(&buf[28..]),
                body_end: be_u64(&buf[32..]),
                src_account,
                src_domain,
            },
            pos,
        ))
    }
}

fn take_name(buf: &[u8], pos: &mut usize) -> Result<String, MboxError> {
    let rest = &buf[*pos..];
    let window = &rest[..rest.len().min(MAX_PARAM + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => {
            let s = std::str::from_utf8(&rest[..n]).map_err(|_| MboxError::InvalidUtf8)?;
            *pos += n + 1;
            Ok(s.to_owned())
        }
        None if window.len() > MAX_PARAM => Err(MboxError::NameTooLong),
        None => Err(MboxError::Truncated),
    }
}

/// Appends a whole LIST payload: `u32 count` then every entry.
pub fn encode_list(entries: &[ListEntry], out: &mut Vec<u8>) {
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for e in entries.iter().take(count as usize) {
        e.encode(out);
    }
}

/// Decodes a whole LIST payload. `max_entries` bounds the count (and so the memory);
/// the payload must end exactly after the last entry.
pub fn decode_list(payload: &[u8], max_entries: u32) -> Result<Vec<ListEntry>, MboxError> {
    if payload.len() < 4 {
        return Err(MboxError::Truncated);
    }
    let count = be_u32(payload);
    if count > max_entries {
        return Err(MboxError::TooManyEntries(count));
    }
    let mut pos = 4;
    // Each entry takes at least ENTRY_FIXED + 2 bytes, so the payload bounds the
    // allocation even when the count lies.
    let cap = (count as usize).min(payload.len() / (ENTRY_FIXED + 2));
    let mut entries = Vec::with_capacity(cap);
    for _ in 0..count {
        let (e, n) = ListEntry::decode(&payload[pos..])?;
        pos += n;
        entries.push(e);
    }
    if pos != payload.len() {
        return Err(MboxError::TrailingBytes(payload.len() - pos));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_bytes_layout() {
        let r = MboxRequest::fetch("bob", 1_700_000_000, 42, FetchPart::Head);
        assert_eq!(
            r.signing_bytes(MboxKind::Fetch, "hawaii.edu"),
            b"CMTP-MBOX/1\0MBOXFETCH\0bob\0hawaii.edu\x001700000000\x0042\0head\0".to_vec()
        );
        let l = MboxRequest::list("bob", 7);
        assert_eq!(
            l.signing_bytes(MboxKind::List, "x"),
            b"CMTP-MBOX/1\0MBOXLIST\0bob\0x\x007\0".to_vec()
        );
        let d = MboxRequest::delete("bob", 7, 0);
        assert_eq!(
            d.signing_bytes(MboxKind::Delete, ""),
            b"CMTP-MBOX/1\0MBOXDEL\0bob\0\x007\x000\0".to_vec()
        );
    }

    #[test]
    fn reply_signing_layout() {
        let b = reply_signing_bytes(&[1; 64], &[2; 32]);
        assert_eq!(b.len(), 17 + 1 + 64 + 32);
        assert_eq!(&b[..18], b"CMTP-MBOX-REPLY/1\0");
        assert_eq!(&b[18..82], &[1; 64]);
        assert_eq!(&b[82..], &[2; 32]);
    }

    #[test]
    fn list_round_trip_and_errors() {
        let e = ListEntry {
            id: 1,
            received: 2,
            size: 3,
            version: 1,
            attachment_count: 0,
            body_end: 3,
            src_account: "alice".into(),
            src_domain: "hawaii.edu".into(),
        };
        let mut p = Vec::new();
        encode_list(&[e.clone(), e.clone()], &mut p);
        assert_eq!(decode_list(&p, 10).unwrap(), vec![e.clone(), e]);
        assert_eq!(decode_list(&p, 1), Err(MboxError::TooManyEntries(2)));
        assert_eq!(
            decode_list(&p[..p.len() - 1], 10),
            Err(MboxError::Truncated)
        );
        p.push(0);
        assert_eq!(decode_list(&p, 10), Err(MboxError::TrailingBytes(1)));
        assert_eq!(decode_list(&[0, 0, 0], 10), Err(MboxError::Truncated));
        assert_eq!(decode_list(&[0xff; 4], u32::MAX), Err(MboxError::Truncated));
    }
}
