//! One client connection's I/O: buffered reads with deadlines, command framing, and
//! batched writes (mini-redis' `Connection` habit: handlers talk to it through methods).
//!
//! Replies are appended to an output buffer and written when the input holds no complete
//! command any more (so a packet of pipelined commands costs one write), or when the
//! output grows large ([`Conn::backpressure`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use cmtp_proto::{Command, CommandError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::FailureReason;
use crate::ratelimit::IpSlot;
use crate::shared::Shared;

/// Bytes read per `read` call (and the input buffer's usual size).
const READ_CHUNK: usize = 64 * 1024;
/// Buffer size of an idle connection (10,000 idle connections must stay cheap).
const IDLE_BUF: usize = 2048;
/// Output is written early once it reaches this size.
const OUT_HIGH_WATER: usize = 64 * 1024;

/// Why a connection ended other than by OBAI.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived for the idle timeout (or the peer did not read for that long).
    #[error("idle timeout")]
    Idle,
    /// The idle timeout struck in the middle of a message: FAILURE is sent.
    #[error("idle timeout in the middle of a message")]
    IdleMidMessage,
    /// The peer closed the connection in the middle of a command or message.
    #[error("peer closed mid-command")]
    Truncated,
    /// A command (`command_timeout_secs`) or message (`min_transfer_rate`) did not
    /// arrive in time, however busy the trickle: FAILURE is sent.
    #[error("command or message deadline passed")]
    Deadline,
    /// The peer did not read our output for the idle timeout: closed without another
    /// flush attempt (it would only wait as long again).
    #[error("write stalled (peer not reading)")]
    WriteStall,
    /// The TLS handshake failed or timed out: closed without a reply (after the go-ahead
    /// nothing more is said in clear).
    #[error("TLS handshake: {0}")]
    Tls(String),
}

impl ConnError {
    /// Whether the peer can still receive a last reply (FAILURE) before the close.
    pub fn peer_still_listening(&self) -> bool {
        !matches!(
            self,
            ConnError::Io(_) | ConnError::Truncated | ConnError::WriteStall | ConnError::Tls(_)
        )
    }
}

/// Whether to keep serving after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Next command.
    Continue,
    /// Flush what is pending and close.
    Close,
    /// Flush what is pending (the go-ahead of TLSSTART), then the TLS handshake, then
    /// the session starts again inside (docs/protocol.md D7).
    StartTls,
}

/// The byte stream of a connection.
enum Transport {
    /// CMTP/1 over TCP.
    Plain(TcpStream),
    /// After a TLS handshake (boxed: the TLS state is large and most connections in a
    /// load test are plain).
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while the handshake owns the socket.
    Upgrading,
}

fn upgrading() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "TLS handshake in progress",
    )
}

/// A connection's state. Fields are private: handlers use the methods.
pub struct Conn<S> {
    stream: Transport,
    inbuf: BytesMut,
    out: Vec<u8>,
    shared: Arc<Shared<S>>,
    peer: SocketAddr,
    slot: IpSlot,
    /// When the command (or message) being received must be complete; `None` between
    /// commands. Enforced in [`Conn::read_more`].
    deadline: Option<Instant>,
    /// Bytes the last read returned: a small one means a burst is over.
    last_read: usize,
    /// The OPAQUE login this connection started (OPAQUE1) and has not finished: the
    /// one piece of per-connection protocol state (docs/protocol.md D8).
    opaque_pending: Option<PendingLogin>,
}

/// An OPAQUE login between KE2 and KE3.
#[derive(Debug)]
pub struct PendingLogin {
    /// What checks KE3.
    pub state: cmtp_crypto::opaque::ServerLoginState,
    /// The stored account name when the account has a record (else the login cannot
    /// succeed: KE2 was a fake).
    pub account: Option<String>,
}

impl<S> Conn<S> {
    /// A fresh connection; its first output is the greeting.
    pub fn new(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared<S>>, slot: IpSlot) -> Self {
        let mut out = Vec::with_capacity(IDLE_BUF);
        out.extend_from_slice(&shared.greeting);
        Self {
            stream: Transport::Plain(stream),
            inbuf: BytesMut::with_capacity(IDLE_BUF),
            out,
            shared,
            peer,
            slot,
            deadline: None,
            last_read: 0,
            opaque_pending: None,
        }
    }

