//! Pinned keys of remote servers (federation): `<data>/peers/<domain>/{key,pinned,offered,tls}`.
//!
//! Each file is replaced atomically (temporary, fsync, rename, directory fsync) and read
//! on every call (no cache), so the admin CLI's `domain trust` is seen by the running
//! server at once.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::clock::unix_now;
use crate::fsutil::{ATOMIC_TMP_PREFIX, create_dirs_synced, sync_dir, write_atomic};
use crate::path_safe::ensure_path_safe;
use crate::{Result, StoreError};

/// The pinned Ed25519 public key, 32 raw bytes; its presence is what makes a pin.
const KEY: &str = "key";
/// When the key was pinned: Unix seconds, ASCII decimal.
const PINNED: &str = "pinned";
/// The newest refused key: 32 raw bytes, then u64 LE Unix seconds.
const OFFERED: &str = "offered";
/// Present once the domain's server offered TLS (docs/protocol.md D7); content `1`.
const TLS: &str = "tls";
/// Largest file a peer directory holds (`offered`); anything longer is corrupt and is
/// not read whole.
const MAX_FILE: u64 = 40;
/// Age after which a temporary is certainly abandoned (a crash mid-write).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// What the server knows of a remote domain's server key (federation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    /// The domain, lower-case.
    pub domain: String,
    /// The pinned Ed25519 public key.
    pub key: [u8; 32],
    /// When it was pinned, Unix seconds.
    pub pinned_at: u64,
    /// A different key a peer presented and we refused (the newest), with when (Unix s).
    pub offered: Option<([u8; 32], u64)>,
}

/// The pinned keys of remote domains' servers. Synchronous: a few small files (or one
/// row) per domain. Domain names are compared in ASCII lower case.
pub trait PeerStore: Send + Sync + 'static {
    /// The domain's pinned key, or `None` if none is pinned.
    fn peer_key(&self, domain: &str) -> Result<Option<PeerKey>>;
    /// Pins `key` for `domain` (first use, or the operator's `domain trust`): replaces any
    /// pinned key and clears `offered`. Durable.
    fn pin_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()>;
    /// Records a refused different key (keeps the pinned one). Durable.
    fn offer_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()>;
    /// All, sorted by domain.
    fn list_peer_keys(&self) -> Result<Vec<PeerKey>>;
    /// Whether the domain's server was seen offering TLS (docs/protocol.md D7): a later
    /// connection where it does not is refused as a downgrade.
    fn peer_tls(&self, domain: &str) -> Result<bool>;
    /// Records that the domain's server offered TLS (kept across key changes). Durable.
    fn set_peer_tls(&self, domain: &str) -> Result<()>;
}

/// The embedded peer-key store over a data directory: one directory per domain.
#[derive(Debug, Clone)]
pub struct FsPeers {
    peers: PathBuf,
}

impl FsPeers {
    /// Opens (creating if needed) `<data>/peers` and removes temporaries an interrupted
    /// write left more than an hour ago (younger ones may be a running admin command's).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let peers = data_dir.as_ref().join("peers");
        create_dirs_synced(&peers)?;
        for domain in fs::read_dir(&peers)?.flatten() {
            let Ok(files) = fs::read_dir(domain.path()) else {
                continue;
            };
            for f in files.flatten() {
                let ours = f
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(ATOMIC_TMP_PREFIX));
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP);
                if ours && old {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        Ok(Self { peers })
    }

    /// Opens without creating or cleaning anything (the admin CLI beside a running
    /// server); a missing `peers` directory reads as no pinned keys. Writes still work:
    /// they create the directories they need.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Self {
        Self {
            peers: data_dir.as_ref().join("peers"),
        }
    }

    /// The lower-case domain and its directory; the name must be one path component.
    fn dir(&self, domain: &str) -> Result<(String, PathBuf)> {
        let domain = domain.to_ascii_lowercase();
        ensure_path_safe(&domain)?;
        let dir = self.peers.join(&domain);
        Ok((domain, dir))
    }

    /// Every domain with a record (a pinned key, a refused offer or a TLS mark), sorted.
    pub fn domains(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.peers) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            if let Some(name) = e.file_name().to_str()
                && e.file_type()?.is_dir()
                && ensure_path_safe(name).is_ok()
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Reads a small file whole, `None` if it (or its directory) does not exist; a file
/// over [`MAX_FILE`] bytes is corrupt (and not read beyond that).
fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_FILE {
        return Err(corrupt(path));
    }
    Ok(Some(out))
}

fn corrupt(path: &Path) -> StoreError {
    StoreError::Corrupt(format!("{} is malformed", path.display()))
}

impl PeerStore for FsPeers {
    fn peer_key(&self, domain: &str) -> Result<Option<PeerKey>> {
        let (domain, dir) = self.dir(domain)?;
        let key_path = dir.join(KEY);
        let Some(key) = read_small(&key_path)? else {
            return Ok(None);
        };
        let key: [u8; 32] = key.try_into().map_err(|_| corrupt(&key_path))?;
        // Written before the key: a pinned key always has its time.
        let pinned_path = dir.join(PINNED);
        let pinned_at = read_small(&pinned_path)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| corrupt(&pinned_path))?;
        let offered_path = dir.join(OFFERED);
        let offered = match read_small(&offered_path)? {
            None => None,
            Some(b) if b.len() == 40 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b[..32]);
                let mut t = [0u8; 8];
                t.copy_from_slice(&b[32..]);
                Some((k, u64::from_le_bytes(t)))
            }
            Some(_) => return Err(corrupt(&offered_path)),
        };
        Ok(Some(PeerKey {
            domain,
            key,
            pinned_at,
            offered,
        }))
    }

    fn pin_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        let (_, dir) = self.dir(domain)?;
        create_dirs_synced(&dir)?;
        // The time first, the key last: the key's rename is the pin (a crash between
        // them leaves the old pin with a newer time, or no pin at all).
        write_atomic(&dir, PINNED, unix_now().to_string().as_bytes())?;
        write_atomic(&dir, KEY, key)?;
        // After the key: a crash before this leaves a stale offer beside the new pin,
        // never a new pin's offer lost.
        match fs::remove_file(dir.join(OFFERED)) {
            Ok(()) => sync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn offer_peer_key(&self, domain: &str, key: &[u8; 32]) -> Result<()> {
        let (_, dir) = self.dir(domain)?;
        // Without a pinned key the offer is kept but not shown (`peer_key` is `None`)
        // until a pin clears it.
        create_dirs_synced(&dir)?;
        let mut b = [0u8; 40];
        b[..32].copy_from_slice(key);
        b[32..].copy_from_slice(&unix_now().to_le_bytes());
        write_atomic(&dir, OFFERED, &b)?;
        Ok(())
    }

    fn peer_tls(&self, domain: &str) -> Result<bool> {
        let (_, dir) = self.dir(domain)?;
        Ok(read_small(&dir.join(TLS))?.is_some())
    }

    fn set_peer_tls(&self, domain: &str) -> Result<()> {
        let (_, dir) = self.dir(domain)?;
        create_dirs_synced(&dir)?;
        write_atomic(&dir, TLS, b"1")?;
        Ok(())
    }

    fn list_peer_keys(&self) -> Result<Vec<PeerKey>> {
        let entries = match fs::read_dir(&self.peers) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            // Names we cannot have written (not UTF-8, not path-safe, not lower-case):
            // skip.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if ensure_path_safe(&name).is_err() || name != name.to_ascii_lowercase() {
                continue;
            }
            if let Some(p) = self.peer_key(&name)? {
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        Ok(out)
    }
}
