//! The admin subcommands (user, key, mailbox), usable while the server runs on the same
//! data directory: users are written atomically and read by the server on every lookup;
//! mail is opened read-only.
//!
//! Each function returns the text to print, so the binary stays a thin shell.

use std::fmt::Write as _;
use std::path::Path;

use cmtp_client::terminal::{Layout, sanitize};
use cmtp_crypto::KeyPair;
use cmtp_proto::{AttachmentPlain, Body, MessageDecoder, MessageEvent, MessageLimits};
use cmtp_store::{MailStore, MessageRead};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::keys;

pub mod copy;
pub mod domain;
pub mod format;
pub mod queue;
mod stores;
mod user;

pub use stores::{AdminStores, Embedded};

pub use user::{
    Added, init, password_from_reader, require_data_dir, stored_name, user_add, user_import,
    user_list, user_remove,
};

/// Errors of the admin subcommands.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A name breaking the spec §2 rule.
    #[error("invalid account name {0:?}: {1}")]
    InvalidName(String, cmtp_proto::NameError),
    /// The account already exists.
    #[error("user {0:?} already exists")]
    Exists(String),
    /// No such account.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// No such message.
    #[error("no message {id} in mailbox {mailbox:?}")]
    NoSuchMessage {
        /// Mailbox.
        mailbox: String,
        /// Id.
        id: u64,
    },
    /// An empty password was given.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// The strength estimate calls the password weak.
    #[error(
        "the password is too weak (strength {score} of 4, at least {min} needed){feedback}; \
         choose a longer one (several unrelated words), or pass --allow-weak-password"
    )]
    WeakPassword {
        /// zxcvbn's score, 0–4.
        score: u8,
        /// The least score accepted.
        min: u8,
        /// zxcvbn's warning and suggestions, prefixed with ": ", or empty.
        feedback: String,
    },
    /// The data directory does not exist (only `serve` and `init` create it).
    #[error(
        "no data directory at {path} ({origin}): run `cmtpd init` or `cmtpd serve` to create \
         one, or name the server's with --config FILE or --data-dir DIR"
    )]
    NoDataDir {
        /// The directory looked for.
        path: String,
        /// Where that path came from.
        origin: String,
    },
    /// A file or directory could not be read or created.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error underneath.
        source: std::io::Error,
    },
    /// `store copy`: a server runs on the source.
    #[error(
        "the embedded store in {0} is in use (a `cmtpd serve` runs on it): stop the server \
         first, so that the copy is consistent"
    )]
    SourceInUse(String),
    /// `store copy`: the target holds data.
    #[error(
        "the target store is not empty: a copy goes only into an empty database (drop and \
         create it again, then run `cmtpd db migrate`)"
    )]
    TargetNotEmpty,
    /// An imported file is not what it should be.
    #[error("{0}")]
    BadImport(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] cmtp_store::StoreError),
    /// Server key problem.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// Crypto failed.
    #[error(transparent)]
    Crypto(#[from] cmtp_crypto::CryptoError),
}

/// Result of the admin functions.
pub type Result<T> = std::result::Result<T, AdminError>;

