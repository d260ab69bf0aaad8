//! The default backend: [`FsUsers`] + [`LogMail`] + [`FsPeers`] over one data directory.

use std::path::Path;

use crate::{
    FsPeers, FsUsers, LogDelivery, LogMail, MailStore, MessageInfo, MessageReader, MetricsSnapshot,
    Options, PeerKey, PeerStore, Result, StoreHealth, StoreStats, UserRecord, UserStore,
};

/// Users, mail and pinned peer keys in one data directory; implements [`UserStore`],
/// [`MailStore`] and [`PeerStore`].
pub struct EmbeddedStore {
    users: FsUsers,
    mail: LogMail,
    peers: FsPeers,
}

impl EmbeddedStore {
    /// Opens as the writer (the server). Fails with `StoreError::Locked` if another
    /// process holds the mail lock.
    pub fn open(data_dir: impl AsRef<Path>, opts: Options) -> Result<Self> {
        let d = data_dir.as_ref();
        Ok(Self {
            users: FsUsers::open(d)?,
            mail: LogMail::open(d, opts)?,
            peers: FsPeers::open(d)?,
        })
    }

    /// Opens for the admin CLI while the server may run: users and peer keys read-write
    /// (each change is atomic on its own), mail read-only.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Result<Self> {
        let d = data_dir.as_ref();
        Ok(Self {
            users: FsUsers::open_read_only(d),
            mail: LogMail::open_read_only(d)?,
            peers: FsPeers::open_read_only(d),
        })
    }

    /// Per mailbox, the largest id it ever used ([`LogMail::last_ids`]).
    pub fn last_ids(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.mail.last_ids()
    }

    /// The relay ids of the dedup window with their commit times ([`LogMail::relay_ids`]).
    pub fn relay_ids(&self) -> Result<Vec<([u8; 16], u64)>> {
        self.mail.relay_ids()
    }

    /// Every domain with a peer record ([`FsPeers::domains`]).
    pub fn peer_domains(&self) -> Result<Vec<String>> {
        self.peers.domains()
    }
}

impl UserStore for EmbeddedStore {
    fn get(&self, name: &str) -> Result<Option<UserRecord>> {
        self.users.get(name)
    }
    fn public_key(&self, name: &str) -> Result<Option<[u8; 32]>> {
        self.users.public_key(name)
    }
    fn xzibit(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.users.xzibit(name)
    }
    fn add(&self, user: &UserRecord) -> Result<()> {
        self.users.add(user)
    }
    fn remove(&self, name: &str) -> Result<bool> {
        self.users.remove(name)
    }
    fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.users.list_users()
    }
    fn opaque_login(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.users.opaque_login(name)
    }
    fn set_opaque_login(&self, name: &str, login: &[u8], xzibit: Option<&[u8]>) -> Result<bool> {
        self.users.set_opaque_login(name, login, xzibit)
    }
}

impl MailStore for EmbeddedStore {
    type Delivery = LogDelivery;
    type Reader = MessageReader;
    fn begin(&self) -> LogDelivery {
        self.mail.begin()
    }
    async fn list(&self, mailbox: &str) -> Result<Vec<MessageInfo>> {
        MailStore::list(&self.mail, mailbox).await
    }
    async fn list_range(
        &self,
        mailbox: &str,
        after_id: u64,
        max: usize,
    ) -> Result<Vec<MessageInfo>> {
        self.mail.list_range(mailbox, after_id, max).await
    }
    async fn open(&self, mailbox: &str, id: u64) -> Result<Option<(MessageInfo, MessageReader)>> {
        self.mail.open(mailbox, id).await
    }
    async fn delete(&self, mailbox: &str, id: u64) -> Result<bool> {
        self.mail.delete(mailbox, id).await
    }
    async fn set_note(&self, mailbox: &str, id: u64, note: Vec<u8>) -> Result<bool> {
        self.mail.set_note(mailbox, id, note).await
    }
    fn seen_relay_id(&self, relay_id: &[u8; 16]) -> bool {
        self.mail.seen_relay_id(relay_id)
    }
    fn mailbox_usage(&self, mailbox: &str) -> Result<(u64, u64)> {
        self.mail.mailbox_usage(mailbox)
    }
    fn stats(&self) -> Result<StoreStats> {
        self.mail.stats()
    }
    fn metrics(&self) -> MetricsSnapshot {
        self.mail.metrics()
    }
    fn health(&self) -> StoreHealth {
        self.mail.health()
    }
}

impl PeerStore for EmbeddedStore {
    fn peer_key(&self, domain: &str) -> Result<Option<PeerKey>> {
        self.peers.peer_key(domain)
    }
    fn pin_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        self.peers.pin_peer_key(domain, key)
    }
    fn offer_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        self.peers.offer_peer_key(domain, key)
    }
    fn list_peer_keys(&self) -> Result<Vec<PeerKey>> {
        self.peers.list_peer_keys()
    }
    fn peer_tls(&self, domain: &str) -> Result<bool> {
        self.peers.peer_tls(domain)
    }
    fn set_peer_tls(&self, domain: &str) -> Result<()> {
        self.peers.set_peer_tls(domain)
    }
}
