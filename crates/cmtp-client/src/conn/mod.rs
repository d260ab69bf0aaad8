//! One TCP connection to a CMTP server, command by command, with a timeout on every
//! network step and every server signature verified against the server key.
//!
//! The server key is set with [`Connection::set_server_key`] (normally the pinned one,
//! see [`crate::Session`]); until then only [`Connection::fetch_server_key`] (which
//! checks the key's self-signature) and unsigned steps (greeting, OHAI) work.

use std::net::SocketAddr;
use std::time::Duration;

use cmtp_crypto::{PublicKey, Signature};
use cmtp_proto::legacy::{self, KeyAnswer as LegacyKeyAnswer, decode_login_reply_any};
use cmtp_proto::reply::{
    self, Decoded, GreetingKind, KeyReply, LoginReply, OhaiAnswer, decode_general, decode_greeting,
    decode_key_reply, decode_ohai,
};
use cmtp_proto::{
    Command, NameError, ReplyError, SIG_LEN, validate_account, validate_domain, validate_name,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::error::{ClientError, Result};
use crate::tls::Stream;

mod mail;
mod mbox;
mod opaque;
mod tls;

pub use mail::{MailHead, MailOutcome, sign_submit, submit_digest};
pub use mbox::sign_mbox;
pub use opaque::OpaqueOutcome;

/// Timeouts of network steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Name resolution plus TCP connect, per address tried.
    pub connect: Duration,
    /// Each read or write step (one reply, one chunk of an upload).
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(30),
        }
    }
}

/// Which server software is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// CMTP/1 as docs/protocol.md defines it.
    Cmtp1,
    /// The 2016 C server (greeting `Welcome to CMTP version < 1`, OHAI → `HAI!!! :3`).
    Legacy2016,
}

/// Reports upload progress (bytes of the message written to the socket).
pub trait Progress: Send {
    /// The total number of bytes that will be written (sending) or read (a fetch).
    fn set_total(&mut self, _total: u64) {}
    /// `n` more bytes were transferred.
    fn advance(&mut self, _n: u64) {}
    /// The transfer ended (successfully or not).
    fn finish(&mut self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Free room ensured in the input buffer before each socket read.
const READ_CHUNK: usize = 64 * 1024;
/// Longest xzibit we accept from LOGIN; a longer announced length is the 2016 layout.
const MAX_XZIBIT: u32 = 4096;
/// Most a mailbox payload buffer reserves up front: the announced length is the
/// server's word, unverified until the signature that follows the payload, so larger
/// payloads grow the buffer as their bytes actually arrive.
const MAX_PREALLOC: usize = 1024 * 1024;

/// A connection to one CMTP server.
pub struct Connection {
    rd: ReadHalf<Stream>,
    /// Bytes received but not yet used by a reply. Kept across replies, so bytes that
    /// arrive early (an early refusal, pipelined replies) are never lost.
    inbuf: Vec<u8>,
    wr: WriteHalf<Stream>,
    peer: SocketAddr,
    /// The server's key as proven in the TLS handshake; `None` = no TLS.
    tls_key: Option<PublicKey>,
    timeouts: Timeouts,
    greeting: String,
    dialect: Dialect,
    server_key: Option<PublicKey>,
    max_payload: u64,
    /// The capability words of the OHAI answer (D6), once OHAI was said.
    capabilities: Vec<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("dialect", &self.dialect)
            .field("greeting", &self.greeting)
            .field("tls", &self.tls_key.is_some())
            .finish()
    }
}

impl Connection {
    /// Resolves `host:port`, connects (trying each address in turn) and reads the
    /// greeting. A greeting that is not CMTP's (an SMTP `220 … ESMTP …` line) is
    /// [`ClientError::NotCmtp`].
    pub async fn connect(server: &str, timeouts: Timeouts) -> Result<Connection> {
        let stream = Self::connect_tcp(server, timeouts).await?;
        Self::from_stream(stream, timeouts).await
    }

