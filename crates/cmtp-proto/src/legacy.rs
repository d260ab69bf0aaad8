//! The 2016 C server's dialect (spec §10, docs/protocol.md §14): its unsigned text
//! answers, its garbled "no such key", its bare LOGIN layout and the nonce it reads
//! after a MAIL.
//!
//! One encoder beside each decoder, in the shape of [`crate::reply`]: the encoders
//! write exactly the bytes that server sends (test peers replay it with them), the
//! decoders are incremental (`Ok(None)` = need more bytes) and bounded. Recorded
//! transcripts of that server are in `testdata/vectors/transcripts-2016`.

use crate::reply::{self, Decoded, KeyReply, LEGACY_OHAI, LoginReply, ReplyError};
use crate::{SIG_LEN, be_u32};

/// Its greeting, NUL included.
pub const GREETING: &[u8] = b"Welcome to CMTP version < 1\n\0";
/// Its answer to NOOP, NUL included (unsigned).
pub const NOOP_ANSWER: &[u8] = b"O_O\n\0";
/// Its answer to OBAI, NUL included (unsigned); it closes the connection after it.
pub const BYE: &[u8] = b"Good bye\n\0";
/// Length of the proof-of-work nonce it reads after every MAIL (nobody checks it).
pub const NONCE_LEN: usize = 64;
/// Length of its xzibit file (version 1 layout).
pub const XZIBIT_LEN: usize = 156;
/// Length of its LOGIN reply: the bare xzibit, then its signature.
pub const LOGIN_LEN: usize = XZIBIT_LEN + SIG_LEN;
/// What the signature of its "no such key" reply covers: the text and its NUL.
pub const KEY_NOT_AVAILABLE_SIGNED: &[u8] = b"KEYNOTAVAILABLE\0";

/// Offsets in the 102-byte "no such key" reply.
const STACK_AT: usize = 4;
const STACK_LEN: usize = 12;
const KEYN_AT: usize = STACK_AT + STACK_LEN;
const KEYN: &[u8; 4] = b"KEYN";
const NA_SIG_AT: usize = KEYN_AT + KEYN.len();
const NA_ZEROS_AT: usize = NA_SIG_AT + SIG_LEN;

// ---------------------------------------------------------------- fixed texts

/// Appends its greeting (read with [`reply::decode_greeting`], which classifies it as
/// [`reply::GreetingKind::Legacy2016`]).
pub fn encode_greeting(out: &mut Vec<u8>) {
    out.extend_from_slice(GREETING);
}

/// Appends its answer to OHAI, `HAI!!! :3\n\0` (read with [`reply::decode_ohai`]).
pub fn encode_ohai(out: &mut Vec<u8>) {
    out.extend_from_slice(LEGACY_OHAI.as_bytes());
    out.push(0);
}

/// Appends its answer to NOOP.
pub fn encode_noop_answer(out: &mut Vec<u8>) {
    out.extend_from_slice(NOOP_ANSWER);
}

/// Reads its answer to NOOP; anything else fails as soon as it differs.
pub fn decode_noop_answer(buf: &[u8]) -> Decoded<()> {
    decode_fixed(buf, NOOP_ANSWER)
}

/// Appends its answer to OBAI.
pub fn encode_bye(out: &mut Vec<u8>) {
    out.extend_from_slice(BYE);
}

/// Reads its answer to OBAI; anything else fails as soon as it differs.
pub fn decode_bye(buf: &[u8]) -> Decoded<()> {
    decode_fixed(buf, BYE)
}

