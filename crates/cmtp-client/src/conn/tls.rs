//! TLS on a [`Connection`] (docs/protocol.md D7): the implicit-TLS connect and the
//! in-band upgrade `TLSSTART`, both checking the server's raw public key against the pin.

use std::net::SocketAddr;

use cmtp_crypto::{PublicKey, Signature};
use cmtp_proto::Command;
use cmtp_proto::reply::decode_general;
use tokio::net::TcpStream;

use super::{Connection, Timeouts};
use crate::error::{ClientError, Result};
use crate::tls::Stream;

impl Connection {
    /// Connects to an implicit-TLS listener (docs/protocol.md D7): the TLS handshake
    /// first, the server's key checked against `expected` (trust on first use when
    /// `None`: [`Connection::tls_key`] is then the key to pin), then the greeting.
    pub async fn connect_tls(
        server: &str,
        expected: Option<PublicKey>,
        timeouts: Timeouts,
    ) -> Result<Connection> {
        let plain = Self::connect_tcp(server, timeouts).await?;
        let peer = plain
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = plain.set_nodelay(true);
        let (tls, key) = handshake(plain, peer, expected, timeouts).await?;
        Self::greet(tls, peer, timeouts, Some(key)).await
    }

    /// `TLSSTART` (docs/protocol.md D7), for a server whose OHAI answer offered `TLS`:
    /// after its signed SUCCESS, the TLS handshake, the server's key checked against
    /// `expected` (or taken on first use when `None`; see [`Connection::tls_key`]), then
    /// the session starts again: a new greeting is read, and the caller says OHAI again.
    /// Bytes that arrived after the SUCCESS but before the handshake are refused (they
    /// can only be injected by someone on the path).
    pub async fn start_tls(mut self, expected: Option<PublicKey>) -> Result<Connection> {
        const STEP: &str = "reading the answer to TLSSTART";
        if self.tls_key.is_some() {
            return Err(self.proto(STEP, "the connection already uses TLS"));
        }
        self.send("sending TLSSTART", Command::TlsStart).await?;
        let g = self.read_reply(STEP, decode_general).await?;
        if !g.ok {
            if let Some(key) = expected.or(self.server_key) {
                key.verify(g.signed_bytes(), &Signature::from_array(g.sig))
                    .map_err(|_| ClientError::BadSignature { what: "reply" })?;
            }
            return Err(ClientError::ServerFailure { step: STEP });
        }
        if !self.inbuf.is_empty() {
            return Err(self.proto(
                STEP,
                "bytes after the go-ahead, before the TLS handshake (injected on the path?)",
            ));
        }
        let Connection {
            rd,
            wr,
            peer,
            timeouts,
            dialect,
            max_payload,
            ..
        } = self;
        let Stream::Plain(tcp) = rd.unsplit(wr) else {
            unreachable!("tls_key is set for every TLS stream");
        };
        let (tls, key) = handshake(tcp, peer, expected, timeouts).await?;
        // The go-ahead's signature is checked with the key the handshake proved (the pin,
        // when there is one): a changed key is then reported as such, not as a bad
        // signature.
        key.verify(g.signed_bytes(), &Signature::from_array(g.sig))
            .map_err(|_| ClientError::BadSignature { what: "reply" })?;
        let mut c = Self::greet(tls, peer, timeouts, Some(key)).await?;
        c.dialect = dialect;
        c.max_payload = max_payload;
        Ok(c)
    }

    /// The server key the TLS handshake proved, or `None` without TLS.
    pub fn tls_key(&self) -> Option<&PublicKey> {
        self.tls_key.as_ref()
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls_key.is_some()
    }
}

/// The client side of a TLS handshake on `tcp`, bounded by the I/O timeout. A key other
/// than `expected` is [`ClientError::ServerKeyChanged`] (`server` is the address here;
/// the session layer names the server as configured); any other failure
/// [`ClientError::Tls`].
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    expected: Option<PublicKey>,
    timeouts: Timeouts,
) -> Result<(Stream, PublicKey)> {
    use crate::tls::HandshakeError as H;
    crate::tls::handshake(tcp, expected, timeouts.io)
        .await
        .map_err(|e| match e {
            H::KeyMismatch { pinned, presented } => ClientError::ServerKeyChanged {
                server: peer.to_string(),
                pinned,
                presented,
            },
            H::Timeout(after) => ClientError::Timeout {
                step: "the TLS handshake",
                after,
                peer,
            },
            e => ClientError::Tls {
                peer,
                detail: e.to_string(),
            },
        })
}
