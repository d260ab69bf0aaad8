//! SUBMIT (docs/protocol.md D5): a message submitted by a proven local sender, the only
//! kind a server relays to a foreign domain.
//!
//! `SUBMIT\0 user\0 timestamp\0 signature-hex\0` is followed by one message exactly as
//! after `MAIL\0`. The signature is the user's Ed25519 signature over
//! [`signing_bytes`], which binds the user, the envelope's source domain, the time and
//! the BLAKE2b-256 digest of the exact message bytes. This crate does no crypto: the
//! client hashes and signs, the server hashes while it streams and verifies.

use crate::SIG_LEN;

/// The command word.
pub const WORD: &str = "SUBMIT";
/// Domain-separation prefix of the signed bytes.
pub const CONTEXT: &[u8] = b"CMTP-SUBMIT/1";
/// A server accepts timestamps within this many seconds of its clock.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;
/// Length of the message digest in the signed bytes (BLAKE2b-256).
pub const DIGEST_LEN: usize = 32;

/// The parameters of `SUBMIT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubmitRequest {
    /// The sending account; must equal the envelope's `src_account`.
    pub user: String,
    /// Unix seconds when the submission was signed (canonical ASCII decimal on the wire).
    pub timestamp: u64,
    /// The user's Ed25519 signature over [`signing_bytes`] (128 lower-case hex digits on
    /// the wire).
    pub signature: [u8; SIG_LEN],
}

impl SubmitRequest {
    /// A request with a zero signature (sign [`SubmitRequest::signing_bytes`], then set it).
    pub fn new(user: impl Into<String>, timestamp: u64) -> Self {
        SubmitRequest {
            user: user.into(),
            timestamp,
            signature: [0; SIG_LEN],
        }
    }

    /// The bytes the user signs for this request, for the envelope's source domain
    /// `domain` and the message digest `digest`. See [`signing_bytes`].
    pub fn signing_bytes(&self, domain: &str, digest: &[u8; DIGEST_LEN]) -> Vec<u8> {
        signing_bytes(&self.user, domain, self.timestamp, digest)
    }
}

/// The exact bytes a user signs for a submission (D5):
/// `"CMTP-SUBMIT/1" NUL user NUL domain NUL timestamp NUL || digest(32)`, where `domain`
/// is the envelope's `src_domain`, `timestamp` canonical ASCII decimal and `digest` the
/// BLAKE2b-256 of every message byte after the command (envelope, log, body, each
/// attachment with its length).
pub fn signing_bytes(
    user: &str,
    domain: &str,
    timestamp: u64,
    digest: &[u8; DIGEST_LEN],
) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut out =
        Vec::with_capacity(CONTEXT.len() + user.len() + domain.len() + ts.len() + 4 + DIGEST_LEN);
    for field in [CONTEXT, user.as_bytes(), domain.as_bytes(), ts.as_bytes()] {
        out.extend_from_slice(field);
        out.push(0);
    }
    out.extend_from_slice(digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_bytes_layout() {
        let d = [0xd1; 32];
        let mut want = b"CMTP-SUBMIT/1\0alice\0example.org\x001700000000\0".to_vec();
        want.extend_from_slice(&d);
        assert_eq!(
            signing_bytes("alice", "example.org", 1_700_000_000, &d),
            want
        );
        let r = SubmitRequest::new("alice", 1_700_000_000);
        assert_eq!(r.signing_bytes("example.org", &d), want);
        // Empty fields keep their NUL: no two requests share signed bytes.
        let mut e = b"CMTP-SUBMIT/1\0\0\x000\0".to_vec();
        e.extend_from_slice(&[0; 32]);
        assert_eq!(signing_bytes("", "", 0, &[0; 32]), e);
        assert_ne!(
            signing_bytes("a", "bc", 1, &d),
            signing_bytes("ab", "c", 1, &d)
        );
    }
}