/// A fixed answer, refused on its first differing byte (so a wrong answer never waits
/// for more bytes).
fn decode_fixed(buf: &[u8], want: &[u8]) -> Decoded<()> {
    let n = buf.len().min(want.len());
    if buf[..n] != want[..n] {
        return Err(ReplyError::UnexpectedText(
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    Ok((n == want.len()).then_some(((), n)))
}

// ---------------------------------------------------------------- MAIL

/// Appends the nonce it reads after each MAIL (zeros; nobody checks it, and its own
/// client never sent it). A CMTP/1 server reads these bytes as 64 empty commands.
pub fn encode_mail_nonce(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; NONCE_LEN]);
}

// ---------------------------------------------------------------- KEYREQUEST

/// Its answer to KEYREQUEST for an unknown user: 102 bytes, version 1, 12 bytes of
/// uninitialised stack, `KEYN` (the start of `KEYNOTAVAILABLE\0` copied 12 bytes too
/// far), the signature over [`KEY_NOT_AVAILABLE_SIGNED`] written over the rest of
/// the text, then 18 zero bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyNotAvailable {
    /// The uninitialised bytes at offsets 4..16 (they differ per process).
    pub stack: [u8; STACK_LEN],
    /// Server signature over [`KEY_NOT_AVAILABLE_SIGNED`].
    pub sig: [u8; SIG_LEN],
}

impl KeyNotAvailable {
    /// The bytes the signature covers: `KEYNOTAVAILABLE\0` (the NUL included).
    pub fn signed_bytes(&self) -> &'static [u8] {
        KEY_NOT_AVAILABLE_SIGNED
    }
}

/// Its answer to KEYREQUEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyAnswer {
    /// A well-formed reply: a key (its normal answer) or a version-0 message.
    Reply(KeyReply),
    /// Its garbled "no such key".
    NotAvailable(KeyNotAvailable),
}

impl KeyAnswer {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        match self {
            KeyAnswer::Reply(r) => r.signed_bytes(),
            KeyAnswer::NotAvailable(n) => n.signed_bytes(),
        }
    }
}

/// Appends its garbled "no such key" reply (102 bytes).
pub fn encode_key_not_available(r: &KeyNotAvailable, out: &mut Vec<u8>) {
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&r.stack);
    out.extend_from_slice(KEYN);
    out.extend_from_slice(&r.sig);
    out.extend_from_slice(&[0u8; reply::KEY_REPLY_LEN - NA_ZEROS_AT]);
}

/// Appends any of its KEYREQUEST answers.
pub fn encode_key_answer(a: &KeyAnswer, out: &mut Vec<u8>) {
    match a {
        KeyAnswer::Reply(KeyReply::Key { version, key, sig }) => {
            reply::encode_key(*version, key, sig, out)
        }
        KeyAnswer::Reply(KeyReply::V0(v)) => reply::encode_v0(&v.text, &v.sig, out),
        KeyAnswer::NotAvailable(n) => encode_key_not_available(n, out),
    }
}

/// Reads its answer to KEYREQUEST. A version-1 reply is read whole (102 bytes); it is
/// the garbled "no such key" when `KEYN` sits at offset 16 and its last 18 bytes are
/// zero (in a key reply those are the end of a signature: never all zero in practice).
/// Anything else is read as [`reply::decode_key_reply`] does.
pub fn decode_key_answer(buf: &[u8]) -> Decoded<KeyAnswer> {
    if buf.len() < 4 || be_u32(buf) != 1 {
        return Ok(reply::decode_key_reply(buf)?.map(|(r, n)| (KeyAnswer::Reply(r), n)));
    }
    let Some(whole) = buf.get(..reply::KEY_REPLY_LEN) else {
        return Ok(None);
    };
    let garbled =
        &whole[KEYN_AT..NA_SIG_AT] == KEYN && whole[NA_ZEROS_AT..].iter().all(|&b| b == 0);
    if !garbled {
        return Ok(reply::decode_key_reply(whole)?.map(|(r, n)| (KeyAnswer::Reply(r), n)));
    }
    let mut stack = [0u8; STACK_LEN];
    stack.copy_from_slice(&whole[STACK_AT..KEYN_AT]);
    let mut sig = [0u8; SIG_LEN];
    sig.copy_from_slice(&whole[NA_SIG_AT..NA_ZEROS_AT]);
    Ok(Some((
        KeyAnswer::NotAvailable(KeyNotAvailable { stack, sig }),
        whole.len(),
    )))
}

// ---------------------------------------------------------------- LOGIN

