//! The OPAQUE login extension (docs/protocol.md D8): its four commands, their replies,
//! and the exact bytes each side signs. Sans-IO like the rest of the crate: the OPAQUE
//! messages are opaque byte strings here (cmtp-crypto makes and checks them).
//!
//! ```text
//! OPAQUE1\0    user\0                          u16 len | KE1
//! OPAQUE2\0                                    u16 len | KE3
//! OPAQUEREG1\0 user\0 timestamp\0 sig-hex\0    u16 len | registration request
//! OPAQUEREG2\0 user\0 timestamp\0 sig-hex\0    u16 len | record  u16 len | sealed xzibit
//! ```
//! Lengths are big-endian and at most [`MAX_BLOB`]; a larger one is a framing error as
//! soon as it is visible.

use crate::params::{CommandError, Params, need};
use crate::reply::{Decoded, ReplyError, StatusReply, decode_general_or_v0};
use crate::text::{parse_hex, push_hex};
use crate::{SIG_LEN, be_u32};

/// The capability word a server names in its OHAI answer (D6).
pub const CAPABILITY: &str = "OPAQUE";
/// Domain-separation prefix of every byte string signed for this extension.
pub const CONTEXT: &[u8] = b"CMTP-OPAQUE/1";
/// Largest OPAQUE message or sealed xzibit in a command.
pub const MAX_BLOB: usize = 1024;
/// Largest payload of an OPAQUE reply a client accepts.
pub const MAX_REPLY_PAYLOAD: u32 = 4096;

/// Word of the first login message.
pub const WORD_LOGIN1: &str = "OPAQUE1";
/// Word of the second login message.
pub const WORD_LOGIN2: &str = "OPAQUE2";
/// Word of the first registration message.
pub const WORD_REG1: &str = "OPAQUEREG1";
/// Word of the second registration message.
pub const WORD_REG2: &str = "OPAQUEREG2";

/// The user-signed part of a registration command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegAuth {
    /// The account registering (its current key signs).
    pub user: String,
    /// Unix seconds when signed (canonical decimal on the wire).
    pub timestamp: u64,
    /// The user's Ed25519 signature over [`register_signing_bytes`] (128 hex digits).
    pub signature: [u8; SIG_LEN],
}

/// One command of the extension.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpaqueCommand {
    /// `OPAQUE1\0user\0 u16 len | KE1`: starts a login.
    Login1 {
        /// The account.
        user: String,
        /// KE1 (`CredentialRequest`).
        ke1: Vec<u8>,
    },
    /// `OPAQUE2\0 u16 len | KE3`: finishes the login started last on this connection.
    Login2 {
        /// KE3 (`CredentialFinalization`).
        ke3: Vec<u8>,
    },
    /// `OPAQUEREG1\0user\0timestamp\0sig-hex\0 u16 len | request`.
    Register1 {
        /// Who asks, signed.
        auth: RegAuth,
        /// The `RegistrationRequest`.
        request: Vec<u8>,
    },
    /// `OPAQUEREG2\0user\0timestamp\0sig-hex\0 u16 len | record u16 len | sealed`.
    Register2 {
        /// Who registers, signed.
        auth: RegAuth,
        /// The `RegistrationUpload` the server stores.
        record: Vec<u8>,
        /// A new xzibit sealed to the server's key (`crypto_box_seal`), or empty to keep
        /// the stored one.
        sealed_xzibit: Vec<u8>,
    },
}

impl OpaqueCommand {
    /// The command word.
    pub fn word(&self) -> &'static str {
        match self {
            OpaqueCommand::Login1 { .. } => WORD_LOGIN1,
            OpaqueCommand::Login2 { .. } => WORD_LOGIN2,
            OpaqueCommand::Register1 { .. } => WORD_REG1,
            OpaqueCommand::Register2 { .. } => WORD_REG2,
        }
    }

    /// Appends the wire form. Blobs longer than [`MAX_BLOB`] are the caller's error
    /// (the server would refuse them); they are written truncated to it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.word().as_bytes());
        out.push(0);
        match self {
            OpaqueCommand::Login1 { user, ke1 } => {
                param(out, user.as_bytes());
                blob(out, ke1);
            }
            OpaqueCommand::Login2 { ke3 } => blob(out, ke3),
            OpaqueCommand::Register1 { auth, request } => {
                encode_auth(auth, out);
                blob(out, request);
            }
            OpaqueCommand::Register2 {
                auth,
                record,
                sealed_xzibit,
            } => {
                encode_auth(auth, out);
                blob(out, record);
                blob(out, sealed_xzibit);
            }
        }
    }
}

