//! `cmtpd queue list | show | retry | drop`: the relay queue.
//!
//! Listing reads the store read-only (beside a running server). On the embedded store,
//! retry and drop change the running server's schedule, so they go through its control
//! socket (`<data>/control.sock`, mode 0600: whoever may use it may read the data
//! directory anyway); when no server runs they edit the store directly.
//!
//! On PostgreSQL the queue is shared by every node, so retry and drop edit the database
//! directly: a drop deletes the message (a node about to deliver it finds it gone and
//! skips it), a retry sets the note's next attempt to 0. A node reads the notes when it
//! starts; a node running on this data directory is also told through its control
//! socket, so it acts at once. Other running nodes keep their own schedule until they
//! restart (docs/scale-out.md, "Not done yet": the queue's leases).

use std::fmt::Write as _;
use std::path::Path;

use cmtp_client::terminal::{Layout, sanitize};
use cmtp_store::{EmbeddedStore, MailStore, MessageRead, Options, RELAY_QUEUE};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{AdminError, AdminStores, Result, render_message};
use crate::outbound::control::{self, CONTROL_SOCKET};
use crate::relay::QueueNote;

#[derive(Serialize)]
struct QueuedJson {
    id: u64,
    to: String,
    from: String,
    size: u64,
    queued: u64,
    attempts: u32,
    next_attempt: u64,
    last_error: String,
    bounce: bool,
}

async fn entries(store: &impl MailStore) -> Result<Vec<QueuedJson>> {
    let list = MailStore::list(store, RELAY_QUEUE).await?;
    Ok(list
        .into_iter()
        .map(|m| {
            let note = QueueNote::decode(&m.meta.note)
                .unwrap_or_else(|| QueueNote::new("?", "?", m.received, false));
            QueuedJson {
                id: m.id,
                to: note.recipient(),
                from: format!("{}@{}", m.meta.src_account, m.meta.src_domain),
                size: m.size,
                queued: note.queued,
                attempts: note.attempts,
                next_attempt: note.next,
                last_error: note.last_error,
                bounce: note.bounce,
            }
        })
        .collect())
}

/// `queue list [--json]`.
pub async fn list(store: &impl MailStore, json: bool) -> Result<String> {
    let e = entries(store).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&e).unwrap_or_default() + "\n");
    }
    if e.is_empty() {
        return Ok("the relay queue is empty\n".into());
    }
    let mut o = String::new();
    for q in &e {
        // Names and errors come from the wire or remote servers: cleaned for the terminal.
        let _ = writeln!(
            o,
            "{}  to {}  from {}  {} bytes  queued {}  attempts {}  next {}{}",
            q.id,
            sanitize(&q.to, Layout::Line),
            sanitize(&q.from, Layout::Line),
            q.size,
            q.queued,
            q.attempts,
            q.next_attempt,
            if q.last_error.is_empty() {
                String::new()
            } else {
                format!("  last error: {}", sanitize(&q.last_error, Layout::Line))
            }
        );
    }
    let _ = writeln!(o, "{} queued", e.len());
    Ok(o)
}

/// `queue show ID`.
pub async fn show(store: &impl MailStore, id: u64) -> Result<String> {
    let Some((info, mut reader)) = store.open(RELAY_QUEUE, id).await? else {
        return Err(no_such(id));
    };
    let mut raw = Vec::new();
    while let Some(chunk) = reader.read_chunk(1 << 20).await? {
        raw.extend_from_slice(&chunk);
    }
    let mut o = String::new();
    if let Some(n) = QueueNote::decode(&info.meta.note) {
        let _ = writeln!(
            o,
            "to {}\nqueued {}  attempts {}  next attempt {}\nlast error: {}\n",
            n.recipient(),
            n.queued,
            n.attempts,
            n.next,
            if n.last_error.is_empty() {
                "none"
            } else {
                &n.last_error
            }
        );
    }
    o.push_str(&render_message(&raw, info.id, info.received, None));
    Ok(sanitize(&o, Layout::Text))
}

fn no_such(id: u64) -> AdminError {
    AdminError::NoSuchMessage {
        mailbox: "(relay queue)".into(),
        id,
    }
}

/// Asks the running server; `None` when none listens on the control socket.
async fn ask_server(data_dir: &Path, line: &str) -> Result<Option<u64>> {
    let path = data_dir.join(CONTROL_SOCKET);
    let Ok(mut s) = tokio::net::UnixStream::connect(&path).await else {
        return Ok(None);
    };
    let io = |e| AdminError::Io {
        path: path.display().to_string(),
        source: e,
    };
    s.write_all(format!("{line}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).await.map_err(io)?;
    control::parse_answer(&answer)
        .map(Some)
        .map_err(|e| AdminError::BadImport(format!("the server answered: {e}")))
}

/// Opens the store for writing when no server runs (it holds the lock otherwise).
fn open_for_writing(data_dir: &Path) -> Result<EmbeddedStore> {
    if !data_dir.join("mail").is_dir() {
        return Err(AdminError::Io {
            path: data_dir.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no mail store here"),
        });
    }
    Ok(EmbeddedStore::open(data_dir, Options::default())?)
}

/// Sets the next attempt of one queued message (or all) to 0 in `store`; the number
/// changed.
async fn retry_in(store: &impl MailStore, id: Option<u64>) -> Result<u64> {
    let mut n = 0;
    for m in MailStore::list(store, RELAY_QUEUE).await? {
        if id.is_some_and(|x| x != m.id) {
            continue;
        }
        if let Some(mut note) = QueueNote::decode(&m.meta.note) {
            note.next = 0;
            if store.set_note(RELAY_QUEUE, m.id, note.encode()).await? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// `queue retry ID | --all`.
pub async fn retry(st: &impl AdminStores, data_dir: &Path, id: Option<u64>) -> Result<String> {
    let line = match id {
        Some(id) => format!("retry {id}"),
        None => "retry all".into(),
    };
    let n = if let Some(db) = st.shared_mail() {
        let n = retry_in(db, id).await?;
        // A node on this data directory retries at once; it answers for its own
        // schedule only, so the database's count is the one shown.
        let _ = ask_server(data_dir, &line).await;
        n
    } else {
        match ask_server(data_dir, &line).await? {
            Some(n) => n,
            None => retry_in(&open_for_writing(data_dir)?, id).await?,
        }
    };
    if let Some(id) = id
        && n == 0
    {
        return Err(no_such(id));
    }
    Ok(format!("{n} message(s) will be tried now\n"))
}

/// `queue drop ID`.
pub async fn drop(st: &impl AdminStores, data_dir: &Path, id: u64) -> Result<String> {
    let n = if let Some(db) = st.shared_mail() {
        let n = u64::from(db.delete(RELAY_QUEUE, id).await?);
        // A node on this data directory forgets it now (its delete finds nothing).
        let _ = ask_server(data_dir, &format!("drop {id}")).await;
        n
    } else {
        match ask_server(data_dir, &format!("drop {id}")).await? {
            Some(n) => n,
            None => u64::from(open_for_writing(data_dir)?.delete(RELAY_QUEUE, id).await?),
        }
    };
    if n == 0 {
        return Err(no_such(id));
    }
    Ok(format!("message {id} dropped from the queue\n"))
}