/// Its answer to LOGIN: the bare 156-byte xzibit file and its signature, without the
/// outer version and length of CMTP/1. (An unknown user gets no answer at all.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XzibitReply {
    /// The xzibit file as stored (version 1 layout, [`XZIBIT_LEN`] bytes).
    pub xzibit: Vec<u8>,
    /// Server signature over the xzibit.
    pub sig: [u8; SIG_LEN],
}

impl XzibitReply {
    /// The bytes the signature covers: the xzibit.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.xzibit
    }
}

/// Appends its LOGIN answer: the xzibit, then the signature (220 bytes).
pub fn encode_login(xzibit: &[u8; XZIBIT_LEN], sig: &[u8; SIG_LEN], out: &mut Vec<u8>) {
    out.extend_from_slice(xzibit);
    out.extend_from_slice(sig);
}

/// Reads its LOGIN layout: exactly [`LOGIN_LEN`] bytes, xzibit then signature; the
/// xzibit starts with its version, 1.
pub fn decode_login(buf: &[u8]) -> Decoded<XzibitReply> {
    if buf.len() >= 4 && be_u32(buf) != 1 {
        return Err(ReplyError::UnsupportedVersion(be_u32(buf)));
    }
    if buf.len() < LOGIN_LEN {
        return Ok(None);
    }
    let mut sig = [0u8; SIG_LEN];
    sig.copy_from_slice(&buf[XZIBIT_LEN..LOGIN_LEN]);
    Ok(Some((
        XzibitReply {
            xzibit: buf[..XZIBIT_LEN].to_vec(),
            sig,
        },
        LOGIN_LEN,
    )))
}