fn check_name(name: &str) -> Result<()> {
    cmtp_proto::validate_name(name).map_err(|e| AdminError::InvalidName(name.to_owned(), e))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| AdminError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `key show`: the server key's fingerprint (as `cmtp` shows it) and its hex; fails when
/// there is no key yet.
pub fn key_show(data_dir: &Path, json: bool) -> Result<String> {
    let pk = keys::load(data_dir)?.public();
    Ok(if json {
        let mut s = serde_json::json!({
            "fingerprint": pk.fingerprint(),
            "public_key": pk.to_hex(),
        })
        .to_string();
        s.push('\n');
        s
    } else {
        format!(
            "fingerprint: {}\npublic key:  {}\n",
            pk.fingerprint(),
            pk.to_hex()
        )
    })
}

/// `mailbox stats --json`: the log figures for the embedded store, the database's size
/// for PostgreSQL (each backend's own measure of what the mail costs on disk).
#[derive(Serialize)]
struct StatsJson {
    messages: u64,
    bytes: u64,
    #[serde(flatten)]
    disk: DiskJson,
    mailboxes: std::collections::BTreeMap<String, MailboxJson>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DiskJson {
    Log {
        segments: u64,
        log_bytes: u64,
        live_bytes: u64,
        dead_bytes: u64,
        blobs: u64,
        blob_bytes: u64,
    },
    Database {
        database_bytes: u64,
    },
}

#[derive(Serialize)]
struct MailboxJson {
    messages: u64,
    bytes: u64,
}

/// `mailbox stats`: messages and bytes per mailbox; then, for the embedded store, its
/// log segments and blobs, for PostgreSQL the database's size (`pg_database_size`:
/// every table, index and not yet vacuumed row).
pub fn mailbox_stats(st: &impl AdminStores, json: bool) -> Result<String> {
    let s = st.mail()?.stats()?;
    let disk = match st.database_size()? {
        Some(database_bytes) => DiskJson::Database { database_bytes },
        None => DiskJson::Log {
            segments: s.segments,
            log_bytes: s.log_bytes,
            live_bytes: s.live_bytes,
            dead_bytes: s.dead_bytes,
            blobs: s.blobs,
            blob_bytes: s.blob_bytes,
        },
    };
    if json {
        let j = StatsJson {
            messages: s.messages,
            bytes: s.bytes,
            disk,
            mailboxes: s
                .mailboxes
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        MailboxJson {
                            messages: v.messages,
                            bytes: v.bytes,
                        },
                    )
                })
                .collect(),
        };
        return Ok(serde_json::to_string_pretty(&j).unwrap_or_default() + "\n");
    }
    let mut o = match disk {
        DiskJson::Log { .. } => format!(
            "{}, {}; {} ({}: {} live, {} dead); {} ({})\n",
            format::count(s.messages, "message", "messages"),
            format::size(s.bytes),
            format::count(s.segments, "segment", "segments"),
            format::size(s.log_bytes),
            format::size(s.live_bytes),
            format::size(s.dead_bytes),
            format::count(s.blobs, "blob", "blobs"),
            format::size(s.blob_bytes)
        ),
        DiskJson::Database { database_bytes } => format!(
            "{}, {}; database {} on disk\n",
            format::count(s.messages, "message", "messages"),
            format::size(s.bytes),
            format::size(database_bytes)
        ),
    };
    for (name, m) in &s.mailboxes {
        let shown = if name.is_empty() {
            "(server)"
        } else if name == cmtp_store::RELAY_QUEUE {
            "(relay queue)"
        } else {
            name
        };
        let _ = writeln!(
            o,
            "  {shown}: {}, {}",
            format::count(m.messages, "message", "messages"),
            format::size(m.bytes)
        );
    }
    Ok(o)
}

#[derive(Serialize)]
struct MessageJson {
    id: u64,
    received: u64,
    size: u64,
    version: u32,
    attachments: u32,
    from: String,
}

/// `mailbox list [ACCOUNT]` (default: the server's own mailbox): a table with human
/// sizes and dates, or JSON (exact numbers, Unix times) with `json`.
pub async fn mailbox_list(
    st: &impl AdminStores,
    account: Option<&str>,
    json: bool,
) -> Result<String> {
    let mailbox = match account {
        Some(a) => stored_name(st.users()?, a)?,
        None => String::new(),
    };
    let list = MailStore::list(st.mail()?, &mailbox).await?;
    // Sender names come from the wire: never let them drive the operator's terminal.
    let rows: Vec<MessageJson> = list
        .into_iter()
        .map(|m| MessageJson {
            id: m.id,
            received: m.received,
            size: m.size,
            version: m.meta.version,
            attachments: m.meta.attachment_count,
            from: format!(
                "{}@{}",
                sanitize(&m.meta.src_account, Layout::Line),
                sanitize(&m.meta.src_domain, Layout::Line)
            ),
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n");
    }
    if rows.is_empty() {
        return Ok("no messages\n".to_owned());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                format::date(m.received),
                format::size(m.size),
                format!("v{}", m.version),
                format::count(u64::from(m.attachments), "attachment", "attachments"),
                m.from.clone(),
            ]
        })
        .collect();
    let mut o = format::table(
        &["ID", "RECEIVED (UTC)", "SIZE", "VER", "ATTACHMENTS", "FROM"],
        &table,
    );
    let total: u64 = rows.iter().map(|m| m.size).sum();
    let _ = writeln!(
        o,
        "{}, {}",
        format::count(rows.len() as u64, "message", "messages"),
        format::size(total)
    );
    Ok(o)
}

/// `mailbox show ID [--account A]`: envelope, log and — for the server's own mailbox —
/// the body (version 1 opened with the server key from `data_dir`, version 0 shown as
/// text).
pub async fn mailbox_show(
    st: &impl AdminStores,
    data_dir: &Path,
    account: Option<&str>,
    id: u64,
) -> Result<String> {
    let mailbox = account.unwrap_or("");
    if !mailbox.is_empty() {
        check_name(mailbox)?;
    }
    let Some((info, mut reader)) = st.mail()?.open(mailbox, id).await? else {
        return Err(AdminError::NoSuchMessage {
            mailbox: mailbox.to_owned(),
            id,
        });
    };
    let mut raw = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(1 << 26));
    while let Some(chunk) = reader.read_chunk(1 << 20).await? {
        raw.extend_from_slice(&chunk);
    }
    let server_key = if mailbox.is_empty() {
        // Load only: this may run beside the server, which owns the key's creation.
        Some(keys::load(data_dir)?)
    } else {
        None
    };
    // Everything shown comes from the sender (names, log, subject, text): cleaned the
    // way `cmtp` cleans what it prints.
    let shown = render_message(&raw, info.id, info.received, server_key.as_ref());
    Ok(sanitize(&shown, Layout::Text))
}

