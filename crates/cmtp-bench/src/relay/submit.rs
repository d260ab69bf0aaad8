//! How `relay` submits one message to server A: plain `MAIL` (A trusts our network) or
//! `SUBMIT` signed by a local account's key (docs/federation.md §2), each message with
//! a body that differs from every other (no layer may deduplicate them).

use crate::sys::FillRng;
use crate::wire::{self, MailHeader};
use anyhow::{Context, Result, bail};
use cmtp_crypto::KeyPair;
use cmtp_proto::{Command, SubmitRequest};
use std::path::Path;
use std::sync::Arc;

/// Largest key file read: 128 hex digits plus whitespace, or 64 raw bytes.
const MAX_KEY_FILE: u64 = 4096;

/// Reads a 64-byte Ed25519 secret key (seed ‖ public key) from `path`: raw bytes, or
/// hex as `cmtp login --remember` stores it in the profile's `secret.key`.
pub fn read_secret_key(path: &Path) -> Result<KeyPair> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut raw = zeroize::Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("read {}", path.display()))?;
    if raw.len() as u64 > MAX_KEY_FILE {
        bail!("{}: too large for a secret key", path.display());
    }
    parse_secret_key(&raw).with_context(|| format!("secret key in {}", path.display()))
}

/// Parses a secret key file's content: exactly 64 raw bytes, or 128 hex digits (with
/// optional surrounding whitespace). The public half must match the seed.
pub fn parse_secret_key(raw: &[u8]) -> Result<KeyPair> {
    let text = std::str::from_utf8(raw).ok().map(str::trim);
    let bytes = match text {
        Some(t) if t.len() == 128 => zeroize::Zeroizing::new(
            hex::decode(t).context("not hex (expected 128 hex digits or 64 raw bytes)")?,
        ),
        _ if raw.len() == 64 => zeroize::Zeroizing::new(raw.to_vec()),
        _ => bail!(
            "expected 64 raw bytes or 128 hex digits, got {} bytes",
            raw.len()
        ),
    };
    KeyPair::from_secret_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// How messages are submitted to A.
#[derive(Clone)]
pub enum Submission {
    /// Plain `MAIL` (A must list our address in `trusted_networks`).
    Mail,
    /// `SUBMIT`, signed per message with this account's key.
    Submit(Arc<KeyPair>),
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Submission::Mail => f.write_str("Mail"),
            // Never the key: only its public half.
            Submission::Submit(k) => write!(f, "Submit({})", k.public().to_hex()),
        }
    }
}

impl Submission {
    /// `mail` or `submit`, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Submission::Mail => "mail",
            Submission::Submit(_) => "submit",
        }
    }
}

/// Builds the bytes of successive messages of one connection.
pub struct MessageMaker {
    how: Submission,
    user: String,
    domain: String,
    /// Envelope, log and body: everything after the command (what SUBMIT signs).
    message: Vec<u8>,
    body_at: usize,
    seq: u64,
}

impl MessageMaker {
    /// A maker for messages of `size` body bytes from `from`@`from_domain` to
    /// `to`@`to_domain`; `seed` makes this connection's bodies differ from others'.
    pub fn new(
        how: Submission,
        from: (&str, &str),
        to: (&str, &str),
        size: usize,
        seed: u64,
    ) -> Result<Self> {
        let header = MailHeader {
            version: 1,
            body_length: size as u64,
            dest_account: to.0.into(),
            dest_domain: to.1.into(),
            src_account: from.0.into(),
            src_domain: from.1.into(),
        };
        let mut head = Vec::new();
        wire::encode_mail_head(&header, &mut head)?;
        let mail_word = Command::Mail.to_bytes();
        let mut message = head.split_off(mail_word.len());
        let body_at = message.len();
        message.resize(body_at + size, 0);
        FillRng::new(seed.wrapping_add(1)).fill(&mut message[body_at..]);
        Ok(MessageMaker {
            how,
            user: from.0.into(),
            domain: from.1.into(),
            message,
            body_at,
            seq: 0,
        })
    }

    /// Writes the next message (command included) into `out`, replacing its content.
    /// `now` is the Unix time a SUBMIT is signed at.
    pub fn next(&mut self, now: u64, out: &mut Vec<u8>) {
        self.seq += 1;
        let n = (self.message.len() - self.body_at).min(8);
        self.message[self.body_at..self.body_at + n].copy_from_slice(&self.seq.to_le_bytes()[..n]);
        out.clear();
        match &self.how {
            Submission::Mail => Command::Mail.encode(out),
            Submission::Submit(keys) => {
                let digest = cmtp_crypto::blake2b_256(&self.message);
                let signed =
                    cmtp_proto::submit::signing_bytes(&self.user, &self.domain, now, &digest);
                let mut req = SubmitRequest::new(self.user.clone(), now);
                req.signature = *keys.sign(&signed).as_bytes();
                Command::Submit(req).encode(out);
            }
        }
        out.extend_from_slice(&self.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyPair {
        KeyPair::from_seed(&[7; 32]).unwrap()
    }

    #[test]
    fn secret_key_raw_or_hex() {
        let k = keys();
        let raw = k.secret_bytes();
        assert_eq!(parse_secret_key(&raw[..]).unwrap().public(), k.public());
        let hex = format!("{}\n", hex::encode(&raw[..]));
        assert_eq!(
            parse_secret_key(hex.as_bytes()).unwrap().public(),
            k.public()
        );
        assert!(parse_secret_key(&raw[..63]).is_err());
        assert!(parse_secret_key(b"zz").is_err());
        let mut wrong = raw.to_vec();
        wrong[40] ^= 1; // public half does not match the seed
        assert!(parse_secret_key(&wrong).is_err());
        let bad_hex = "g".repeat(128);
        assert!(parse_secret_key(bad_hex.as_bytes()).is_err());
    }

    /// Decodes `SUBMIT\0…` as the server does and checks the signature with the
    /// public key over the bytes that follow the command.
    #[test]
    fn submit_is_signed_over_the_exact_message() {
        let k = Arc::new(keys());
        let mut m = MessageMaker::new(
            Submission::Submit(k.clone()),
            ("alice", "a.test"),
            ("bob", "b.test"),
            100,
            3,
        )
        .unwrap();
        let mut first = Vec::new();
        m.next(1_700_000_000, &mut first);
        let mut second = Vec::new();
        m.next(1_700_000_001, &mut second);
        for (w, ts) in [(&first, 1_700_000_000), (&second, 1_700_000_001)] {
            let (cmd, used) = Command::parse(w).unwrap().expect("a whole command");
            let Command::Submit(req) = cmd else {
                panic!("not SUBMIT: {cmd:?}")
            };
            assert_eq!((req.user.as_str(), req.timestamp), ("alice", ts));
            let digest = cmtp_crypto::blake2b_256(&w[used..]);
            let signed = req.signing_bytes("a.test", &digest);
            let sig = cmtp_crypto::Signature::from_bytes(&req.signature).unwrap();
            k.public().verify(&signed, &sig).unwrap();
        }
        // Bodies differ from one message to the next.
        assert_ne!(first[first.len() - 100..], second[second.len() - 100..]);
    }

    #[test]
    fn plain_mail_is_the_mail_command() {
        let mut m = MessageMaker::new(
            Submission::Mail,
            ("app", "a.test"),
            ("bob", "b.test"),
            10,
            0,
        )
        .unwrap();
        let mut w = Vec::new();
        m.next(0, &mut w);
        assert!(w.starts_with(b"MAIL\0"));
        assert_eq!(Submission::Mail.name(), "mail");
    }
}
