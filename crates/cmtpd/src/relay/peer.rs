//! One outgoing connection to another domain's server: connect, greeting, OHAI, TLS when
//! offered (docs/protocol.md D7), the server's key, then signed replies read and
//! verified. Every byte goes through cmtp-proto's encoders and decoders; this module
//! only moves them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use cmtp_client::tls::Stream;
use cmtp_crypto::{PublicKey, Signature};
use cmtp_proto::reply::{self, Decoded, GreetingKind, KeyReply, StatusReply};
use cmtp_proto::{Command, ReplyError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Why talking to a remote server failed. Every variant is temporary (the message is
/// retried) except where the caller decides otherwise.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No address accepted a connection.
    #[error("cannot connect to {addrs}: {why}")]
    Connect {
        /// The addresses tried.
        addrs: String,
        /// The last error.
        why: String,
    },
    /// The remote did not answer in time.
    #[error("{peer}: no answer within {secs} s while {step}")]
    Timeout {
        /// The remote address.
        peer: SocketAddr,
        /// What we waited for.
        step: &'static str,
        /// The limit.
        secs: u64,
    },
    /// Reading or writing failed (reset, closed).
    #[error("{peer}: {step}: {source}")]
    Io {
        /// The remote address.
        peer: SocketAddr,
        /// What we were doing.
        step: &'static str,
        /// The error underneath.
        source: std::io::Error,
    },
    /// The remote is not a CMTP/1 server, or broke the protocol.
    #[error("{peer}: {why}")]
    Protocol {
        /// The remote address.
        peer: SocketAddr,
        /// What was wrong.
        why: String,
    },
    /// Our side failed (reading the queued message).
    #[error("{0}")]
    Local(String),
    /// The remote offered TLS before (recorded) and does not now: someone on the path
    /// may be stripping the offer. Temporary, like every network failure.
    #[error("{peer}: did not offer TLS although it did before (downgrade refused)")]
    TlsDowngrade {
        /// The remote address.
        peer: SocketAddr,
    },
    /// The TLS handshake failed.
    #[error("{peer}: TLS: {why}")]
    Tls {
        /// The remote address.
        peer: SocketAddr,
        /// What went wrong.
        why: String,
    },
    /// A reply's signature does not verify with the remote server's key.
    #[error("{peer}: bad signature on {what}")]
    BadSignature {
        /// The remote address.
        peer: SocketAddr,
        /// The reply.
        what: &'static str,
    },
}

/// Time limits of an outgoing connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    /// To connect to one address.
    pub connect: Duration,
    /// For one reply.
    pub reply: Duration,
}

/// What a remote server answered to MAIL, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailVerdict {
    /// SUCCESS: stored or queued by the remote; our copy may go.
    Accepted,
    /// DELIVERYFAILURE: permanent (no such account, relaying denied, hop limit).
    Refused(String),
    /// General FAILURE: refused for now (rate limit, server error, size).
    Failed,
}

/// The reading half of a connection: replies, decoded and verified one by one.
pub struct PeerReader {
    rd: ReadHalf<Stream>,
    buf: BytesMut,
    peer: SocketAddr,
    key: PublicKey,
    timeout: Duration,
    /// The last MAIL reply whose signature verified (text, signature): CMTP/1 signs only
    /// the constant text, so every SUCCESS of a server is the same bytes; one
    /// verification per connection gives the same assurance as one per reply.
    verified: Option<(Vec<u8>, [u8; 64])>,
}

/// The writing half.
pub struct PeerWriter {
    wr: WriteHalf<Stream>,
    peer: SocketAddr,
    timeout: Duration,
}

/// A connection whose greeting and server key have been read.
pub struct Peer {
    /// Reading side.
    pub reader: PeerReader,
    /// Writing side.
    pub writer: PeerWriter,
    tls: bool,
}

impl Peer {
    /// Connects to the first address of `addrs` that answers, reads the greeting, says
    /// OHAI, moves to TLS when offered, and asks for the server key (self-signed; under
    /// TLS it must be the key the handshake proved). The caller checks the key against
    /// its pin before sending anything else. `tls_seen`: the domain offered TLS before,
    /// so a connection without the offer is [`PeerError::TlsDowngrade`].
    pub async fn open(
        addrs: &[SocketAddr],
        t: PeerTimeouts,
        tls_seen: bool,
    ) -> Result<Peer, PeerError> {
        let mut last = String::from("no address");
        for &addr in addrs {
            match tokio::time::timeout(t.connect, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Self::handshake(s, addr, t, tls_seen).await;
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: timed out after {:?}", t.connect),
            }
        }
        Err(PeerError::Connect {
            addrs: addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            why: last,
        })
    }

