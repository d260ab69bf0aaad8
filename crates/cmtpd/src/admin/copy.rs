//! `cmtpd store copy` and `store verify`: moving an installation from the embedded store
//! of a data directory into another store (PostgreSQL), and checking the result.
//!
//! What moves: users (all fields and the OPAQUE login), every mailbox's messages with
//! their ids, receive times and metadata (notes and relay ids included, so the relay
//! queue moves too), each mailbox's id sequence (ids of deleted messages stay unused),
//! peer records (pinned key with its time, a refused offer, the TLS mark) and the relay
//! ids of the dedup window. Message bytes are streamed in pieces of [`PIECE`]: memory
//! stays the same whatever a message's size.
//!
//! The source is opened as the writer: it holds the store's lock for the whole copy, so
//! no server can run on it meanwhile (and the copy refuses while one does). The target
//! must be empty, so nothing can collide and a copy never merges two installations.

use std::collections::BTreeSet;

use cmtp_crypto::Blake2b256;
use cmtp_store::{
    Delivery, EmbeddedStore, MailStore, MessageInfo, MessageRead, Options, PeerStore, StoreError,
    StoreImport, UserStore,
};

use super::{AdminError, Result};

/// Bytes read and written per step of a message's copy (and of its verification).
pub const PIECE: usize = 256 * 1024;

/// Messages listed per step: a long mailbox is never listed whole.
const PAGE: usize = 256;

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Users copied.
    pub users: u64,
    /// Of them, with an OPAQUE login.
    pub opaque_logins: u64,
    /// Peer records (domains) copied.
    pub peers: u64,
    /// Mailboxes (with messages, or an id sequence only) copied.
    pub mailboxes: u64,
    /// Messages copied (the relay queue's included).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Relay ids of the dedup window copied.
    pub relay_ids: u64,
}

/// What a verification compared, and what differed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Users compared.
    pub users: u64,
    /// Peer records compared.
    pub peers: u64,
    /// Messages compared (metadata and bytes).
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Every difference found, one line each (names and ids, never message contents).
    pub problems: Vec<String>,
}

/// Opens the embedded store of `data_dir` as a copy's source: as the writer, so it is
/// consistent for the whole copy. A running server holds the lock: then
/// [`AdminError::SourceInUse`].
pub fn open_source(data_dir: &std::path::Path) -> Result<EmbeddedStore> {
    match EmbeddedStore::open(data_dir, Options::default()) {
        Err(StoreError::Locked) => Err(AdminError::SourceInUse(data_dir.display().to_string())),
        r => Ok(r?),
    }
}