    /// Resolves `host:port` and connects, trying each address in turn.
    async fn connect_tcp(server: &str, timeouts: Timeouts) -> Result<TcpStream> {
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(timeouts.connect, tokio::net::lookup_host(server)).await {
                Err(_) => {
                    return Err(ClientError::Resolve {
                        host: server.to_owned(),
                        reason: format!("no answer within {:?}", timeouts.connect),
                    });
                }
                Ok(Err(e)) => {
                    return Err(ClientError::Resolve {
                        host: server.to_owned(),
                        reason: e.to_string(),
                    });
                }
                Ok(Ok(a)) => a.collect(),
            };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect timed out after {:?}", timeouts.connect),
                    ))
                }
            }
        }
        Err(ClientError::Connect {
            addr: server.to_owned(),
            source: last
                .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")),
        })
    }

    /// Wraps an established stream and reads the greeting.
    pub async fn from_stream(stream: TcpStream, timeouts: Timeouts) -> Result<Connection> {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        Self::greet(Stream::Plain(stream), peer, timeouts, None).await
    }

    /// Reads the greeting on a fresh stream.
    async fn greet(
        stream: Stream,
        peer: SocketAddr,
        timeouts: Timeouts,
        tls_key: Option<PublicKey>,
    ) -> Result<Connection> {
        let (r, w) = tokio::io::split(stream);
        let mut c = Connection {
            rd: r,
            inbuf: Vec::with_capacity(READ_CHUNK),
            wr: w,
            peer,
            tls_key,
            timeouts,
            greeting: String::new(),
            dialect: Dialect::Cmtp1,
            server_key: None,
            max_payload: 64 * 1024 * 1024 + 1024 * 1024,
            capabilities: Vec::new(),
        };
        // A line without terminator within the limit is no CMTP greeting.
        let g = c
            .read_reply("reading the greeting", |b| {
                decode_greeting(b).map_err(|e| match e {
                    ReplyError::TooLong(_) => ReplyError::NotCmtp(String::new()),
                    e => e,
                })
            })
            .await?;
        let text = g.text.trim_end_matches(['\r', '\n']).to_owned();
        match g.kind {
            GreetingKind::Legacy2016 => c.dialect = Dialect::Legacy2016,
            GreetingKind::Cmtp1 => {}
            // Lenient on the layout: any greeting naming a CMTP version is accepted.
            GreetingKind::Other if text.contains("CMTP/") => {}
            GreetingKind::Other => {
                return Err(ClientError::NotCmtp {
                    peer,
                    said: truncate(&text),
                });
            }
        }
        c.greeting = text;
        Ok(c)
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The greeting line, as received (without its terminator).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// The dialect detected from the greeting and OHAI.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Forces a dialect (e.g. `--compat 2016` when the greeting was not seen as such).
    pub fn set_dialect(&mut self, d: Dialect) {
        self.dialect = d;
    }

    /// Sets the key every server signature is verified against.
    pub fn set_server_key(&mut self, key: PublicKey) {
        self.server_key = Some(key);
    }

    /// The key signatures are verified against, if set.
    pub fn server_key(&self) -> Option<&PublicKey> {
        self.server_key.as_ref()
    }

    /// Bounds the mailbox payloads (LIST, FETCH) this connection accepts.
    pub fn set_max_payload(&mut self, max: u64) {
        self.max_payload = max;
    }

    /// `OHAI`: returns the server's version string. Anything but `OHAI…` (or the 2016
    /// server's `HAI!!! :3`) is [`ClientError::NotCmtp`].
    pub async fn ohai(&mut self) -> Result<String> {
        const STEP: &str =
            "saying OHAI (the server refused the connection: busy, or over its per-address limits)";
        self.send("sending OHAI", Command::Ohai).await?;
        // A server over its connection limits greets, then answers a signed FAILURE and
        // closes; an OHAI answer starts with "OHAI" (or the 2016 "HAI"), never with 'F'.
        let answer = self
            .read_reply(STEP, |b| match b.first() {
                Some(b'F') => Ok(decode_general(b)?.map(|(g, n)| (Err(g), n))),
                _ => Ok(decode_ohai(b)?.map(|(a, n)| (Ok(a), n))),
            })
            .await?;
        let answer = match answer {
            Ok(answer) => answer,
            Err(refusal) => {
                // Before the server key is pinned (first login) the refusal cannot be
                // checked; it changes nothing either way: we stop here.
                if self.server_key.is_some() {
                    self.verify("reply", refusal.signed_bytes(), &refusal.sig)?;
                }
                return Err(ClientError::ServerFailure { step: STEP });
            }
        };
        match answer {
            OhaiAnswer::Legacy2016 => {
                self.dialect = Dialect::Legacy2016;
                Ok(reply::LEGACY_OHAI.trim_end().to_owned())
            }
            OhaiAnswer::Cmtp(text) => {
                self.capabilities = reply::ohai_capabilities(&text)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                Ok(text)
            }
        }
    }

    /// `NOOP`: checks that the connection and the server's signature work.
    pub async fn noop(&mut self) -> Result<()> {
        const STEP: &str = "reading the answer to NOOP";
        self.send("sending NOOP", Command::Noop).await?;
        if self.dialect == Dialect::Legacy2016 {
            // The 2016 server answers `O_O\n\0`, unsigned.
            return self.read_reply(STEP, legacy::decode_noop_answer).await;
        }
        let g = self.read_reply(STEP, decode_general).await?;
        self.verify("reply", g.signed_bytes(), &g.sig)?;
        if g.ok {
            Ok(())
        } else {
            Err(self.proto(STEP, "FAILURE"))
        }
    }

    /// `KEYREQUEST` with an empty user: the server's own key, checked against its own
    /// signature (which proves only that the server holds the secret half; pin it).
    pub async fn fetch_server_key(&mut self) -> Result<PublicKey> {
        const STEP: &str = "reading the server key";
        let ask = Command::KeyRequest {
            user: String::new(),
            domain: String::new(),
        };
        self.send("requesting the server key", ask).await?;
        match self.read_key_reply(STEP).await? {
            KeyAnswer::Key(key, sig) => {
                key.verify(key.as_bytes(), &sig)
                    .map_err(|_| ClientError::BadSignature {
                        what: "own key (self-signature)",
                    })?;
                Ok(key)
            }
            KeyAnswer::Text(t) => Err(self.proto(STEP, &format!("server answered {t}"))),
        }
    }

    /// `KEYREQUEST user domain`: the user's key, verified against the server key;
    /// `None` for KEYNOTAVAILABLE.
    pub async fn key_request(&mut self, user: &str, domain: &str) -> Result<Option<PublicKey>> {
        const STEP: &str = "reading a KEYREQUEST reply";
        check_name(user, validate_account)?;
        check_name(domain, validate_domain)?;
        let ask = Command::KeyRequest {
            user: user.to_owned(),
            domain: domain.to_owned(),
        };
        self.send("sending KEYREQUEST", ask).await?;
        match self.read_key_reply(STEP).await? {
            KeyAnswer::Key(key, sig) => {
                self.verify("key reply", key.as_bytes(), sig.as_bytes())?;
                Ok(Some(key))
            }
            KeyAnswer::Text(t) if t == reply::KEYNOTAVAILABLE => Ok(None),
            KeyAnswer::Text(t) => Err(self.proto(STEP, &format!("unexpected answer {t:?}"))),
        }
    }

    /// `LOGIN user`: the user's xzibit (bytes), its signature verified. Unknown user →
    /// [`ClientError::UnknownUser`]. Understands the 2016 server's layout (the stored
    /// 156-byte xzibit and its signature, without outer version and length); the 2016
    /// server is silent for an unknown user, so there a timeout means "unknown user".
    pub async fn login(&mut self, user: &str) -> Result<Vec<u8>> {
        const STEP: &str = "reading the LOGIN reply";
        check_name(user, validate_name)?;
        let ask = Command::Login {
            user: user.to_owned(),
        };
        self.send("sending LOGIN", ask).await?;
        let reply = if self.dialect == Dialect::Legacy2016 {
            match self
                .read_reply(STEP, |b| decode_login_reply_any(b, MAX_XZIBIT, true))
                .await
            {
                // Silence (not even a version) is how the 2016 server says "no such user".
                Err(ClientError::Timeout { .. }) if self.inbuf.len() < 4 => {
                    return Err(ClientError::UnknownUser {
                        address: format!("{user} (the 2016 server gave no answer to LOGIN)"),
                    });
                }
                r => r?,
            }
        } else {
            self.read_versioned(STEP, |b| decode_login_reply_any(b, MAX_XZIBIT, false))
                .await?
        };
        match reply {
            LoginReply::V0(v) => {
                self.verify("message", v.signed_bytes(), &v.sig)?;
                if v.text == reply::FAILURE {
                    Err(ClientError::UnknownUser {
                        address: user.to_owned(),
                    })
                } else {
                    Err(self.proto(STEP, &format!("unexpected answer {:?}", v.text)))
                }
            }
            LoginReply::Xzibit { xzibit, sig, .. } => {
                self.verify("xzibit", &xzibit, &sig)?;
                Ok(xzibit)
            }
        }
    }

    /// `OBAI`: says goodbye and closes.
    pub async fn obai(mut self) -> Result<()> {
        self.send("sending OBAI", Command::Obai).await?;
        let _ = self.wr.shutdown().await;
        Ok(())
    }

    /// Says OBAI if the server may still be listening, then closes, ignoring errors:
    /// for leaving after an error (`after`, the error that ended the work, if any).
    /// The 2016 server leaves a thread spinning for a client that just disconnects, and
    /// a CMTP/1 server logs it as an abort. Bounded by a short timeout, since a peer
    /// that stopped reading (e.g. mid-upload) must not hold the caller.
    pub async fn close(mut self, after: Option<&ClientError>) {
        let gone = matches!(
            after,
            Some(ClientError::Closed { .. } | ClientError::NotCmtp { .. } | ClientError::Io { .. })
        );
        if !gone {
            let mut out = Vec::with_capacity(8);
            Command::Obai.encode(&mut out);
            let quick = self.timeouts.io.min(Duration::from_secs(2));
            let _ = tokio::time::timeout(quick, self.wr.write_all(&out)).await;
        }
        let _ = self.wr.shutdown().await;
    }

    // ---- reading helpers -------------------------------------------------------

    fn proto(&self, step: &'static str, detail: &str) -> ClientError {
        ClientError::Protocol {
            step,
            peer: self.peer,
            detail: detail.to_owned(),
        }
    }

    /// Checks a server signature over `msg` against the server key.
    fn verify(&self, what: &'static str, msg: &[u8], sig: &[u8; SIG_LEN]) -> Result<()> {
        let key = self
            .server_key
            .as_ref()
            .ok_or(ClientError::NoServerKey { peer: self.peer })?;
        key.verify(msg, &Signature::from_array(*sig))
            .map_err(|_| ClientError::BadSignature { what })
    }

    /// Writes one command in its wire form ([`Command::encode`]).
    async fn send(&mut self, step: &'static str, cmd: Command) -> Result<()> {
        let mut out = Vec::with_capacity(64);
        cmd.encode(&mut out);
        self.write(step, &out).await
    }

    async fn write(&mut self, step: &'static str, data: &[u8]) -> Result<()> {
        let io = self.timeouts.io;
        // The flush hands what TLS buffered to the socket (a no-op on plain TCP).
        let wr = &mut self.wr;
        let write = async move {
            wr.write_all(data).await?;
            wr.flush().await
        };
        match tokio::time::timeout(io, write).await {
            Err(_) => Err(ClientError::Timeout {
                step,
                after: io,
                peer: self.peer,
            }),
            Ok(Err(e)) => Err(ClientError::Io {
                step,
                peer: self.peer,
                source: e,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads from the socket into the input buffer: at least one byte, within the
    /// step's timeout.
    async fn read_more(&mut self, step: &'static str) -> Result<()> {
        let io = self.timeouts.io;
        let peer = self.peer;
        self.inbuf.reserve(READ_CHUNK);
        match tokio::time::timeout(io, self.rd.read_buf(&mut self.inbuf)).await {
            Err(_) => Err(ClientError::Timeout {
                step,
                after: io,
                peer,
            }),
            Ok(Err(e)) => Err(ClientError::Io {
                step,
                peer,
                source: e,
            }),
            Ok(Ok(0)) => Err(ClientError::Closed { step, peer }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The one reading loop: feeds the input buffer to a sans-IO `decode` (see
    /// [`cmtp_proto::reply`]), reading more until it answers, then drops the bytes the
    /// reply used; what follows it stays buffered for the next reply. The decoders
    /// bound every reply, so the buffer stays bounded too.
    async fn read_reply<T>(
        &mut self,
        step: &'static str,
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<T> {
        loop {
            match decode(&self.inbuf) {
                Ok(Some((reply, used))) => {
                    self.inbuf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => self.read_more(step).await?,
                Err(e) => return Err(self.reply_error(step, e)),
            }
        }
    }

    /// A reply due as a versioned one (first byte 0) may instead be a general
    /// SUCCESS/FAILURE (rate limit, server error): its signature is checked like any
    /// other, then it is [`ClientError::ServerFailure`].
    async fn read_versioned<T>(
        &mut self,
        step: &'static str,
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<T> {
        let r = self
            .read_reply(step, |b| match b.first() {
                None => Ok(None),
                Some(0) => Ok(decode(b)?.map(|(r, n)| (Ok(r), n))),
                Some(_) => Ok(decode_general(b)?.map(|(g, n)| (Err(g), n))),
            })
            .await?;
        match r {
            Ok(v) => Ok(v),
            Err(g) => {
                self.verify("reply", g.signed_bytes(), &g.sig)?;
                Err(ClientError::ServerFailure { step })
            }
        }
    }

    fn reply_error(&self, step: &'static str, e: ReplyError) -> ClientError {
        match e {
            // Quote what the peer said (its first line) rather than the decoder's excerpt.
            ReplyError::NotCmtp(_) => {
                let line = &self.inbuf[..self.inbuf.len().min(reply::MAX_GREETING)];
                let end = line
                    .iter()
                    .position(|&b| b == 0 || b == b'\n')
                    .unwrap_or(line.len());
                ClientError::NotCmtp {
                    peer: self.peer,
                    said: truncate(&String::from_utf8_lossy(&line[..end])),
                }
            }
            e => self.proto(step, &e.to_string()),
        }
    }

    async fn read_key_reply(&mut self, step: &'static str) -> Result<KeyAnswer> {
        let answer = if self.dialect == Dialect::Legacy2016 {
            self.read_versioned(step, legacy::decode_key_answer).await?
        } else {
            LegacyKeyAnswer::Reply(self.read_versioned(step, decode_key_reply).await?)
        };
        match answer {
            // The 2016 server's garbled "no such key": its signature covers the text.
            LegacyKeyAnswer::NotAvailable(na) => {
                if self.server_key.is_some() {
                    self.verify("message", na.signed_bytes(), &na.sig)?;
                }
                Ok(KeyAnswer::Text(reply::KEYNOTAVAILABLE.into()))
            }
            LegacyKeyAnswer::Reply(KeyReply::V0(v)) => {
                // Verified only when a server key is set (not while fetching it).
                if self.server_key.is_some() {
                    self.verify("message", v.signed_bytes(), &v.sig)?;
                }
                Ok(KeyAnswer::Text(v.text))
            }
            LegacyKeyAnswer::Reply(KeyReply::Key { key, sig, .. }) => Ok(KeyAnswer::Key(
                PublicKey::from_array(key),
                Signature::from_array(sig),
            )),
        }
    }
}

/// The answer to KEYREQUEST, as the commands use it.
enum KeyAnswer {
    Key(PublicKey, Signature),
    Text(String),
}

/// Checks a name with one of the proto crate's rules before it is framed on the wire
/// (the encoders write names as given).
fn check_name(name: &str, rule: fn(&str) -> std::result::Result<(), NameError>) -> Result<()> {
    rule(name).map_err(|e| ClientError::BadAddress {
        address: name.to_owned(),
        why: e.to_string(),
    })
}

fn truncate(s: &str) -> String {
    let s = s.trim_end();
    if s.len() <= 120 {
        return s.to_owned();
    }
    let mut end = 120;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
