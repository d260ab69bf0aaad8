//! Commands, client to server (spec §2, §5; docs/protocol.md D1, D2, D4).
//!
//! [`Command::parse`] is incremental: it looks at the bytes received so far and
//! returns `Ok(None)` when it needs more, `Ok(Some((command, used)))` when one command
//! is complete, or an error as soon as the bytes present prove the input malformed
//! (an 11-byte word, a 256-byte parameter, a byte that cannot be in a word...). The
//! parse is a left-to-right scan, so feeding a stream in any split gives the same
//! commands and the same error as feeding it whole.

use crate::limits::MAX_COMMAND_WORD;
use crate::mbox::{FetchPart, MboxKind, MboxRequest};
use crate::opaque::OpaqueCommand;
pub use crate::params::CommandError;
use crate::params::{Params, need};
use crate::submit::SubmitRequest;
use crate::text::{parse_hex, push_hex};

/// SMTP verbs recognised when a word ends with a space, CR or LF (D1).
pub const SMTP_VERBS: &[&str] = &[
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "VRFY", "EXPN", "HELP", "NOOP", "QUIT", "TURN",
    "ETRN", "AUTH", "STARTTLS", "BDAT", "SEND", "SOML", "SAML",
];

/// One client command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// A lone NUL where a command word was expected: ignored without reply (spec §2).
    Empty,
    /// `OHAI\0`
    Ohai,
    /// `NOOP\0`
    Noop,
    /// `KEYREQUEST\0user\0domain\0`; with an empty user the request ends after the
    /// user's NUL and `domain` is empty (D2).
    KeyRequest {
        /// Account whose key is asked; empty = the server's own key.
        user: String,
        /// Domain of the account; empty = this server's domain.
        domain: String,
    },
    /// `LOGIN\0user\0`
    Login {
        /// Account whose xzibit is asked.
        user: String,
    },
    /// `MAIL\0`; a message (see [`crate::message`]) follows immediately.
    Mail,
    /// `SUBMIT\0user\0timestamp\0sig-hex\0`, then a message exactly as after `MAIL`
    /// (docs/protocol.md D5): a signed submission, which a server may relay.
    Submit(SubmitRequest),
    /// `OBAI\0`
    Obai,
    /// `HELP\0`
    Help,
    /// `TLSSTART\0` (docs/protocol.md D7): after the server's signed SUCCESS the
    /// connection becomes TLS 1.3 and the CMTP session starts again inside it. Offered
    /// as the capability [`crate::reply::CAP_TLS`].
    TlsStart,
    /// `MBOXLIST\0user\0timestamp\0sig-hex\0`
    MboxList(MboxRequest),
    /// `MBOXFETCH\0user\0timestamp\0id\0part\0sig-hex\0`
    MboxFetch(MboxRequest),
    /// `MBOXDEL\0user\0timestamp\0id\0sig-hex\0`
    MboxDelete(MboxRequest),
    /// An SMTP verb (upper-cased) ended by a space, CR or LF (D1). Only the verb and
    /// its terminator are consumed: the server refuses and closes.
    Smtp(String),
    /// A command of the OPAQUE login extension (docs/protocol.md D8).
    Opaque(OpaqueCommand),
}

/// How the command word ended.
enum WordEnd {
    Nul,
    Smtp,
}

/// Scans the command word. Ok(None) = need more.
fn scan_word(buf: &[u8]) -> Result<Option<(&[u8], WordEnd)>, CommandError> {
    for (i, &b) in buf.iter().enumerate().take(MAX_COMMAND_WORD + 1) {
        match b {
            0 => return Ok(Some((&buf[..i], WordEnd::Nul))),
            b' ' | b'\r' | b'\n' => return Ok(Some((&buf[..i], WordEnd::Smtp))),
            _ if i == MAX_COMMAND_WORD => return Err(CommandError::WordTooLong),
            0x21..=0x7e => {}
            _ => return Err(CommandError::MalformedWord),
        }
    }
    Ok(None)
}