    async fn handshake(
        s: TcpStream,
        peer: SocketAddr,
        t: PeerTimeouts,
        tls_seen: bool,
    ) -> Result<Peer, PeerError> {
        let (mut reader, mut writer) = Self::greet(Stream::Plain(s), peer, t).await?;
        let mut ohai = Vec::with_capacity(8);
        Command::Ohai.encode(&mut ohai);
        writer.write("sending OHAI", &ohai).await?;
        // A server over its limits greets, then sends FAILURE and closes.
        let answer = reader
            .read("reading the OHAI answer", |b| match b.first() {
                Some(b'F') => Ok(reply::decode_general(b)?.map(|(_, n)| (None, n))),
                _ => Ok(reply::decode_ohai(b)?.map(|(a, n)| (Some(a), n))),
            })
            .await?;
        let offered = match answer {
            Some(reply::OhaiAnswer::Cmtp(text)) => {
                reply::ohai_capabilities(&text).contains(&reply::CAP_TLS)
            }
            Some(reply::OhaiAnswer::Legacy2016) => false,
            None => {
                return Err(PeerError::Protocol {
                    peer,
                    why: "the server refused the connection (FAILURE)".into(),
                });
            }
        };
        let mut tls_key = None;
        if offered {
            let mut req = Vec::with_capacity(16);
            Command::TlsStart.encode(&mut req);
            writer.write("sending TLSSTART", &req).await?;
            let g = reader
                .read("reading the TLSSTART answer", reply::decode_general)
                .await?;
            if !g.ok {
                return Err(PeerError::Protocol {
                    peer,
                    why: "TLSSTART answered FAILURE".into(),
                });
            }
            // Its signature is checked below, once the key is known (the handshake
            // proves it); bytes before the handshake can only be injected.
            if !reader.buf.is_empty() {
                return Err(PeerError::Protocol {
                    peer,
                    why: "bytes after the TLSSTART answer, before the handshake".into(),
                });
            }
            let Stream::Plain(tcp) = reader.rd.unsplit(writer.wr) else {
                unreachable!("the stream is plain until here");
            };
            // Any key here: the caller's pin check (check_pin) decides, with the same
            // record of a refused key as without TLS, before anything else is sent.
            let (stream, key) = cmtp_client::tls::handshake(tcp, None, t.reply)
                .await
                .map_err(|e| PeerError::Tls {
                    peer,
                    why: e.to_string(),
                })?;
            verify(&key, g.signed_bytes(), &g.sig, peer, "the TLSSTART answer")?;
            (reader, writer) = Self::greet(stream, peer, t).await?;
            tls_key = Some(key);
        } else if tls_seen {
            return Err(PeerError::TlsDowngrade { peer });
        }
        let mut req = Vec::with_capacity(16);
        Command::KeyRequest {
            user: String::new(),
            domain: String::new(),
        }
        .encode(&mut req);
        writer.write("asking for the server key", &req).await?;
        let key = match reader
            .read("reading the server key", reply::decode_key_reply)
            .await?
        {
            KeyReply::Key { key, sig, .. } => {
                let k = PublicKey::from_bytes(&key).map_err(|e| PeerError::Protocol {
                    peer,
                    why: format!("invalid server key: {e}"),
                })?;
                verify(&k, &key, &sig, peer, "the server key")?;
                k
            }
            KeyReply::V0(v) => {
                return Err(PeerError::Protocol {
                    peer,
                    why: format!("no server key ({:?})", v.text),
                });
            }
        };
        if tls_key.is_some_and(|k| k != key) {
            return Err(PeerError::Protocol {
                peer,
                why: "the TLS key is not the server key".into(),
            });
        }
        reader.key = key;
        Ok(Peer {
            reader,
            writer,
            tls: tls_key.is_some(),
        })
    }

    /// The two halves over a fresh stream, the greeting read.
    async fn greet(
        stream: Stream,
        peer: SocketAddr,
        t: PeerTimeouts,
    ) -> Result<(PeerReader, PeerWriter), PeerError> {
        let (rd, wr) = tokio::io::split(stream);
        // The key is not known yet: a placeholder until the KEYREQUEST answer is verified.
        let placeholder = PublicKey::from_bytes(&[0u8; 32]).map_err(|e| PeerError::Protocol {
            peer,
            why: e.to_string(),
        })?;
        let mut reader = PeerReader {
            rd,
            buf: BytesMut::with_capacity(4096),
            peer,
            key: placeholder,
            timeout: t.reply,
            verified: None,
        };
        let writer = PeerWriter {
            wr,
            peer,
            timeout: t.reply,
        };
        let g = reader
            .read("reading the greeting", reply::decode_greeting)
            .await?;
        if g.kind != GreetingKind::Cmtp1 {
            return Err(PeerError::Protocol {
                peer,
                why: format!("not a CMTP/1 server (greeting {:?})", g.text),
            });
        }
        Ok((reader, writer))
    }

    /// Whether the connection is encrypted (the peer offered TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The remote server's key, as it presented it (self-signed).
    pub fn server_key(&self) -> &PublicKey {
        &self.reader.key
    }

    /// The remote address.
    pub fn addr(&self) -> SocketAddr {
        self.reader.peer
    }

