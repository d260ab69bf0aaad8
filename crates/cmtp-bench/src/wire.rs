//! The client side of the few CMTP exchanges the tool makes, over a buffered TCP
//! connection. Encoding and decoding are cmtp-proto's; this module only moves bytes
//! and maps replies to what a load generator counts.

use anyhow::{Context, Result, bail};
use cmtp_client::tls::Stream;
use cmtp_proto::reply::{self, OhaiAnswer, StatusReply};
use cmtp_proto::{Command, Envelope};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reply to MAIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailReply {
    /// General SUCCESS: the message is durable.
    Success,
    /// General FAILURE (malformed or over the size limit; the server closes).
    Failure,
    /// Version-0 message (DELIVERYFAILURE or another text).
    Refused(String),
}

/// A reply to KEYREQUEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyReply {
    /// A key (its signature is not verified: the tool measures, it does not pin).
    Key,
    /// Version-0 message (KEYNOTAVAILABLE or other).
    Text(String),
    /// A general reply (FAILURE).
    General(String),
}

/// What a decoder made of the bytes buffered so far.
type Decoded<T> = Result<Option<(T, usize)>>;

/// MAIL's reply: general, or (first byte 0) version 0.
pub fn decode_mail_reply(buf: &[u8]) -> Decoded<MailReply> {
    Ok(reply::decode_general_or_v0(buf)?.map(|(r, n)| {
        let r = match r {
            StatusReply::General(g) if g.ok => MailReply::Success,
            StatusReply::General(_) => MailReply::Failure,
            StatusReply::V0(v) => MailReply::Refused(v.text),
        };
        (r, n)
    }))
}

/// KEYREQUEST's reply: a key, a version-0 text, or (first byte not 0) a general reply.
pub fn decode_key_reply(buf: &[u8]) -> Decoded<KeyReply> {
    if buf.first().is_some_and(|&b| b != 0) {
        return Ok(reply::decode_general(buf)?
            .map(|(g, n)| (KeyReply::General(reply::general_text(g.ok).into()), n)));
    }
    Ok(reply::decode_key_reply(buf)?.map(|(r, n)| {
        let r = match r {
            reply::KeyReply::Key { .. } => KeyReply::Key,
            reply::KeyReply::V0(v) => KeyReply::Text(v.text),
        };
        (r, n)
    }))
}

/// The bytes of one KEYREQUEST (`KEYREQUEST\0\0` for the server's own key, D2).
pub fn keyrequest_bytes(user: &str, domain: &str) -> Vec<u8> {
    Command::KeyRequest {
        user: user.into(),
        domain: domain.into(),
    }
    .to_bytes()
}

/// The envelope fields the tool varies.
#[derive(Debug, Clone)]
pub struct MailHeader {
    /// Crypto system of the payload (1: the server treats it as opaque).
    pub version: u32,
    /// Body length in bytes.
    pub body_length: u64,
    /// Destination account (empty: the server's postmaster mailbox).
    pub dest_account: String,
    /// Destination domain (empty: the server's own domain).
    pub dest_domain: String,
    /// Claimed source account.
    pub src_account: String,
    /// Claimed source domain.
    pub src_domain: String,
}

/// Encodes `MAIL\0`, the envelope and a one-NUL log; the body follows separately
/// (so a 1 GiB body can be streamed).
pub fn encode_mail_head(h: &MailHeader, out: &mut Vec<u8>) -> Result<()> {
    Command::Mail.encode(out);
    let env = Envelope {
        log_length: 1, // the smallest log: one NUL
        body_length: h.body_length,
        ..Envelope::new(
            h.version,
            &*h.dest_account,
            &*h.dest_domain,
            &*h.src_account,
            &*h.src_domain,
        )
    };
    env.check().context("envelope")?;
    env.encode(out);
    out.push(0); // the log
    Ok(())
}