fn param(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b);
    out.push(0);
}

fn blob(out: &mut Vec<u8>, b: &[u8]) {
    let b = &b[..b.len().min(MAX_BLOB)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn encode_auth(a: &RegAuth, out: &mut Vec<u8>) {
    param(out, a.user.as_bytes());
    param(out, a.timestamp.to_string().as_bytes());
    push_hex(&a.signature, out);
    out.push(0);
}

/// Reads a `u16 len | bytes` blob at the parser's position; Ok(None) = need more.
fn take_blob(p: &mut Params<'_>) -> Result<Option<Vec<u8>>, CommandError> {
    let rest = p.rest();
    if rest.len() < 2 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    if len > MAX_BLOB {
        return Err(CommandError::InvalidParam("length"));
    }
    if rest.len() < 2 + len {
        return Ok(None);
    }
    let b = rest[2..2 + len].to_vec();
    p.advance(2 + len);
    Ok(Some(b))
}

fn parse_auth(p: &mut Params<'_>) -> Result<Option<RegAuth>, CommandError> {
    let user = need!(p.string());
    let timestamp = need!(p.number("timestamp"));
    let raw = need!(p.raw());
    let signature = parse_hex::<64>(raw).ok_or(CommandError::InvalidParam("signature"))?;
    Ok(Some(RegAuth {
        user,
        timestamp,
        signature,
    }))
}

/// Parses the parameters of the extension command whose word is `word` (one of the
/// four `WORD_*`; any other is reported unknown).
pub(crate) fn parse(
    word: &[u8],
    p: &mut Params<'_>,
) -> Result<Option<OpaqueCommand>, CommandError> {
    match word {
        b"OPAQUE1" => (|| {
            let user = need!(p.string());
            let ke1 = need!(take_blob(p));
            Ok(Some(OpaqueCommand::Login1 { user, ke1 }))
        })(),
        b"OPAQUE2" => (|| {
            Ok(Some(OpaqueCommand::Login2 {
                ke3: need!(take_blob(p)),
            }))
        })(),
        b"OPAQUEREG1" => (|| {
            let auth = need!(parse_auth(p));
            let request = need!(take_blob(p));
            Ok(Some(OpaqueCommand::Register1 { auth, request }))
        })(),
        b"OPAQUEREG2" => (|| {
            let auth = need!(parse_auth(p));
            let record = need!(take_blob(p));
            let sealed_xzibit = need!(take_blob(p));
            Ok(Some(OpaqueCommand::Register2 {
                auth,
                record,
                sealed_xzibit,
            }))
        })(),
        other => Err(CommandError::UnknownCommand(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

fn fields(word: &str, strs: &[&[u8]], blobs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + blobs.iter().map(|b| b.len() + 2).sum::<usize>());
    param(&mut out, CONTEXT);
    param(&mut out, word.as_bytes());
    for s in strs {
        param(&mut out, s);
    }
    for b in blobs {
        out.extend_from_slice(&(b.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The bytes a user signs for OPAQUEREG1/OPAQUEREG2 (D8): `"CMTP-OPAQUE/1" NUL word NUL
/// user NUL domain NUL timestamp NUL`, then each blob of the command as on the wire
/// (`u16 len | bytes`). `domain` is the server's primary domain, as in D4.
pub fn register_signing_bytes(
    word: &str,
    auth: &RegAuth,
    domain: &str,
    blobs: &[&[u8]],
) -> Vec<u8> {
    fields(
        word,
        &[
            auth.user.as_bytes(),
            domain.as_bytes(),
            auth.timestamp.to_string().as_bytes(),
        ],
        blobs,
    )
}

impl OpaqueCommand {
    /// For a registration command, its signed part and the bytes its signature covers.
    pub fn register_signing(&self, domain: &str) -> Option<(&RegAuth, Vec<u8>)> {
        match self {
            OpaqueCommand::Register1 { auth, request } => Some((
                auth,
                register_signing_bytes(WORD_REG1, auth, domain, &[request]),
            )),
            OpaqueCommand::Register2 {
                auth,
                record,
                sealed_xzibit,
            } => Some((
                auth,
                register_signing_bytes(WORD_REG2, auth, domain, &[record, sealed_xzibit]),
            )),
            _ => None,
        }
    }
}

/// The bytes the server signs answering OPAQUE1: `"CMTP-OPAQUE/1" NUL "OPAQUE1" NUL user
/// NUL`, `u16 len | KE1`, `u16 len | KE2` — bound to the request, so a KE2 cannot be
/// replayed to another login.
pub fn login1_reply_signing_bytes(user: &str, ke1: &[u8], ke2: &[u8]) -> Vec<u8> {
    fields(WORD_LOGIN1, &[user.as_bytes()], &[ke1, ke2])
}

/// The bytes the server signs answering OPAQUE2: `"CMTP-OPAQUE/1" NUL "OPAQUE2" NUL`,
/// `u16 len | KE3`, `u16 len | sealed xzibit`.
pub fn login2_reply_signing_bytes(ke3: &[u8], sealed: &[u8]) -> Vec<u8> {
    fields(WORD_LOGIN2, &[], &[ke3, sealed])
}

/// The bytes the server signs answering OPAQUEREG1: `"CMTP-OPAQUE/1" NUL "OPAQUEREG1"
/// NUL user NUL`, `u16 len | request`, `u16 len | response`.
pub fn reg1_reply_signing_bytes(user: &str, request: &[u8], response: &[u8]) -> Vec<u8> {
    fields(WORD_REG1, &[user.as_bytes()], &[request, response])
}

/// Appends a successful extension reply: `u32 1 | u32 len | payload | sig(64)` (the
/// LOGIN reply's layout; `sig` signs the bytes of the matching `*_signing_bytes`).
pub fn encode_payload_reply(payload: &[u8], sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    crate::reply::encode_login(1, payload, sig, out);
}

/// An answer to an extension command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpaqueReply {
    /// `u32 1 | u32 len | payload | sig`.
    Payload {
        /// KE2, the sealed xzibit, or the registration response.
        payload: Vec<u8>,
        /// Server signature over the command's `*_reply_signing_bytes`.
        sig: [u8; SIG_LEN],
    },
    /// General SUCCESS/FAILURE (FAILURE: over a rate limit) or version-0 AUTHFAILURE.
    Status(StatusReply),
}

/// Reads an answer to an extension command; a payload longer than `max_len` is refused
/// as soon as its length is visible.
pub fn decode_reply(buf: &[u8], max_len: u32) -> Decoded<OpaqueReply> {
    if buf.len() < 4 {
        // A general reply starts with a letter; a versioned one with 0x00.
        return match buf.first() {
            Some(&b) if b != 0 => {
                Ok(decode_general_or_v0(buf)?.map(|(r, n)| (OpaqueReply::Status(r), n)))
            }
            _ => Ok(None),
        };
    }
    match (buf[0], be_u32(buf)) {
        (0, 0) | (1..=255, _) => {
            Ok(decode_general_or_v0(buf)?.map(|(r, n)| (OpaqueReply::Status(r), n)))
        }
        (0, 1) => Ok(
            crate::reply::decode_login_reply(buf, max_len)?.and_then(|(r, n)| match r {
                crate::reply::LoginReply::Xzibit { xzibit, sig, .. } => Some((
                    OpaqueReply::Payload {
                        payload: xzibit,
                        sig,
                    },
                    n,
                )),
                crate::reply::LoginReply::V0(_) => None,
            }),
        ),
        (_, v) => Err(ReplyError::UnsupportedVersion(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn auth() -> RegAuth {
        RegAuth {
            user: "alice".into(),
            timestamp: 1_700_000_000,
            signature: [0xab; 64],
        }
    }

    fn all() -> Vec<OpaqueCommand> {
        vec![
            OpaqueCommand::Login1 {
                user: "alice".into(),
                ke1: vec![1; 96],
            },
            OpaqueCommand::Login2 { ke3: vec![0; 64] },
            OpaqueCommand::Register1 {
                auth: auth(),
                request: vec![3; 32],
            },
            OpaqueCommand::Register2 {
                auth: auth(),
                record: vec![0; 192],
                sealed_xzibit: vec![],
            },
        ]
    }

    #[test]
    fn commands_round_trip_in_any_split() {
        for c in all() {
            let mut wire = Vec::new();
            Command::Opaque(c.clone()).encode(&mut wire);
            for cut in 0..wire.len() {
                assert_eq!(
                    Command::parse(&wire[..cut]).unwrap(),
                    None,
                    "{c:?} cut {cut}"
                );
            }
            let mut two = wire.clone();
            two.extend_from_slice(b"NOOP\0");
            assert_eq!(
                Command::parse(&two).unwrap(),
                Some((Command::Opaque(c), wire.len()))
            );
        }
    }

    #[test]
    fn oversized_blob_is_refused_once_its_length_is_visible() {
        let mut wire = b"OPAQUE1\0alice\0".to_vec();
        wire.extend_from_slice(&((MAX_BLOB + 1) as u16).to_be_bytes());
        assert_eq!(
            Command::parse(&wire),
            Err(CommandError::InvalidParam("length"))
        );
        assert_eq!(
            Command::parse(b"OPAQUEREG1\0alice\0x\0"),
            Err(CommandError::InvalidParam("timestamp"))
        );
    }

    #[test]
    fn replies_decode_payload_and_status() {
        let mut wire = Vec::new();
        encode_payload_reply(&[9; 320], &[7; 64], &mut wire);
        for cut in 0..wire.len() {
            assert_eq!(decode_reply(&wire[..cut], MAX_REPLY_PAYLOAD).unwrap(), None);
        }
        let (r, n) = decode_reply(&wire, MAX_REPLY_PAYLOAD).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert_eq!(
            r,
            OpaqueReply::Payload {
                payload: vec![9; 320],
                sig: [7; 64]
            }
        );
        assert!(decode_reply(&wire, 100).is_err());

        let mut v0 = Vec::new();
        crate::reply::encode_v0(crate::reply::AUTHFAILURE, &[1; 64], &mut v0);
        let (r, _) = decode_reply(&v0, MAX_REPLY_PAYLOAD).unwrap().unwrap();
        assert!(matches!(r, OpaqueReply::Status(StatusReply::V0(v)) if v.text == "AUTHFAILURE"));
        let mut g = Vec::new();
        crate::reply::encode_general(false, &[1; 64], &mut g);
        let (r, _) = decode_reply(&g, MAX_REPLY_PAYLOAD).unwrap().unwrap();
        assert!(matches!(r, OpaqueReply::Status(StatusReply::General(_))));
        assert!(decode_reply(&[0, 0, 0, 9], MAX_REPLY_PAYLOAD).is_err());
    }

    #[test]
    fn signing_bytes_separate_words_and_fields() {
        let a = register_signing_bytes(WORD_REG1, &auth(), "example.org", &[b"x"]);
        let b = register_signing_bytes(WORD_REG2, &auth(), "example.org", &[b"x"]);
        let c = register_signing_bytes(WORD_REG1, &auth(), "example.net", &[b"x"]);
        assert!(a != b && a != c && b != c);
        assert!(a.starts_with(b"CMTP-OPAQUE/1\0OPAQUEREG1\0alice\0example.org\x001700000000\0"));
        assert!(
            login1_reply_signing_bytes("a", b"1", b"2")
                != reg1_reply_signing_bytes("a", b"1", b"2")
        );
    }
}
