//! One client connection: buffered reads, pipelined command parsing, batched writes.
//!
//! Replies are appended to an output buffer and written when the input buffer holds no
//! complete command any more (so a packet of pipelined commands costs one write), or
//! when the output grows large.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use cmtp_proto::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::cmd;
use crate::metrics::{CommandKind, FailureReason};
use crate::ratelimit::{Class, IpSlot};
use crate::server::Shared;

/// Bytes read per `read` call (and the input buffer's usual size).
const READ_CHUNK: usize = 64 * 1024;
/// Buffer size of an idle connection (10,000 idle connections must stay cheap).
const IDLE_BUF: usize = 2048;
/// Output is written early once it reaches this size.
pub(crate) const OUT_HIGH_WATER: usize = 64 * 1024;

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
}

/// Whether to keep serving after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Next command.
    Continue,
    /// Flush what is pending and close.
    Close,
}

/// A connection's state.
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) inbuf: BytesMut,
    pub(crate) out: Vec<u8>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) slot: IpSlot,
    /// When the command (or message) being received must be complete; `None` between
    /// commands. Enforced in [`Conn::read_more`].
    pub(crate) deadline: Option<Instant>,
    /// Bytes the last read returned: a small one means a burst is over.
    last_read: usize,
}

/// Serves one accepted connection until it closes (or shutdown at a command boundary).
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: IpSlot,
    stop: watch::Receiver<bool>,
) {
    let mut c = Conn {
        stream,
        inbuf: BytesMut::with_capacity(IDLE_BUF),
        out: Vec::with_capacity(IDLE_BUF),
        shared,
        peer,
        slot,
        deadline: None,
        last_read: 0,
    };
    c.out.extend_from_slice(&c.shared.greeting);
    tracing::debug!(%peer, "connection opened");
    let result = c.run(stop).await;
    match &result {
        Ok(()) => {}
        Err(ConnError::Idle) => {
            c.shared.metrics.failure(FailureReason::IdleTimeout);
            tracing::debug!(%peer, "idle timeout");
            if !c.inbuf.is_empty() {
                // Half a command: say why the connection closes.
                c.reply_failure();
            }
        }
        Err(ConnError::IdleMidMessage) => {
            c.shared.metrics.failure(FailureReason::IdleTimeout);
            tracing::debug!(%peer, "idle timeout inside a message");
            c.reply_failure();
        }
        Err(ConnError::Deadline) => {
            c.shared.metrics.failure(FailureReason::IdleTimeout);
            tracing::debug!(%peer, "command or message too slow");
            c.reply_failure();
        }
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended"),
    }
    if !matches!(
        result,
        Err(ConnError::Io(_) | ConnError::Truncated | ConnError::WriteStall)
    ) {
        // Best effort: the last reply (FAILURE, SMTP refusal) goes out before closing.
        let _ = tokio::time::timeout(c.shared.config.idle_timeout(), async {
            let _ = c.flush().await;
            let _ = c.stream.shutdown().await;
        })
        .await;
    }
    tracing::debug!(%peer, "connection closed");
}