/// Pretty-prints a stored message; opens sealed parts when `key` is given.
pub(crate) fn render_message(raw: &[u8], id: u64, received: u64, key: Option<&KeyPair>) -> String {
    let mut o = format!(
        "message {id}, received {} UTC, {}\n",
        format::date(received),
        format::size(raw.len() as u64)
    );
    let mut dec = MessageDecoder::new(MessageLimits::UNLIMITED);
    let (mut log, mut body) = (Vec::new(), Vec::new());
    let mut atts: Vec<Vec<u8>> = Vec::new();
    let mut env = None;
    let mut pos = 0;
    loop {
        match dec.decode(&raw[pos..]) {
            Ok((n, ev)) => {
                match ev {
                    Some(MessageEvent::Envelope(e)) => env = Some(e),
                    Some(MessageEvent::Log(b)) => log.extend_from_slice(b),
                    Some(MessageEvent::Body(b)) => body.extend_from_slice(b),
                    Some(MessageEvent::AttachmentStart { .. }) => atts.push(Vec::new()),
                    Some(MessageEvent::Attachment(b)) => {
                        if let Some(a) = atts.last_mut() {
                            a.extend_from_slice(b);
                        }
                    }
                    Some(MessageEvent::End) => break,
                    None if n == 0 => {
                        o.push_str("(stored message is truncated)\n");
                        break;
                    }
                    None => {}
                }
                pos += n;
            }
            Err(e) => {
                let _ = writeln!(o, "(stored message does not decode: {e})");
                break;
            }
        }
    }
    let Some(env) = env else { return o };
    let _ = writeln!(
        o,
        "from: {}@{}\nto: {}@{}\nversion: {}\nattachments: {}",
        env.src_account,
        env.src_domain,
        env.dest_account,
        env.dest_domain,
        env.version,
        env.attachment_count
    );
    for entry in log.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let _ = writeln!(o, "log: {}", String::from_utf8_lossy(entry));
    }
    let open = |ct: &[u8]| -> Option<Zeroizing<Vec<u8>>> {
        match env.version {
            0 => Some(Zeroizing::new(ct.to_vec())),
            v => key.and_then(|k| cmtp_crypto::open_for(v, ct, k).ok()),
        }
    };
    match open(&body) {
        Some(plain) => match Body::decode(&plain) {
            Body::Internal(b) => {
                let _ = writeln!(
                    o,
                    "date: {}\nsubject: {}\nreply-to: {}\ncc: {}\n\n{}",
                    b.timestamp,
                    b.subject,
                    b.reply_to,
                    b.cc.join(", "),
                    b.text
                );
            }
            Body::Legacy(t) => {
                let _ = writeln!(o, "\n{t}");
            }
        },
        None => {
            let _ = writeln!(
                o,
                "\n(body: {} bytes, sealed; only the server's own mail can be opened here)",
                body.len()
            );
        }
    }
    for (i, a) in atts.iter().enumerate() {
        match open(a).and_then(|p| AttachmentPlain::decode(&p).ok()) {
            Some(p) => {
                let _ = writeln!(o, "attachment {i}: {:?}, {} bytes", p.name, p.data.len());
            }
            None => {
                let _ = writeln!(o, "attachment {i}: {} bytes (not opened)", a.len());
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_line_keeps_spaces() {
        let p = password_from_reader(&b" a b\t \nrest"[..]).unwrap();
        assert_eq!(p.as_str(), " a b\t ");
    }

    #[test]
    fn renders_plain_server_mail() {
        let env = cmtp_proto::Envelope::new(0, "", "localhost", "alice", "a.example");
        let mut raw = Vec::new();
        cmtp_proto::message::encode_message(&env, b"hop1\0", b"hello there", &[], &mut raw)
            .unwrap();
        let t = render_message(&raw, 7, 1, None);
        assert!(t.contains("from: alice@a.example"), "{t}");
        assert!(t.contains("log: hop1"), "{t}");
        assert!(t.contains("hello there"), "{t}");
    }

    #[test]
    fn bad_names_never_reach_a_path() {
        let d = tempfile::tempdir().unwrap();
        for n in ["../x", "", "a/b", "..", "a b", "al\u{200B}ice"] {
            assert!(
                matches!(
                    user_add(&Embedded::new(d.path()), d.path(), n, b"pw", true),
                    Err(AdminError::InvalidName(..))
                ),
                "{n:?}"
            );
        }
        assert!(!d.path().join("x").exists());
    }
}