/// One client connection with a read buffer.
pub struct Conn {
    stream: Stream,
    timeout: Duration,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects, sets TCP_NODELAY and reads the greeting (spec §3). Every later read
    /// or write that makes no progress for `timeout` fails, so no run can hang.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("connect {addr}: timed out"))?
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream: Stream::Plain(stream),
            timeout,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        };
        c.read_with(|b| Ok(reply::decode_greeting(b)?))
            .await
            .context("greeting")?;
        Ok(c)
    }

    /// Sends `OHAI\0` and checks that the answer is a CMTP/1 server's.
    pub async fn ohai(&mut self) -> Result<String> {
        self.write_all(&Command::Ohai.to_bytes()).await?;
        match self
            .read_with(|b| Ok(reply::decode_ohai(b)?))
            .await
            .context("OHAI")?
        {
            OhaiAnswer::Cmtp(t) => Ok(t),
            OhaiAnswer::Legacy2016 => bail!("a 2016 server: it does not answer MAIL"),
        }
    }

    /// `TLSSTART` (docs/protocol.md D7), the handshake, the new greeting and OHAI again:
    /// the connection is then encrypted. The server's key is taken as presented (the
    /// tool measures, it does not pin).
    pub async fn start_tls(mut self) -> Result<Conn> {
        self.write_all(&Command::TlsStart.to_bytes()).await?;
        let ok = self
            .read_with(|b| Ok(reply::decode_general(b)?))
            .await
            .context("TLSSTART")?
            .ok;
        if !ok || self.end != self.start {
            bail!("TLSSTART refused (is TLS offered? see [tls] offer)");
        }
        let Stream::Plain(tcp) = self.stream else {
            bail!("already TLS");
        };
        let (stream, _key) = cmtp_client::tls::handshake(tcp, None, self.timeout)
            .await
            .context("TLS handshake")?;
        self.stream = stream;
        self.read_with(|b| Ok(reply::decode_greeting(b)?))
            .await
            .context("greeting inside TLS")?;
        self.ohai().await?;
        Ok(self)
    }

    /// Gives up the read buffer and keeps only the stream (for connections that are
    /// held open by the thousand and never read again).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Writes all of `b` (flushed: TLS buffers what it encrypts).
    pub async fn write_all(&mut self, b: &[u8]) -> Result<()> {
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(b).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| anyhow::anyhow!("write: no progress for {:?}", self.timeout))?
            .context("write")
    }

    /// Decodes one reply with `f`, reading more bytes until it has enough.
    pub async fn read_with<T>(&mut self, mut f: impl FnMut(&[u8]) -> Decoded<T>) -> Result<T> {
        loop {
            if self.end > self.start
                && let Some((v, used)) = f(&self.buf[self.start..self.end])?
            {
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return Ok(v);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                bail!("reply larger than {} bytes", self.buf.len());
            }
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut self.buf[self.end..]))
                .await
                .map_err(|_| anyhow::anyhow!("no reply within {:?}", self.timeout))?
                .context("read")?;
            if n == 0 {
                bail!("server closed the connection");
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmtp_proto::SIG_LEN;

    /// A signature full of NULs: decoders must read it by length.
    const SIG: [u8; SIG_LEN] = [0; SIG_LEN];

    #[test]
    fn mail_replies() {
        let mut s = Vec::new();
        reply::encode_general(true, &SIG, &mut s);
        assert_eq!(decode_mail_reply(&s[..10]).unwrap(), None);
        assert_eq!(
            decode_mail_reply(&s).unwrap(),
            Some((MailReply::Success, s.len()))
        );
        let mut d = Vec::new();
        reply::encode_v0(reply::DELIVERYFAILURE, &SIG, &mut d);
        assert_eq!(
            decode_mail_reply(&d).unwrap(),
            Some((MailReply::Refused("DELIVERYFAILURE".into()), d.len()))
        );
        let mut f = Vec::new();
        reply::encode_general(false, &SIG, &mut f);
        assert_eq!(
            decode_mail_reply(&f).unwrap().unwrap().0,
            MailReply::Failure
        );
    }

    #[test]
    fn key_replies() {
        let mut k = Vec::new();
        reply::encode_key(1, &[7u8; 32], &SIG, &mut k);
        assert_eq!(decode_key_reply(&k[..50]).unwrap(), None);
        assert_eq!(
            decode_key_reply(&k).unwrap(),
            Some((KeyReply::Key, k.len()))
        );
        let mut bad = k.clone();
        bad[36] = 1;
        assert!(decode_key_reply(&bad).is_err());
        let mut f = Vec::new();
        reply::encode_general(false, &SIG, &mut f);
        assert_eq!(
            decode_key_reply(&f).unwrap().unwrap().0,
            KeyReply::General("FAILURE".into())
        );
        assert_eq!(keyrequest_bytes("", "ignored"), b"KEYREQUEST\0\0");
        assert_eq!(keyrequest_bytes("bob", ""), b"KEYREQUEST\0bob\0\0");
    }

    #[test]
    fn mail_head_layout() {
        let h = MailHeader {
            version: 1,
            body_length: 5,
            dest_account: String::new(),
            dest_domain: String::new(),
            src_account: "b".into(),
            src_domain: "d".into(),
        };
        let mut out = Vec::new();
        encode_mail_head(&h, &mut out).unwrap();
        assert_eq!(&out[..5], b"MAIL\0");
        assert_eq!(&out[5..9], &1u32.to_be_bytes());
        assert_eq!(&out[13..21], &1u64.to_be_bytes());
        assert_eq!(&out[21..29], &5u64.to_be_bytes());
        assert_eq!(&out[29..], b"\0\0b\0d\0\0");
        // What we encode, cmtp-proto's server-side decoder accepts.
        let mut msg = out[5..].to_vec();
        msg.extend_from_slice(b"hello");
        let mut dec = cmtp_proto::MessageDecoder::new(cmtp_proto::MessageLimits::default());
        let mut pos = 0;
        let mut ended = false;
        while pos < msg.len() || !ended {
            let (used, ev) = dec.decode(&msg[pos..]).unwrap();
            pos += used;
            if matches!(ev, Some(cmtp_proto::MessageEvent::End)) {
                ended = true;
                break;
            }
            assert!(used > 0 || ev.is_some(), "decoder stalled at {pos}");
        }
        assert!(ended && pos == msg.len());
    }
}