impl Command {
    /// Parses one command from the start of `buf`.
    ///
    /// `Ok(None)`: the bytes are a valid prefix, more are needed. `Ok(Some((c, n)))`:
    /// command `c` used the first `n` bytes (for `MAIL` and `SUBMIT` the message
    /// follows at `n`; see [`Command::carries_message`]).
    pub fn parse(buf: &[u8]) -> Result<Option<(Command, usize)>, CommandError> {
        let (word, end) = need!(scan_word(buf));
        let after_word = word.len() + 1;
        if let WordEnd::Smtp = end {
            let upper = word.to_ascii_uppercase();
            return match SMTP_VERBS.iter().find(|v| v.as_bytes() == upper.as_slice()) {
                Some(v) => Ok(Some((Command::Smtp((*v).to_owned()), after_word))),
                None => Err(CommandError::MalformedWord),
            };
        }
        let mut p = Params::new(buf, after_word);
        let cmd = match word {
            b"" => Command::Empty,
            b"OHAI" => Command::Ohai,
            b"NOOP" => Command::Noop,
            b"MAIL" => Command::Mail,
            b"OBAI" => Command::Obai,
            b"HELP" => Command::Help,
            b"TLSSTART" => Command::TlsStart,
            b"KEYREQUEST" => {
                let user = need!(p.string());
                let domain = if user.is_empty() {
                    // D2: a server-key request ends after the empty user.
                    String::new()
                } else {
                    need!(p.string())
                };
                Command::KeyRequest { user, domain }
            }
            b"LOGIN" => Command::Login {
                user: need!(p.string()),
            },
            b"MBOXLIST" => Command::MboxList(need!(parse_mbox(&mut p, MboxKind::List))),
            b"MBOXFETCH" => Command::MboxFetch(need!(parse_mbox(&mut p, MboxKind::Fetch))),
            b"MBOXDEL" => Command::MboxDelete(need!(parse_mbox(&mut p, MboxKind::Delete))),
            b"SUBMIT" => Command::Submit(need!(parse_submit(&mut p))),
            b"OPAQUE1" | b"OPAQUE2" | b"OPAQUEREG1" | b"OPAQUEREG2" => {
                Command::Opaque(need!(crate::opaque::parse(word, &mut p)))
            }
            other => {
                return Err(CommandError::UnknownCommand(
                    String::from_utf8_lossy(other).into_owned(),
                ));
            }
        };
        Ok(Some((cmd, p.used())))
    }