impl Conn {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), ConnError> {
        loop {
            loop {
                if *stop.borrow() {
                    return Ok(());
                }
                match Command::parse(&self.inbuf) {
                    Ok(Some((command, used))) => {
                        self.inbuf.advance(used);
                        // A whole command arrived: the next one gets its own deadline.
                        self.deadline = None;
                        if self.dispatch(command).await? == Flow::Close {
                            return Ok(());
                        }
                        if self.out.len() >= OUT_HIGH_WATER {
                            self.flush().await?;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "framing error");
                        self.shared.metrics.failure(FailureReason::Framing);
                        self.reply_failure();
                        return Ok(());
                    }
                }
            }
            // Input drained: send everything answered so far, then wait for more.
            self.flush().await?;
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
                self.deadline = Some(Instant::now() + self.shared.config.command_timeout());
            }
            if self.out.capacity() > 4 * IDLE_BUF {
                self.out = Vec::with_capacity(IDLE_BUF);
            }
            let n = tokio::select! {
                r = self.read_more() => r?,
                _ = crate::server::stopped(&mut stop) => return Ok(()),
            };
            if n == 0 {
                return if self.inbuf.is_empty() {
                    Ok(())
                } else {
                    Err(ConnError::Truncated)
                };
            }
        }
    }

    /// Reads more input (idle timeout applies). Ok(0) = the peer closed.
    pub(crate) async fn read_more(&mut self) -> Result<usize, ConnError> {
        if self.inbuf.capacity() - self.inbuf.len() < IDLE_BUF / 2 {
            self.inbuf.reserve(READ_CHUNK);
        }
        let idle = self.shared.config.idle_timeout();
        let now = Instant::now();
        let (timeout, on_timeout) = match self.deadline {
            Some(d) if d.saturating_duration_since(now) < idle => {
                (d.saturating_duration_since(now), ConnError::Deadline)
            }
            _ => (idle, ConnError::Idle),
        };
        let n = tokio::time::timeout(timeout, self.stream.read_buf(&mut self.inbuf))
            .await
            .map_err(|_| on_timeout)??;
        self.shared.metrics.bytes_in.fetch_add(n as u64, Relaxed);
        self.last_read = n;
        Ok(n)
    }

    /// Flushes pending output, then reads more (for handlers that need more bytes).
    /// EOF is [`ConnError::Truncated`]: the handler was in the middle of something.
    pub(crate) async fn fill(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        match self.read_more().await {
            Ok(0) => Err(ConnError::Truncated),
            Ok(_) => Ok(()),
            Err(ConnError::Idle) => Err(ConnError::IdleMidMessage),
            Err(e) => Err(e),
        }
    }

    /// Writes the pending output.
    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.shared.config.idle_timeout();
        tokio::time::timeout(timeout, self.stream.write_all(&self.out))
            .await
            .map_err(|_| ConnError::WriteStall)??;
        self.shared
            .metrics
            .bytes_out
            .fetch_add(self.out.len() as u64, Relaxed);
        self.out.clear();
        Ok(())
    }

    /// Appends the signed general FAILURE.
    pub(crate) fn reply_failure(&mut self) {
        self.out.extend_from_slice(&self.shared.signer.failure);
    }

    async fn dispatch(&mut self, command: Command) -> Result<Flow, ConnError> {
        let (kind, class) = match &command {
            Command::Empty => (CommandKind::Empty, None),
            Command::Ohai => (CommandKind::Ohai, Some(Class::Any)),
            Command::Noop => (CommandKind::Noop, Some(Class::Any)),
            Command::Help => (CommandKind::Help, Some(Class::Any)),
            Command::Obai => (CommandKind::Obai, None),
            Command::Smtp(_) => (CommandKind::Smtp, None),
            Command::KeyRequest { user, .. } if user.is_empty() => {
                (CommandKind::KeyRequest, Some(Class::Any))
            }
            Command::KeyRequest { .. } => (CommandKind::KeyRequest, Some(Class::KeyRequest)),
            Command::Login { .. } => (CommandKind::Login, Some(Class::Login)),
            Command::Mail => (CommandKind::Mail, Some(Class::Any)),
            Command::MboxList(_) => (CommandKind::MboxList, Some(Class::Any)),
            Command::MboxFetch(_) => (CommandKind::MboxFetch, Some(Class::Any)),
            Command::MboxDelete(_) => (CommandKind::MboxDel, Some(Class::Any)),
        };
        self.shared.metrics.command(kind);
        if let Some(class) = class
            && !self.slot.entry.allow(class)
        {
            self.shared.metrics.failure(FailureReason::RateLimited);
            tracing::debug!(peer = %self.peer, command = kind.label(), "rate limited");
            self.reply_failure();
            // A refused MAIL leaves its message unread: framing is lost.
            return Ok(if kind == CommandKind::Mail {
                Flow::Close
            } else {
                Flow::Continue
            });
        }
        let sh = &self.shared;
        match command {
            Command::Empty => {}
            Command::Ohai => self.out.extend_from_slice(&sh.ohai),
            Command::Noop => self.out.extend_from_slice(&sh.signer.success),
            Command::Help => self.out.extend_from_slice(&sh.signer.help),
            Command::Obai => return Ok(Flow::Close),
            Command::Smtp(verb) => {
                tracing::debug!(peer = %self.peer, %verb, "SMTP client refused");
                sh.metrics.failure(FailureReason::Smtp);
                self.out.extend_from_slice(cmtp_proto::reply::SMTP_REFUSAL);
                return Ok(Flow::Close);
            }
            Command::KeyRequest { user, domain } => cmd::keyrequest(self, &user, &domain).await,
            Command::Login { user } => cmd::login(self, &user),
            Command::Mail => return cmd::mail(self).await,
            Command::MboxList(r) => return cmd::mbox(self, cmtp_proto::MboxKind::List, r).await,
            Command::MboxFetch(r) => return cmd::mbox(self, cmtp_proto::MboxKind::Fetch, r).await,
            Command::MboxDelete(r) => {
                return cmd::mbox(self, cmtp_proto::MboxKind::Delete, r).await;
            }
        }
        Ok(Flow::Continue)
    }
}
