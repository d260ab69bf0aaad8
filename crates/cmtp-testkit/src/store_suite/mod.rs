//! One behavioural suite for every storage backend (feature `store-suite`): what the
//! `cmtp-store` traits promise, checked the same way on the embedded store and on
//! PostgreSQL. Each check takes `open`, which opens the backend's store over the same
//! data (a data directory, a database) each time it is called; a check drops a store
//! before opening the next, so "reopen" means what it means for that backend.
//!
//! Backend-specific behaviour (the log format, torn tails, blobs, files' modes; the
//! database's schema and outages) stays in the backend's own tests.
//!
//! Chapters: the helpers here, the mail checks (`mail`), users and pinned peers
//! (`accounts`).

mod accounts;
mod mail;

pub use accounts::{peers, users};
pub use mail::*;

use std::sync::Arc;

use cmtp_store::{
    Claim, Delivery, MailStore, MessageMeta, MessageRead, PeerStore, RELAY_QUEUE, StoreError,
    UserRecord, UserStore,
};

use crate::fixtures::noise;

/// Metadata of a test message to `mailbox`.
pub fn meta(mailbox: &str) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 1,
        body_end: 7,
        note: Vec::new(),
        relay_id: None,
    }
}

/// Delivers `data` in writes of `chunk` bytes with `meta`; the id.
pub async fn deliver_meta<S: MailStore>(
    store: &S,
    m: MessageMeta,
    data: &[u8],
    chunk: usize,
) -> u64 {
    let mut d = store.begin();
    for c in data.chunks(chunk.max(1)) {
        d.write(c).await.expect("write");
    }
    d.commit(m).await.expect("commit")
}

/// Delivers `data` to `mailbox` in writes of `chunk` bytes; the id.
pub async fn deliver<S: MailStore>(store: &S, mailbox: &str, data: &[u8], chunk: usize) -> u64 {
    deliver_meta(store, meta(mailbox), data, chunk).await
}

/// A message's bytes read back in chunks of at most 4096 (checking `remaining`), or
/// `None` if it does not exist.
pub async fn read_all<S: MailStore>(store: &S, mailbox: &str, id: u64) -> Option<Vec<u8>> {
    let (info, mut r) = store.open(mailbox, id).await.expect("open")?;
    let mut out = Vec::new();
    assert_eq!(r.remaining(), info.size);
    while let Some(c) = r.read_chunk(4096).await.expect("read") {
        assert!(!c.is_empty() && c.len() <= 4096);
        out.extend_from_slice(&c);
        assert_eq!(r.remaining(), info.size - out.len() as u64);
    }
    assert_eq!(out.len() as u64, info.size);
    Some(out)
}

/// The ids a mailbox lists, in order.
pub async fn listed_ids<S: MailStore>(store: &S, mailbox: &str) -> Vec<u64> {
    store
        .list(mailbox)
        .await
        .expect("list")
        .iter()
        .map(|i| i.id)
        .collect()
}