    /// Remembers an OPAQUE login started on this connection (replacing any other).
    pub fn set_opaque_pending(&mut self, pending: PendingLogin) {
        self.opaque_pending = Some(pending);
    }

    /// Takes the OPAQUE login started on this connection, if any: a KE3 is checked once.
    pub fn take_opaque_pending(&mut self) -> Option<PendingLogin> {
        self.opaque_pending.take()
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Transport::Tls(_))
    }

    /// The TLS handshake on this plain connection (TLSSTART's go-ahead flushed, or an
    /// implicit-TLS listener before the greeting), bounded by the idle timeout. The
    /// input must be empty: anything that came before the handshake is not part of the
    /// encrypted session (docs/protocol.md D7). Pending output (an implicit listener's
    /// greeting) is sent inside TLS afterwards.
    pub async fn start_tls(
        &mut self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> Result<(), ConnError> {
        debug_assert!(
            self.inbuf.is_empty(),
            "input before the handshake is refused earlier"
        );
        let Transport::Plain(tcp) = std::mem::replace(&mut self.stream, Transport::Upgrading)
        else {
            return Err(ConnError::Tls("the connection already uses TLS".into()));
        };
        let idle = self.shared.config.load().idle_timeout();
        let tls = tokio::time::timeout(idle, acceptor.accept(tcp))
            .await
            .map_err(|_| ConnError::Tls("timed out".into()))?
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        self.stream = Transport::Tls(Box::new(tls));
        self.inbuf.clear();
        self.deadline = None;
        // The session restarts inside TLS (D7): nothing begun in clear carries over.
        self.opaque_pending = None;
        Ok(())
    }

    /// What the connections of this server share.
    pub fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client address's limits (rate buckets, mailbox-auth failures).
    pub fn limits(&self) -> &IpSlot {
        &self.slot
    }

    /// Appends a reply made by cmtp-proto's encoders (or pre-signed by the signer).
    pub fn reply(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Appends the signed general FAILURE.
    pub fn reply_failure(&mut self) {
        self.out.extend_from_slice(&self.shared.signer.failure);
    }

    /// Answers an internal error: counted, logged, general FAILURE, and the connection
    /// closes (docs/protocol.md §7.5): the server cannot vouch for a conversation in which
    /// it failed.
    pub fn internal_failure(&mut self, what: &str, error: &dyn std::fmt::Display) -> Flow {
        tracing::error!(peer = %self.peer, error = %error, "{what}");
        self.shared.metrics.failure(FailureReason::Internal);
        self.reply_failure();
        Flow::Close
    }

    /// Writes pending output early when it has grown large (a streamed reply).
    pub async fn backpressure(&mut self) -> Result<(), ConnError> {
        if self.out.len() >= OUT_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    /// The input received and not consumed yet.
    pub fn input(&self) -> &[u8] {
        &self.inbuf
    }

    /// Marks `n` bytes of [`Conn::input`] as consumed.
    pub fn consume(&mut self, n: usize) {
        self.inbuf.advance(n);
    }

    /// Sets (or clears) the time by which the command or message being received must be
    /// complete.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Parses the next complete command from the input, if one is there. A whole command
    /// clears the deadline: the next one gets its own.
    pub fn next_command(&mut self) -> Result<Option<Command>, CommandError> {
        match Command::parse(&self.inbuf)? {
            Some((command, used)) => {
                self.inbuf.advance(used);
                self.deadline = None;
                Ok(Some(command))
            }
            None => Ok(None),
        }
    }

    /// Between commands, with the input drained: gives back the buffers of a burst that
    /// is over, and arms the command deadline when part of a command is waiting.
    pub fn settle(&mut self) {
        if self.inbuf.len() <= IDLE_BUF / 2
            && self.inbuf.capacity() > 4 * IDLE_BUF
            && self.last_read < IDLE_BUF
        {
            // A burst is over (the last read was small): do not keep its buffer while
            // (nearly) idle. A steady pipelined stream, read in large chunks, keeps it.
            let mut small = BytesMut::with_capacity(IDLE_BUF);
            small.extend_from_slice(&self.inbuf);
            self.inbuf = small;
        }
        if self.inbuf.is_empty() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            // Part of a command is here: the rest must follow within the timeout.
            self.deadline = Some(Instant::now() + self.shared.config.load().command_timeout());
        }
        if self.out.is_empty() && self.out.capacity() > 4 * IDLE_BUF {
            self.out = Vec::with_capacity(IDLE_BUF);
        }
    }

    /// Reads more input (idle timeout and deadline apply). Ok(0) = the peer closed.
    pub async fn read_more(&mut self) -> Result<usize, ConnError> {
        let idle = self.shared.config.load().idle_timeout();
        let now = Instant::now();
        let (timeout, on_timeout) = match self.deadline {
            Some(d) if d.saturating_duration_since(now) < idle => {
                (d.saturating_duration_since(now), ConnError::Deadline)
            }
            _ => (idle, ConnError::Idle),
        };
        let n = tokio::time::timeout(timeout, self.read_buf())
            .await
            .map_err(|_| on_timeout)??;
        self.shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        self.last_read = n;
        Ok(n)
    }

    /// Reads into the input buffer. When nothing is buffered and nothing can be read yet,
    /// the buffer is let go before waiting: a stalled or idle peer then holds no
    /// `READ_CHUNK` (thousands of stalled uploads pinned 66 KiB each; docs/performance.md
    /// "Memory after a spike").
    async fn read_buf(&mut self) -> std::io::Result<usize> {
        let tls = match &mut self.stream {
            Transport::Plain(_) => None,
            Transport::Tls(s) => Some(s),
            Transport::Upgrading => return Err(upgrading()),
        };
        if let Some(s) = tls {
            // rustls may hold decrypted bytes while the socket is not readable, so the
            // wait-then-allocate of plain TCP does not apply. Instead an idle connection
            // (empty input, last read small) waits with a small buffer, and a busy one
            // reads in large chunks.
            let busy = self.last_read >= IDLE_BUF / 2;
            if self.inbuf.is_empty() && !busy && self.inbuf.capacity() > IDLE_BUF {
                self.inbuf = BytesMut::with_capacity(IDLE_BUF);
            } else if self.inbuf.capacity() - self.inbuf.len()
                < if busy { READ_CHUNK / 2 } else { IDLE_BUF / 2 }
            {
                self.inbuf.reserve(READ_CHUNK);
            }
            return s.read_buf(&mut self.inbuf).await;
        }
        let Transport::Plain(stream) = &mut self.stream else {
            return Err(upgrading());
        };
        loop {
            if self.inbuf.capacity() - self.inbuf.len() < IDLE_BUF / 2 {
                self.inbuf.reserve(READ_CHUNK);
            }
            match stream.try_read_buf(&mut self.inbuf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.inbuf.is_empty() && self.inbuf.capacity() > IDLE_BUF {
                self.inbuf = BytesMut::new();
            }
            stream.readable().await?;
        }
    }

    /// Flushes pending output, then reads more (for handlers that need more bytes).
    /// EOF is [`ConnError::Truncated`]: the handler was in the middle of something.
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        match self.read_more().await {
            Ok(0) => Err(ConnError::Truncated),
            Ok(_) => Ok(()),
            Err(ConnError::Idle) => Err(ConnError::IdleMidMessage),
            Err(e) => Err(e),
        }
    }

    /// Writes the pending output.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.load().idle_timeout();
        let out = &self.out;
        let write = async {
            match &mut self.stream {
                Transport::Plain(s) => s.write_all(out).await,
                Transport::Tls(s) => {
                    // The flush hands what rustls buffered to the socket.
                    s.write_all(out).await?;
                    s.flush().await
                }
                Transport::Upgrading => Err(upgrading()),
            }
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| ConnError::WriteStall)??;
        self.shared
            .metrics
            .bytes_out
            .fetch_add(self.out.len() as u64, Relaxed);
        self.out.clear();
        Ok(())
    }

    /// Whether part of a command or message is waiting in the input.
    pub fn has_partial_input(&self) -> bool {
        !self.inbuf.is_empty()
    }

    /// Best effort at the end: sends what is pending (a last FAILURE, the SMTP refusal)
    /// and shuts the socket down, bounded by the idle timeout.
    pub async fn close(mut self) {
        let idle = self.shared.config.load().idle_timeout();
        let _ = tokio::time::timeout(idle, async {
            let _ = self.flush().await;
            // TLS: close_notify first, so the peer can tell the end from a truncation.
            let _ = match &mut self.stream {
                Transport::Plain(s) => s.shutdown().await,
                Transport::Tls(s) => s.shutdown().await,
                Transport::Upgrading => Ok(()),
            };
        })
        .await;
    }
}
