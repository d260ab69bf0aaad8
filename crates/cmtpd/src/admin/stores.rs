//! Where the admin commands find users, mail and peer keys: the data directory's
//! embedded store, or the PostgreSQL database of `[store] backend = "postgres"`. The
//! commands are generic over [`AdminStores`], so both backends run one code path.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use cmtp_store::{EmbeddedStore, FsPeers, FsUsers, MailStore, PeerStore, UserStore};
use cmtp_store_pg::PgStore;

use super::Result;

/// The stores of one installation, each opened when a command first needs it.
pub trait AdminStores {
    /// User accounts.
    type Users: UserStore;
    /// Mailboxes and the relay queue.
    type Mail: MailStore;
    /// Pinned keys of other domains' servers.
    type Peers: PeerStore;
    /// The users.
    fn users(&self) -> Result<&Self::Users>;
    /// Makes the users writable (the embedded store creates its directories); call
    /// before adding one.
    fn prepare_user_writes(&self) -> Result<()> {
        Ok(())
    }
    /// The mail, for reading (the embedded store: read-only, beside a running server).
    fn mail(&self) -> Result<&Self::Mail>;
    /// The peer keys.
    fn peers(&self) -> Result<&Self::Peers>;
    /// The mail store every node shares, written directly by `queue retry | drop`; `None`
    /// for the embedded store, whose writer (the running server) owns it.
    fn shared_mail(&self) -> Option<&Self::Mail>;
    /// Bytes the database uses on disk, for `mailbox stats`; `None` for the embedded
    /// store (it reports its segments and blobs instead).
    fn database_size(&self) -> Result<Option<u64>>;
}

/// The embedded store of a data directory: users and peer keys are files written
/// atomically (read by the running server on every use), the mail log is opened
/// read-only (the server holds its writer lock).
pub struct Embedded {
    data: PathBuf,
    users: FsUsers,
    peers: FsPeers,
    mail: OnceCell<EmbeddedStore>,
}

impl Embedded {
    /// The stores in `data_dir` (nothing is opened yet).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data: data_dir.to_path_buf(),
            users: FsUsers::open_read_only(data_dir),
            peers: FsPeers::open_read_only(data_dir),
            mail: OnceCell::new(),
        }
    }
}

impl AdminStores for Embedded {
    type Users = FsUsers;
    type Mail = EmbeddedStore;
    type Peers = FsPeers;
    fn users(&self) -> Result<&FsUsers> {
        Ok(&self.users)
    }
    fn prepare_user_writes(&self) -> Result<()> {
        FsUsers::open(&self.data)?;
        Ok(())
    }
    fn mail(&self) -> Result<&EmbeddedStore> {
        if let Some(m) = self.mail.get() {
            return Ok(m);
        }
        let m = EmbeddedStore::open_read_only(&self.data)?;
        Ok(self.mail.get_or_init(|| m))
    }
    fn peers(&self) -> Result<&FsPeers> {
        Ok(&self.peers)
    }
    fn shared_mail(&self) -> Option<&EmbeddedStore> {
        None
    }
    fn database_size(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// The PostgreSQL database: every change is a statement all nodes see at once.
impl AdminStores for PgStore {
    type Users = PgStore;
    type Mail = PgStore;
    type Peers = PgStore;
    fn users(&self) -> Result<&PgStore> {
        Ok(self)
    }
    fn mail(&self) -> Result<&PgStore> {
        Ok(self)
    }
    fn peers(&self) -> Result<&PgStore> {
        Ok(self)
    }
    fn shared_mail(&self) -> Option<&PgStore> {
        Some(self)
    }
    fn database_size(&self) -> Result<Option<u64>> {
        Ok(Some(PgStore::database_size(self)?))
    }
}