    /// `KEYREQUEST user domain`: the key, verified with the server key, or `None` when the
    /// remote answers KEYNOTAVAILABLE.
    pub async fn key_request(
        &mut self,
        user: &str,
        domain: &str,
    ) -> Result<Option<[u8; 32]>, PeerError> {
        let mut req = Vec::with_capacity(16 + user.len() + domain.len());
        Command::KeyRequest {
            user: user.to_owned(),
            domain: domain.to_owned(),
        }
        .encode(&mut req);
        self.writer.write("sending KEYREQUEST", &req).await?;
        let peer = self.reader.peer;
        match self
            .reader
            .read("reading the KEYREQUEST answer", reply::decode_key_reply)
            .await?
        {
            KeyReply::Key { key, sig, .. } => {
                verify(&self.reader.key, &key, &sig, peer, "a user key")?;
                Ok(Some(key))
            }
            KeyReply::V0(v) => {
                verify(
                    &self.reader.key,
                    v.signed_bytes(),
                    &v.sig,
                    peer,
                    "KEYNOTAVAILABLE",
                )?;
                Ok(None)
            }
        }
    }

    /// Splits into the two halves (to pipeline MAILs: write ahead, read behind).
    pub fn split(self) -> (PeerReader, PeerWriter) {
        (self.reader, self.writer)
    }

    /// Joins the halves again (only to close: whether it was TLS no longer matters).
    pub fn join(reader: PeerReader, writer: PeerWriter) -> Peer {
        Peer {
            reader,
            writer,
            tls: false,
        }
    }

    /// Says OBAI and closes (best effort).
    pub async fn close(mut self) {
        let mut b = Vec::new();
        Command::Obai.encode(&mut b);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.writer.wr.write_all(&b).await;
            let _ = self.writer.wr.shutdown().await;
        })
        .await;
    }
}

fn verify(
    key: &PublicKey,
    msg: &[u8],
    sig: &[u8; 64],
    peer: SocketAddr,
    what: &'static str,
) -> Result<(), PeerError> {
    let bad = || PeerError::BadSignature { peer, what };
    let sig = Signature::from_bytes(sig).map_err(|_| bad())?;
    key.verify(msg, &sig).map_err(|_| bad())
}

impl PeerReader {
    async fn read<T>(
        &mut self,
        step: &'static str,
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<T, PeerError> {
        let peer = self.peer;
        loop {
            match decode(&self.buf) {
                Ok(Some((v, used))) => {
                    let _ = self.buf.split_to(used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(PeerError::Protocol {
                        peer,
                        why: format!("{step}: {}", describe(&e)),
                    });
                }
            }
            self.buf.reserve(4096);
            let n = match tokio::time::timeout(self.timeout, self.rd.read_buf(&mut self.buf)).await
            {
                Err(_) => {
                    return Err(PeerError::Timeout {
                        peer,
                        step,
                        secs: self.timeout.as_secs(),
                    });
                }
                Ok(Err(source)) => return Err(PeerError::Io { peer, step, source }),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Err(PeerError::Io {
                    peer,
                    step,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }

    /// Reads the answer to one MAIL and verifies its signature.
    pub async fn mail_verdict(&mut self) -> Result<MailVerdict, PeerError> {
        let peer = self.peer;
        let r = self
            .read("reading the MAIL reply", reply::decode_general_or_v0)
            .await?;
        let (msg, sig) = match &r {
            StatusReply::General(g) => (g.signed_bytes(), &g.sig),
            StatusReply::V0(v) => (v.signed_bytes(), &v.sig),
        };
        let known = self
            .verified
            .as_ref()
            .is_some_and(|(m, s)| m == msg && s == sig);
        if !known {
            verify(&self.key, msg, sig, peer, "the MAIL reply")?;
            self.verified = Some((msg.to_vec(), *sig));
        }
        Ok(match r {
            StatusReply::General(g) if g.ok => MailVerdict::Accepted,
            StatusReply::General(_) => MailVerdict::Failed,
            StatusReply::V0(v) => MailVerdict::Refused(v.text),
        })
    }
}

impl PeerWriter {
    /// Writes `bytes` whole, within the reply timeout.
    pub async fn write(&mut self, step: &'static str, bytes: &[u8]) -> Result<(), PeerError> {
        let peer = self.peer;
        let wr = &mut self.wr;
        // The flush hands what TLS buffered to the socket (a no-op on plain TCP).
        let write = async move {
            wr.write_all(bytes).await?;
            wr.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(PeerError::Timeout {
                peer,
                step,
                secs: self.timeout.as_secs(),
            }),
            Ok(Err(source)) => Err(PeerError::Io { peer, step, source }),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Writes the `MAIL\0` command word.
    pub async fn mail_command(&mut self) -> Result<(), PeerError> {
        let mut b = Vec::with_capacity(5);
        Command::Mail.encode(&mut b);
        self.write("sending MAIL", &b).await
    }
}

fn describe(e: &ReplyError) -> String {
    e.to_string()
}