    /// Appends the wire form of this command.
    ///
    /// A `KeyRequest` with an empty user is written `KEYREQUEST\0\0` (its domain is
    /// not sent, D2). `Smtp(verb)` is written `verb\r\n`. Parameters are written as
    /// given: the caller keeps them within [`MAX_PARAM`] and free of NUL.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn param(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        match self {
            Command::Empty => out.push(0),
            Command::Ohai => out.extend_from_slice(b"OHAI\0"),
            Command::Noop => out.extend_from_slice(b"NOOP\0"),
            Command::Mail => out.extend_from_slice(b"MAIL\0"),
            Command::Obai => out.extend_from_slice(b"OBAI\0"),
            Command::Help => out.extend_from_slice(b"HELP\0"),
            Command::TlsStart => out.extend_from_slice(b"TLSSTART\0"),
            Command::KeyRequest { user, domain } => {
                out.extend_from_slice(b"KEYREQUEST\0");
                param(out, user);
                if !user.is_empty() {
                    param(out, domain);
                }
            }
            Command::Login { user } => {
                out.extend_from_slice(b"LOGIN\0");
                param(out, user);
            }
            Command::MboxList(r) => encode_mbox(MboxKind::List, r, out),
            Command::MboxFetch(r) => encode_mbox(MboxKind::Fetch, r, out),
            Command::MboxDelete(r) => encode_mbox(MboxKind::Delete, r, out),
            Command::Submit(r) => encode_submit(r, out),
            Command::Smtp(verb) => {
                out.extend_from_slice(verb.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Command::Opaque(c) => c.encode(out),
        }
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// True for the commands a message follows (`MAIL`, `SUBMIT`): the server reads it
    /// with a [`crate::MessageDecoder`] right after the command's bytes.
    pub fn carries_message(&self) -> bool {
        matches!(self, Command::Mail | Command::Submit(_))
    }

    /// For a mailbox command, its kind and request.
    pub fn mbox(&self) -> Option<(MboxKind, &MboxRequest)> {
        match self {
            Command::MboxList(r) => Some((MboxKind::List, r)),
            Command::MboxFetch(r) => Some((MboxKind::Fetch, r)),
            Command::MboxDelete(r) => Some((MboxKind::Delete, r)),
            _ => None,
        }
    }
}

fn parse_mbox(p: &mut Params<'_>, kind: MboxKind) -> Result<Option<MboxRequest>, CommandError> {
    let user = need!(p.string());
    let timestamp = need!(p.number("timestamp"));
    let (id, part) = match kind {
        MboxKind::List => (None, None),
        MboxKind::Fetch => {
            let id = need!(p.number("id"));
            let raw = need!(p.raw());
            let part = std::str::from_utf8(raw)
                .ok()
                .and_then(FetchPart::parse)
                .ok_or(CommandError::InvalidParam("part"))?;
            (Some(id), Some(part))
        }
        MboxKind::Delete => (Some(need!(p.number("id"))), None),
    };
    let raw = need!(p.raw());
    let signature = parse_hex::<64>(raw).ok_or(CommandError::InvalidParam("signature"))?;
    Ok(Some(MboxRequest {
        user,
        timestamp,
        id,
        part,
        signature,
    }))
}

/// `SUBMIT` parameters: user, timestamp, signature (D5); the same rules as the mailbox
/// commands' (canonical decimal, 128 lower-case hex digits).
fn parse_submit(p: &mut Params<'_>) -> Result<Option<SubmitRequest>, CommandError> {
    let user = need!(p.string());
    let timestamp = need!(p.number("timestamp"));
    let raw = need!(p.raw());
    let signature = parse_hex::<64>(raw).ok_or(CommandError::InvalidParam("signature"))?;
    Ok(Some(SubmitRequest {
        user,
        timestamp,
        signature,
    }))
}

fn encode_submit(r: &SubmitRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(crate::submit::WORD.as_bytes());
    out.push(0);
    out.extend_from_slice(r.user.as_bytes());
    out.push(0);
    out.extend_from_slice(r.timestamp.to_string().as_bytes());
    out.push(0);
    push_hex(&r.signature, out);
    out.push(0);
}

fn encode_mbox(kind: MboxKind, r: &MboxRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(kind.word().as_bytes());
    out.push(0);
    out.extend_from_slice(r.user.as_bytes());
    out.push(0);
    out.extend_from_slice(r.timestamp.to_string().as_bytes());
    out.push(0);
    if kind != MboxKind::List {
        out.extend_from_slice(r.id.unwrap_or(0).to_string().as_bytes());
        out.push(0);
    }
    if kind == MboxKind::Fetch {
        out.extend_from_slice(r.part.unwrap_or(FetchPart::Full).as_str().as_bytes());
        out.push(0);
    }
    push_hex(&r.signature, out);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8]) -> Result<Option<(Command, usize)>, CommandError> {
        Command::parse(b)
    }

    #[test]
    fn simple_words() {
        assert_eq!(one(b"OHAI\0").unwrap(), Some((Command::Ohai, 5)));
        assert_eq!(one(b"NOOP\0x").unwrap(), Some((Command::Noop, 5)));
        assert_eq!(one(b"MAIL\0\0\0").unwrap(), Some((Command::Mail, 5)));
        assert_eq!(one(b"OBAI\0").unwrap(), Some((Command::Obai, 5)));
        assert_eq!(one(b"HELP\0").unwrap(), Some((Command::Help, 5)));
        assert_eq!(one(b"TLSSTART\0").unwrap(), Some((Command::TlsStart, 9)));
        // What is pipelined after it is the caller's to refuse (D7), not consumed here.
        assert_eq!(
            one(b"TLSSTART\0NOOP\0").unwrap(),
            Some((Command::TlsStart, 9))
        );
        assert_eq!(one(b"\0").unwrap(), Some((Command::Empty, 1)));
        assert_eq!(one(b"").unwrap(), None);
        assert_eq!(one(b"OHA").unwrap(), None);
    }

    #[test]
    fn keyrequest_spellings() {
        let server = Command::KeyRequest {
            user: String::new(),
            domain: String::new(),
        };
        assert_eq!(one(b"KEYREQUEST\0\0").unwrap(), Some((server.clone(), 12)));
        // The third NUL is an empty command of its own.
        let buf = b"KEYREQUEST\0\0\0";
        assert_eq!(one(buf).unwrap(), Some((server.clone(), 12)));
        assert_eq!(one(&buf[12..]).unwrap(), Some((Command::Empty, 1)));
        assert_eq!(one(b"KEYREQUEST\0").unwrap(), None);
        assert_eq!(
            one(b"KEYREQUEST\0bob\0hawaii.edu\0").unwrap(),
            Some((
                Command::KeyRequest {
                    user: "bob".into(),
                    domain: "hawaii.edu".into()
                },
                26
            ))
        );
        assert_eq!(one(b"KEYREQUEST\0bob\0").unwrap(), None);
        // D2: a domain after an empty user is the next (unknown) command.
        let buf = b"KEYREQUEST\0\0example.org\0";
        assert_eq!(one(buf).unwrap(), Some((server, 12)));
        assert_eq!(one(&buf[12..]), Err(CommandError::WordTooLong));
        assert_eq!(
            one(b"example\0"),
            Err(CommandError::UnknownCommand("example".into()))
        );
    }

    #[test]
    fn word_limits() {
        // 10-byte word accepted, 11 bytes refused at once (no NUL needed).
        assert!(one(b"KEYREQUEST").unwrap().is_none());
        assert_eq!(one(b"ABCDEFGHIJK"), Err(CommandError::WordTooLong));
        assert_eq!(
            one(b"ABCDEFGHIJ\0"),
            Err(CommandError::UnknownCommand("ABCDEFGHIJ".into()))
        );
        assert_eq!(one(b"ABCDEFGHIJ"), Ok(None));
        assert_eq!(one(b"OH\x01"), Err(CommandError::MalformedWord));
        assert_eq!(one(b"\xff"), Err(CommandError::MalformedWord));
        assert_eq!(
            one(b"ohai\0"),
            Err(CommandError::UnknownCommand("ohai".into()))
        );
    }

    #[test]
    fn param_limits() {
        let mut ok = b"LOGIN\0".to_vec();
        ok.extend(std::iter::repeat_n(b'a', 255));
        assert_eq!(one(&ok), Ok(None));
        ok.push(0);
        let (c, n) = one(&ok).unwrap().unwrap();
        assert_eq!(n, ok.len());
        assert_eq!(
            c,
            Command::Login {
                user: "a".repeat(255)
            }
        );
        let mut bad = b"LOGIN\0".to_vec();
        bad.extend(std::iter::repeat_n(b'a', 256));
        assert_eq!(one(&bad), Err(CommandError::ParamTooLong));
        assert_eq!(one(b"LOGIN\0\xff\xfe\0"), Err(CommandError::InvalidUtf8));
        assert_eq!(one(b"LOGIN\0\xff\xfe"), Ok(None));
    }

    #[test]
    fn smtp_verbs() {
        assert_eq!(
            one(b"EHLO x\r\n").unwrap(),
            Some((Command::Smtp("EHLO".into()), 5))
        );
        assert_eq!(
            one(b"helo x\r\n").unwrap(),
            Some((Command::Smtp("HELO".into()), 5))
        );
        assert_eq!(
            one(b"QUIT\r\n").unwrap(),
            Some((Command::Smtp("QUIT".into()), 5))
        );
        assert_eq!(
            one(b"quit\n").unwrap(),
            Some((Command::Smtp("QUIT".into()), 5))
        );
        assert_eq!(
            one(b"MAIL FROM:<a@b>\r\n").unwrap(),
            Some((Command::Smtp("MAIL".into()), 5))
        );
        assert_eq!(
            one(b"STARTTLS\r\n").unwrap(),
            Some((Command::Smtp("STARTTLS".into()), 9))
        );
        assert_eq!(one(b"GET / HTTP/1.1\r\n"), Err(CommandError::MalformedWord));
        assert_eq!(one(b"\r\n"), Err(CommandError::MalformedWord));
        assert_eq!(one(b"EHLO"), Ok(None));
    }

    #[test]
    fn mbox_commands() {
        let mut r = MboxRequest::fetch("bob", 1_700_000_000, 7, FetchPart::Head);
        r.signature = [0xab; 64];
        let c = Command::MboxFetch(r);
        let b = c.to_bytes();
        assert!(b.starts_with(b"MBOXFETCH\0bob\x001700000000\x007\0head\0abab"));
        assert_eq!(one(&b).unwrap(), Some((c, b.len())));
        for cut in 0..b.len() {
            assert_eq!(one(&b[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            one(b"MBOXLIST\0bob\x00017\0"),
            Err(CommandError::InvalidParam("timestamp"))
        );
        assert_eq!(
            one(b"MBOXDEL\0bob\x001\0x\0"),
            Err(CommandError::InvalidParam("id"))
        );
        assert_eq!(
            one(b"MBOXFETCH\0bob\x001\x002\0body\0"),
            Err(CommandError::InvalidParam("part"))
        );
        assert_eq!(
            one(b"MBOXLIST\0bob\x001\0AB\0"),
            Err(CommandError::InvalidParam("signature"))
        );
        assert_eq!(
            one(b"MBOXLIST\0bob\x0018446744073709551616\0"),
            Err(CommandError::InvalidParam("timestamp"))
        );
    }

    #[test]
    fn submit_command() {
        let mut r = SubmitRequest::new("alice", 1_700_000_000);
        r.signature = [0x5a; 64];
        let c = Command::Submit(r);
        assert!(c.carries_message() && Command::Mail.carries_message());
        assert!(!Command::Noop.carries_message());
        let mut b = c.to_bytes();
        let mut want = b"SUBMIT\0alice\x001700000000\0".to_vec();
        want.extend_from_slice(&[b'5', b'a'].repeat(64));
        want.push(0);
        assert_eq!(b, want);
        // Every prefix asks for more; the message that follows is not consumed.
        for cut in 0..b.len() {
            assert_eq!(one(&b[..cut]), Ok(None), "cut {cut}");
        }
        let n = b.len();
        b.extend_from_slice(&[0, 0, 0, 1]);
        assert_eq!(one(&b).unwrap(), Some((c, n)));
        let sig = "0".repeat(128);
        for (bad, what) in [
            (format!("SUBMIT\0a\x00017\0{sig}\0"), "timestamp"),
            (format!("SUBMIT\0a\x00-1\0{sig}\0"), "timestamp"),
            (
                format!("SUBMIT\0a\x0018446744073709551616\0{sig}\0"),
                "timestamp",
            ),
            (
                format!("SUBMIT\0a\x001\0{}\0", "A".repeat(128)),
                "signature",
            ),
            (
                format!("SUBMIT\0a\x001\0{}\0", "0".repeat(126)),
                "signature",
            ),
            (format!("SUBMIT\0a\x001\0{sig}00\0"), "signature"),
        ] {
            assert_eq!(
                one(bad.as_bytes()),
                Err(CommandError::InvalidParam(what)),
                "{bad:?}"
            );
        }
        let mut long = b"SUBMIT\0".to_vec();
        long.extend(std::iter::repeat_n(b'u', 256));
        assert_eq!(one(&long), Err(CommandError::ParamTooLong));
        assert_eq!(one(b"SUBMIT\0\xff\0"), Err(CommandError::InvalidUtf8));
        // An overlong signature is refused once its 256th byte is visible.
        let mut hexes = b"SUBMIT\0a\x001\0".to_vec();
        hexes.extend(std::iter::repeat_n(b'0', 256));
        assert_eq!(one(&hexes), Err(CommandError::ParamTooLong));
    }
}
