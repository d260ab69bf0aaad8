//! A tiny HTTP/1.0 responder for `/metrics` and `/health` (no framework needed for two
//! read-only pages). One request per connection, then close.
//!
//! Monitoring must keep working when someone holds connections open: each request must
//! arrive within `request_timeout_secs`, and when `max_connections` are open the oldest
//! is dropped to make room, so idle sockets can delay a scrape by at most one timeout and
//! never refuse it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cmtp_store::StoreHealth;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::config::HttpLimits;
use crate::shutdown::Shutdown;

/// What the endpoint serves, rendered on demand.
#[derive(Clone)]
pub struct Pages {
    /// The Prometheus text of `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// The store's state, for `/health`.
    pub health: Arc<dyn Fn() -> StoreHealth + Send + Sync>,
}

/// Largest request head read before answering 400.
const MAX_HEAD: usize = 8192;

/// The open connections, oldest first, so the oldest can be dropped for a new one.
#[derive(Default)]
struct Open {
    next_id: u64,
    tasks: VecDeque<(u64, AbortHandle)>,
}

/// Serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    pages: Pages,
    limits: HttpLimits,
    mut shutdown: Shutdown,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let timeout = Duration::from_secs(limits.request_timeout_secs.max(1));
    loop {
        tokio::select! {
            _ = shutdown.stopped() => {
                for (_, t) in open.lock().tasks.drain(..) {
                    t.abort();
                }
                return;
            }
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let pages = pages.clone();
                    let mut o = open.lock();
                    while o.tasks.len() >= limits.max_connections.max(1) {
                        if let Some((_, oldest)) = o.tasks.pop_front() {
                            oldest.abort();
                        }
                    }
                    let id = o.next_id;
                    o.next_id += 1;
                    let registry = open.clone();
                    let task = tokio::spawn(async move {
                        let _ = tokio::time::timeout(timeout, answer(stream, pages)).await;
                        registry.lock().tasks.retain(|(i, _)| *i != id);
                    });
                    o.tasks.push_back((id, task.abort_handle()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn answer(mut stream: TcpStream, pages: Pages) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = (pages.metrics)();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", "/health") => match (pages.health)() {
            StoreHealth::Ok => respond(&mut stream, "200 OK", "text/plain", "ok").await,
            StoreHealth::Degraded { reason, since } => {
                let ago = crate::unix_now().saturating_sub(since);
                let body =
                    format!("unhealthy: the store refuses writes ({reason}) since {ago} s\n");
                respond(&mut stream, "503 Service Unavailable", "text/plain", &body).await
            }
        },
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
