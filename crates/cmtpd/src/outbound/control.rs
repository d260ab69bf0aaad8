//! The control socket (`<data>/control.sock`, mode 0600): how `cmtpd queue retry|drop`
//! reach the running server's schedule. One request line, one answer line:
//! `retry ID` | `retry all` | `drop ID` → `ok N` (N messages affected) or `error TEXT`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::Queue;
use crate::shared::{Backend, Shared};
use crate::shutdown::Shutdown;

/// The socket's file name in the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Longest request line accepted.
const MAX_LINE: usize = 64;

/// Reads an answer line: `Ok(N)` for `ok N`.
pub fn parse_answer(line: &str) -> Result<u64, String> {
    let line = line.trim_end();
    match line.strip_prefix("ok ") {
        Some(n) => n.parse().map_err(|_| format!("unreadable answer {line:?}")),
        None => Err(line.strip_prefix("error ").unwrap_or(line).to_owned()),
    }
}

/// Binds the socket (replacing a stale one left by a crash). `None` (logged) when it
/// cannot: the server runs without it.
pub fn bind(data_dir: &Path) -> Option<(UnixListener, PathBuf)> {
    let path = data_dir.join(CONTROL_SOCKET);
    // A socket left by a killed server: nobody answers on it any more.
    if std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    match UnixListener::bind(&path) {
        Ok(l) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            Some((l, path))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot open the control socket; `cmtpd queue retry/drop` need the server stopped");
            None
        }
    }
}

/// Serves the socket until shutdown.
pub(crate) async fn serve<S: Backend>(
    sh: Arc<Shared<S>>,
    queue: Arc<Queue>,
    listener: UnixListener,
    path: PathBuf,
    mut stop: Shutdown,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.stopped() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let (sh, queue) = (sh.clone(), queue.clone());
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd).take(MAX_LINE as u64);
            let answer = match rd.read_line(&mut line).await {
                Ok(_) => match handle(&sh, &queue, line.trim_end()).await {
                    Ok(n) => format!("ok {n}\n"),
                    Err(e) => format!("error {e}\n"),
                },
                Err(e) => format!("error {e}\n"),
            };
            let _ = wr.write_all(answer.as_bytes()).await;
        });
    }
    let _ = std::fs::remove_file(path);
}

async fn handle<S: Backend>(sh: &Shared<S>, queue: &Queue, line: &str) -> Result<u64, String> {
    let mut words = line.split(' ');
    let verb = words.next().unwrap_or("");
    let arg = words.next().unwrap_or("");
    let id = || arg.parse::<u64>().map_err(|_| format!("bad id {arg:?}"));
    match verb {
        "retry" => {
            let target = if arg == "all" { None } else { Some(id()?) };
            let n = queue.state.lock().retry_now(target);
            queue.wake.notify_one();
            tracing::info!(messages = n, "queue retry asked by the operator");
            Ok(n as u64)
        }
        "drop" => {
            let id = id()?;
            let existed = sh
                .store
                .delete(cmtp_store::RELAY_QUEUE, id)
                .await
                .map_err(|e| e.to_string())?;
            queue.state.lock().remove(id);
            tracing::info!(id, "queued message dropped by the operator");
            Ok(u64::from(existed))
        }
        _ => Err(format!("unknown request {verb:?}")),
    }
}