/// Copies everything in `src` into the empty store `dst`, then makes it durable.
pub async fn copy<T>(src: &EmbeddedStore, dst: &T) -> Result<CopyReport>
where
    T: StoreImport + UserStore + PeerStore,
{
    if !dst.is_empty()? {
        return Err(AdminError::TargetNotEmpty);
    }
    let mut r = CopyReport::default();
    for u in src.list_users()? {
        dst.add(&u)?;
        if let Some(login) = src.opaque_login(&u.name)? {
            dst.set_opaque_login(&u.name, &login, None)?;
            r.opaque_logins += 1;
        }
        r.users += 1;
    }
    for domain in src.peer_domains()? {
        let peer = src.peer_key(&domain)?;
        let tls = src.peer_tls(&domain)?;
        if peer.is_some() || tls {
            dst.import_peer(&domain, peer.as_ref(), tls)?;
            r.peers += 1;
        }
    }
    for (mailbox, last_id) in src.last_ids()? {
        let mut after = 0;
        loop {
            let page = src.list_range(&mailbox, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for info in page {
                r.bytes += copy_message(src, dst, info).await?;
                r.messages += 1;
            }
        }
        dst.reserve_ids(&mailbox, last_id).await?;
        r.mailboxes += 1;
    }
    let relay = src.relay_ids()?;
    r.relay_ids = relay.len() as u64;
    dst.import_relay_ids(relay).await?;
    dst.finish().await?;
    Ok(r)
}

/// Streams one message from `src` into `dst` under its own id; its size.
async fn copy_message<T: StoreImport>(
    src: &EmbeddedStore,
    dst: &T,
    info: MessageInfo,
) -> Result<u64> {
    let Some((_, mut reader)) = src.open(&info.meta.mailbox, info.id).await? else {
        // The source is locked by this copy: a listed message cannot disappear.
        return Err(StoreError::Corrupt(format!(
            "message {} of {:?} was listed but cannot be opened",
            info.id, info.meta.mailbox
        ))
        .into());
    };
    let mut d = dst.begin();
    while let Some(piece) = reader.read_chunk(PIECE).await? {
        d.write(&piece).await?;
    }
    let size = info.size;
    dst.import(d, info).await?;
    Ok(size)
}

/// BLAKE2b-256 of a stored message's bytes (streamed), and their count.
async fn digest<S: MailStore>(s: &S, mailbox: &str, id: u64) -> Result<Option<([u8; 32], u64)>> {
    let Some((_, mut reader)) = s.open(mailbox, id).await? else {
        return Ok(None);
    };
    let (mut h, mut n) = (Blake2b256::new(), 0u64);
    while let Some(piece) = reader.read_chunk(PIECE).await? {
        n += piece.len() as u64;
        h.update(&piece);
    }
    Ok(Some((h.finalize(), n)))
}

fn shown(mailbox: &str) -> String {
    match mailbox {
        "" => "(server)".into(),
        cmtp_store::RELAY_QUEUE => "(relay queue)".into(),
        m => format!("{m:?}"),
    }
}

/// Re-reads both stores and compares: users (with their OPAQUE logins), peer records,
/// every message's metadata and bytes (BLAKE2b-256 of each side's stream), the relay ids.
/// Differences are returned in [`VerifyReport::problems`], not as an error.
pub async fn verify<T>(src: &EmbeddedStore, dst: &T) -> Result<VerifyReport>
where
    T: MailStore + UserStore + PeerStore,
{
    let mut r = VerifyReport::default();
    let (a, b) = (src.list_users()?, dst.list_users()?);
    let names =
        |v: &[cmtp_store::UserRecord]| v.iter().map(|u| u.name.clone()).collect::<BTreeSet<_>>();
    for missing in names(&a).difference(&names(&b)) {
        r.problems
            .push(format!("user {missing:?} is missing from the copy"));
    }
    for extra in names(&b).difference(&names(&a)) {
        r.problems
            .push(format!("user {extra:?} is in the copy only"));
    }
    for u in &a {
        let Some(v) = b.iter().find(|v| v.name == u.name) else {
            continue;
        };
        if u != v {
            r.problems.push(format!(
                "user {:?} differs (key, xzibit or creation time)",
                u.name
            ));
        } else if src.opaque_login(&u.name)? != dst.opaque_login(&u.name)? {
            r.problems
                .push(format!("user {:?}: the OPAQUE login differs", u.name));
        }
        r.users += 1;
    }
    for domain in src.peer_domains()? {
        let (p, tls) = (src.peer_key(&domain)?, src.peer_tls(&domain)?);
        if p.is_none() && !tls {
            continue;
        }
        if p != dst.peer_key(&domain)? || tls != dst.peer_tls(&domain)? {
            r.problems
                .push(format!("the peer record of {domain:?} differs"));
        }
        r.peers += 1;
    }
    if dst.list_peer_keys()?.len() != src.list_peer_keys()?.len() {
        r.problems
            .push("the copy has another number of pinned peer keys".into());
    }
    let mailboxes = src.last_ids()?;
    for extra in dst
        .stats()?
        .mailboxes
        .keys()
        .filter(|m| !mailboxes.contains_key(*m))
    {
        r.problems
            .push(format!("mailbox {} is in the copy only", shown(extra)));
    }
    for mailbox in mailboxes.keys() {
        verify_mailbox(src, dst, mailbox, &mut r).await?;
    }
    let relay = src.relay_ids()?;
    let unseen = relay
        .iter()
        .filter(|(id, _)| !dst.seen_relay_id(id))
        .count();
    if unseen > 0 {
        r.problems.push(format!(
            "{unseen} relay id(s) of the dedup window are missing from the copy"
        ));
    }
    Ok(r)
}

async fn verify_mailbox<T: MailStore>(
    src: &EmbeddedStore,
    dst: &T,
    mailbox: &str,
    r: &mut VerifyReport,
) -> Result<()> {
    let mut after = 0;
    loop {
        let a = src.list_range(mailbox, after, PAGE).await?;
        let b = dst.list_range(mailbox, after, PAGE).await?;
        if a.is_empty() && b.is_empty() {
            return Ok(());
        }
        if a.iter().map(|m| m.id).ne(b.iter().map(|m| m.id)) {
            r.problems.push(format!(
                "mailbox {}: the copy lists other message ids after id {after}",
                shown(mailbox)
            ));
            return Ok(());
        }
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                r.problems.push(format!(
                    "mailbox {} message {}: the metadata differs",
                    shown(mailbox),
                    x.id
                ));
            }
            let (dx, dy) = (
                digest(src, mailbox, x.id).await?,
                digest(dst, mailbox, x.id).await?,
            );
            match (dx, dy) {
                (Some(p), Some(q)) if p == q => {}
                _ => r.problems.push(format!(
                    "mailbox {} message {}: the bytes differ",
                    shown(mailbox),
                    x.id
                )),
            }
            r.messages += 1;
            r.bytes += x.size;
        }
        after = a.last().map_or(after, |m| m.id);
    }
}