/// Reads an answer to LOGIN from either server, as [`LoginReply`]. With `greeted_2016`
/// (the server greeted as the 2016 one) a reply that does not start with version 0 is
/// its layout; otherwise the CMTP/1 layout is read, and an announced xzibit length
/// over `max_len` is taken for the 2016 layout (there the xzibit's version 1 is
/// followed by its salt, which reads as a huge length).
pub fn decode_login_reply_any(buf: &[u8], max_len: u32, greeted_2016: bool) -> Decoded<LoginReply> {
    let version0 = buf.get(..4) == Some(&[0; 4][..]);
    if !greeted_2016 || version0 {
        match reply::decode_login_reply(buf, max_len) {
            Err(ReplyError::LengthTooLarge { .. }) => {}
            r => return r,
        }
    }
    Ok(decode_login(buf)?.map(|(r, n)| {
        let x = LoginReply::Xzibit {
            version: 1,
            xzibit: r.xzibit,
            sig: r.sig,
        };
        (x, n)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::KEYNOTAVAILABLE;
    use crate::reply::tests::all_prefixes_need_more;

    fn sig() -> [u8; SIG_LEN] {
        std::array::from_fn(|i| (i % 5) as u8)
    }

    #[test]
    fn fixed_texts_round_trip_and_fail_early() {
        let mut b = Vec::new();
        encode_noop_answer(&mut b);
        all_prefixes_need_more(&b, decode_noop_answer);
        assert_eq!(decode_noop_answer(&b), Ok(Some(((), 5))));
        assert!(decode_noop_answer(b"O_X").is_err());
        assert!(decode_noop_answer(b"SUCCESS\0").is_err());
        let mut b = Vec::new();
        encode_bye(&mut b);
        all_prefixes_need_more(&b, decode_bye);
        assert_eq!(decode_bye(&b), Ok(Some(((), 10))));
        assert!(decode_bye(b"Good night").is_err());
        let mut g = Vec::new();
        encode_greeting(&mut g);
        let (g, n) = reply::decode_greeting(&g).unwrap().unwrap();
        assert_eq!(
            (g.kind, n),
            (reply::GreetingKind::Legacy2016, GREETING.len())
        );
        let mut o = Vec::new();
        encode_ohai(&mut o);
        assert_eq!(
            reply::decode_ohai(&o),
            Ok(Some((reply::OhaiAnswer::Legacy2016, o.len())))
        );
        let mut z = Vec::new();
        encode_mail_nonce(&mut z);
        assert_eq!(z, vec![0u8; NONCE_LEN]);
    }

    #[test]
    fn key_not_available_round_trip() {
        let na = KeyNotAvailable {
            stack: [0xAA; STACK_LEN],
            sig: sig(),
        };
        let mut b = Vec::new();
        encode_key_not_available(&na, &mut b);
        assert_eq!(b.len(), reply::KEY_REPLY_LEN);
        assert_eq!(&b[16..20], b"KEYN");
        all_prefixes_need_more(&b, decode_key_answer);
        let a = KeyAnswer::NotAvailable(na);
        assert_eq!(decode_key_answer(&b), Ok(Some((a.clone(), 102))));
        assert_eq!(a.signed_bytes(), b"KEYNOTAVAILABLE\0");
        // The bytes after it stay for the next reply.
        b.extend_from_slice(NOOP_ANSWER);
        assert_eq!(decode_key_answer(&b), Ok(Some((a, 102))));
    }

    #[test]
    fn key_replies_pass_through() {
        for a in [
            KeyAnswer::Reply(KeyReply::Key {
                version: 1,
                key: [7; 32],
                sig: sig(),
            }),
            KeyAnswer::Reply(KeyReply::V0(reply::V0Reply {
                text: KEYNOTAVAILABLE.into(),
                sig: sig(),
            })),
        ] {
            let mut b = Vec::new();
            encode_key_answer(&a, &mut b);
            all_prefixes_need_more(&b, decode_key_answer);
            assert_eq!(decode_key_answer(&b), Ok(Some((a, b.len()))));
        }
        // A key whose bytes 12..16 happen to read KEYN is still a key: its signature
        // does not end in 18 zero bytes.
        let mut key = [7u8; 32];
        key[12..16].copy_from_slice(b"KEYN");
        let mut b = Vec::new();
        reply::encode_key(1, &key, &[9; SIG_LEN], &mut b);
        assert!(matches!(
            decode_key_answer(&b),
            Ok(Some((KeyAnswer::Reply(KeyReply::Key { .. }), 102)))
        ));
        // Neither a key nor the garbled text: an error, not a key.
        let mut bad = b.clone();
        bad[36] = 1;
        assert_eq!(decode_key_answer(&bad), Err(ReplyError::MissingNul(36)));
        assert_eq!(
            decode_key_answer(&[0, 0, 0, 2]),
            Err(ReplyError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn login_round_trip_and_either_layout() {
        let mut x = [5u8; XZIBIT_LEN];
        x[..4].copy_from_slice(&1u32.to_be_bytes());
        let mut b = Vec::new();
        encode_login(&x, &sig(), &mut b);
        assert_eq!(b.len(), LOGIN_LEN);
        all_prefixes_need_more(&b, decode_login);
        let (r, n) = decode_login(&b).unwrap().unwrap();
        assert_eq!((n, &r.xzibit[..], r.sig), (LOGIN_LEN, &x[..], sig()));
        assert_eq!(r.signed_bytes(), &x[..]);
        assert_eq!(
            decode_login(&[0, 0, 0, 3]),
            Err(ReplyError::UnsupportedVersion(3))
        );
        let want = LoginReply::Xzibit {
            version: 1,
            xzibit: x.to_vec(),
            sig: sig(),
        };
        for greeted in [true, false] {
            all_prefixes_need_more(&b, |b| decode_login_reply_any(b, 4096, greeted));
            assert_eq!(
                decode_login_reply_any(&b, 4096, greeted),
                Ok(Some((want.clone(), LOGIN_LEN)))
            );
        }
        // The CMTP/1 layout, from a server that greeted as CMTP/1.
        let mut c = Vec::new();
        reply::encode_login(1, &x, &sig(), &mut c);
        assert_eq!(
            decode_login_reply_any(&c, 4096, false),
            Ok(Some((want.clone(), c.len())))
        );
        let mut v0 = Vec::new();
        reply::encode_v0(reply::FAILURE, &sig(), &mut v0);
        for greeted in [true, false] {
            assert!(matches!(
                decode_login_reply_any(&v0, 4096, greeted),
                Ok(Some((LoginReply::V0(_), _)))
            ));
        }
    }
}
