//! Serving one accepted connection: the command loop, and how each way of ending it is
//! answered and counted.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::cmd;
use crate::connection::{Conn, ConnError, Flow};
use crate::metrics::FailureReason;
use crate::ratelimit::IpSlot;
use crate::shared::{Backend, Shared};
use crate::shutdown::Shutdown;

/// Serves one accepted connection until it closes (or shutdown at a command boundary).
///
/// With `implicit_tls` (a `[tls] listen` address) the TLS handshake comes first and the
/// greeting is the first thing said inside it.
pub async fn serve<S: Backend>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared<S>>,
    slot: IpSlot,
    shutdown: Shutdown,
    implicit_tls: bool,
) {
    let mut c = Conn::new(stream, peer, shared.clone(), slot);
    tracing::debug!(%peer, implicit_tls, "connection opened");
    let result = match (&shared.tls, implicit_tls) {
        (Some(acceptor), true) => match c.start_tls(acceptor).await {
            Ok(()) => run(&mut c, shutdown).await,
            Err(e) => Err(e),
        },
        _ => run(&mut c, shutdown).await,
    };
    if matches!(result, Err(ConnError::Tls(_))) {
        shared.metrics.failure(FailureReason::TlsHandshake);
    }
    // Whether a last FAILURE says why the connection closes.
    let say_failure = match &result {
        Ok(()) => false,
        Err(ConnError::Idle) => {
            tracing::debug!(%peer, "idle timeout");
            // Half a command: say why the connection closes.
            c.has_partial_input()
        }
        Err(ConnError::IdleMidMessage) => {
            tracing::debug!(%peer, "idle timeout inside a message");
            true
        }
        Err(ConnError::Deadline) => {
            tracing::debug!(%peer, "command or message too slow");
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection ended");
            false
        }
    };
    if matches!(
        result,
        Err(ConnError::Idle | ConnError::IdleMidMessage | ConnError::Deadline)
    ) {
        shared.metrics.failure(FailureReason::IdleTimeout);
    }
    if say_failure {
        c.reply_failure();
    }
    if result
        .as_ref()
        .err()
        .is_none_or(ConnError::peer_still_listening)
    {
        c.close().await;
    }
    tracing::debug!(%peer, "connection closed");
}

async fn run<S: Backend>(c: &mut Conn<S>, mut shutdown: Shutdown) -> Result<(), ConnError> {
    loop {
        loop {
            if shutdown.is_stopping() {
                return Ok(());
            }
            match c.next_command() {
                Ok(Some(command)) => match cmd::dispatch(c, command).await? {
                    Flow::Close => return Ok(()),
                    Flow::Continue => c.backpressure().await?,
                    Flow::StartTls => {
                        c.flush().await?;
                        let Some(acceptor) = c.shared().tls.clone() else {
                            return Err(ConnError::Tls("not configured".into()));
                        };
                        c.start_tls(&acceptor).await?;
                        // The session starts again inside: a new greeting, then commands.
                        let greeting = c.shared().greeting.clone();
                        c.reply(&greeting);
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = %c.peer(), error = %e, "framing error");
                    c.shared().metrics.failure(FailureReason::Framing);
                    c.reply_failure();
                    return Ok(());
                }
            }
        }
        // Input drained: send everything answered so far, then wait for more.
        c.flush().await?;
        c.settle();
        let n = tokio::select! {
            r = c.read_more() => r?,
            _ = shutdown.stopped() => return Ok(()),
        };
        if n == 0 {
            return if c.has_partial_input() {
                Err(ConnError::Truncated)
            } else {
                Ok(())
            };
        }
    }
}
