//! The server's Ed25519 key (`<data>/server.key`) and the signed replies made with it.
//!
//! Ed25519 is deterministic, so every constant reply is signed once at startup; user
//! keys' signatures are remembered in a bounded cache, so KEYREQUEST rarely signs.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use cmtp_crypto::opaque::ServerSetup;
use cmtp_crypto::{KeyPair, PublicKey};
use cmtp_proto::reply;

/// File name of the server key inside the data directory.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Errors about the server key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("server key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error underneath.
        source: io::Error,
    },
    /// The file exists but is not a valid 64-byte libsodium secret key.
    #[error("server key file {path} is not a valid 64-byte Ed25519 secret key: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: cmtp_crypto::CryptoError,
    },
    /// libsodium failed to make a key.
    #[error("cannot generate a key: {0}")]
    Crypto(#[from] cmtp_crypto::CryptoError),
    /// There is no server key (and this path does not create one).
    #[error("no server key at {0} (the server creates it on first start)")]
    Missing(PathBuf),
}

/// Reads and checks a key file; `None` when it does not exist. The bytes read are wiped
/// whatever the outcome.
fn read_key_file(path: &Path) -> Result<Option<KeyPair>, KeyError> {
    match fs::read(path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            KeyPair::from_secret_bytes(&bytes)
                .map(Some)
                .map_err(|source| KeyError::Invalid {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Loads `<data>/server.key` without ever creating it: for tools that may run beside
/// the server (creating a key there would race with, or differ from, the server's).
pub fn load(data_dir: &Path) -> Result<KeyPair, KeyError> {
    let path = data_dir.join(SERVER_KEY_FILE);
    read_key_file(&path)?.ok_or(KeyError::Missing(path))
}

/// Whether an existing data directory is open to group or others (mode & 0o077): it
/// holds the server key and the mail, and is only created 0700 when new.
pub fn data_dir_too_open(path: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

/// Loads `<data>/server.key`, generating it (mode 0600, fsync'd) when it does not exist.
/// Returns the key pair and whether it was created now.
pub fn load_or_create(data_dir: &Path) -> Result<(KeyPair, bool), KeyError> {
    let path = data_dir.join(SERVER_KEY_FILE);
    let io_err = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    if let Some(kp) = read_key_file(&path)? {
        return Ok((kp, false));
    }
    ensure_data_dir(data_dir).map_err(io_err)?;
    let kp = KeyPair::generate()?;
    // Write a private temporary file, then hard-link it into place: link(2) never
    // replaces, so two processes starting at once agree on one key.
    let tmp = data_dir.join(format!(".server.key.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&kp.secret_bytes()[..])?;
        f.sync_all()
    };
    let _ = fs::remove_file(&tmp);
    let res = write().and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {
            if let Ok(d) = fs::File::open(data_dir) {
                let _ = d.sync_all();
            }
            Ok((kp, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            load_or_create(data_dir).map(|(k, _)| (k, false))
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The key of the hashed addresses in the log (`log_addresses = "hashed"`).
pub const LOG_KEY_FILE: &str = "log.key";

/// Loads `<data>/log.key` (32 bytes), creating it (random, mode 0600, fsync'd) when
/// missing, so hashed addresses stay the same tokens across restarts.
pub fn load_or_create_log_key(data_dir: &Path) -> Result<[u8; 32], KeyError> {
    let path = data_dir.join(LOG_KEY_FILE);
    let io_err = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(b) => {
            return <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
                io_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} bytes, expected 32", b.len()),
                ))
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let mut key = [0u8; 32];
    cmtp_crypto::random_bytes(&mut key)?;
    let written = write_new_private(&path, &key);
    match written {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create_log_key(data_dir),
        Err(e) => Err(io_err(e)),
    }
}

/// Creates `path` (it must not exist: `AlreadyExists` when another process made it
/// first) with mode 0600 and `bytes`, fsync'd.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The OPAQUE secrets (docs/protocol.md D8): OPRF seed and the server's AKE key pair.
pub const OPAQUE_SETUP_FILE: &str = "opaque.key";

/// Loads `<data>/opaque.key` without creating it (the admin tools beside a running
/// server); `None` when it does not exist. The bytes read are wiped.
pub fn load_opaque_setup(data_dir: &Path) -> Result<Option<ServerSetup>, KeyError> {
    let path = data_dir.join(OPAQUE_SETUP_FILE);
    match fs::read(&path) {
        Ok(b) => {
            let b = zeroize::Zeroizing::new(b);
            ServerSetup::from_bytes(&b)
                .map(Some)
                .map_err(|source| KeyError::Invalid { path, source })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

/// Loads `<data>/opaque.key`, creating it (fresh secrets, mode 0600, fsync'd) when
/// missing: made once, at `init` or first start, and kept, since every OPAQUE record
/// depends on it.
pub fn load_or_create_opaque_setup(data_dir: &Path) -> Result<ServerSetup, KeyError> {
    if let Some(s) = load_opaque_setup(data_dir)? {
        return Ok(s);
    }
    let path = data_dir.join(OPAQUE_SETUP_FILE);
    let setup = ServerSetup::generate();
    let bytes = setup.to_bytes();
    let written = write_new_private(&path, &bytes);
    match written {
        Ok(()) => {
            if let Ok(d) = fs::File::open(data_dir) {
                let _ = d.sync_all();
            }
            Ok(setup)
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_or_create_opaque_setup(data_dir),
        Err(source) => {
            // A partial file would be read as invalid next time: remove it.
            let _ = fs::remove_file(&path);
            Err(KeyError::Io { path, source })
        }
    }
}

/// Creates the data directory (and parents) if missing, mode 0700: it holds the server
/// key, the xzibits and the mail.
pub fn ensure_data_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Reads the server's public key without creating anything (None if there is no key).
pub fn read_public(data_dir: &Path) -> Result<Option<PublicKey>, KeyError> {
    match load(data_dir) {
        Ok(kp) => Ok(Some(kp.public())),
        Err(KeyError::Missing(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A general reply (`SUCCESS`/`FAILURE`), signed.
fn general(kp: &KeyPair, ok: bool) -> Bytes {
    let mut v = Vec::new();
    let sig = kp.sign(reply::general_text(ok).as_bytes());
    reply::encode_general(ok, sig.as_bytes(), &mut v);
    Bytes::from(v)
}

/// A version-0 message, signed.
fn v0(kp: &KeyPair, text: &str) -> Bytes {
    let mut v = Vec::new();
    reply::encode_v0(text, kp.sign(text.as_bytes()).as_bytes(), &mut v);
    Bytes::from(v)
}

/// A version-1 key reply.
fn key_reply(key: &[u8; 32], sig: &[u8; 64]) -> Bytes {
    let mut v = Vec::with_capacity(reply::KEY_REPLY_LEN);
    reply::encode_key(1, key, sig, &mut v);
    Bytes::from(v)
}

/// Bounded memo of user-key signatures: two generations, the old one dropped whole when
/// the young one fills, so memory stays below `2 × half` entries without per-entry LRU
/// bookkeeping.
struct SigCache {
    half: usize,
    young: HashMap<[u8; 32], [u8; 64]>,
    old: HashMap<[u8; 32], [u8; 64]>,
}

impl SigCache {
    fn get(&mut self, key: &[u8; 32]) -> Option<[u8; 64]> {
        if let Some(s) = self.young.get(key) {
            return Some(*s);
        }
        let s = self.old.remove(key)?;
        self.insert(*key, s);
        Some(s)
    }

    fn insert(&mut self, key: [u8; 32], sig: [u8; 64]) {
        if self.half == 0 {
            return;
        }
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, sig);
    }
}

/// The server key and every pre-signed constant reply.
pub struct Signer {
    kp: KeyPair,
    /// General `SUCCESS`.
    pub success: Bytes,
    /// General `FAILURE`.
    pub failure: Bytes,
    /// Version-0 `KEYNOTAVAILABLE`.
    pub key_not_available: Bytes,
    /// Version-0 `DELIVERYFAILURE`.
    pub delivery_failure: Bytes,
    /// Version-0 `FAILURE` (LOGIN of an unknown user; mailbox server error).
    pub v0_failure: Bytes,
    /// Version-0 `AUTHFAILURE` (mailbox).
    pub auth_failure: Bytes,
    /// Version-0 `NOSUCHMESSAGE` (mailbox).
    pub no_such_message: Bytes,
    /// The HELP reply.
    pub help: Bytes,
    /// The key reply carrying the server's own key.
    pub server_key: Bytes,
    cache: Mutex<SigCache>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.kp.public())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs every constant reply; `cache_entries` bounds the user-key signature memo.
    pub fn new(kp: KeyPair, cache_entries: usize) -> Self {
        let pk = *kp.public().as_bytes();
        let server_key = key_reply(&pk, kp.sign(&pk).as_bytes());
        Self {
            success: general(&kp, true),
            failure: general(&kp, false),
            key_not_available: v0(&kp, reply::KEYNOTAVAILABLE),
            delivery_failure: v0(&kp, reply::DELIVERYFAILURE),
            v0_failure: v0(&kp, reply::FAILURE),
            auth_failure: v0(&kp, reply::AUTHFAILURE),
            no_such_message: v0(&kp, reply::NOSUCHMESSAGE),
            help: v0(&kp, reply::HELP_TEXT),
            server_key,
            cache: Mutex::new(SigCache {
                half: cache_entries / 2,
                young: HashMap::new(),
                old: HashMap::new(),
            }),
            kp,
        }
    }

    /// The server's public key.
    pub fn public(&self) -> PublicKey {
        self.kp.public()
    }

    /// Opens a sealed box addressed to the server key (OPAQUEREG2's new xzibit).
    pub fn open_sealed(
        &self,
        ct: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, cmtp_crypto::CryptoError> {
        self.kp.open_sealed(ct)
    }

    /// Signs arbitrary bytes with the server key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        *self.kp.sign(msg).as_bytes()
    }

    /// The 102-byte key reply for a user key (signature memoised).
    pub fn user_key_reply(&self, key: &[u8; 32]) -> Bytes {
        let cached = self.cache.lock().ok().and_then(|mut c| c.get(key));
        let sig = match cached {
            Some(s) => s,
            None => {
                let s = self.sign(key);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(*key, s);
                }
                s
            }
        };
        key_reply(key, &sig)
    }

    /// The LOGIN reply for an xzibit (version 1, signed).
    pub fn login_reply(&self, xzibit: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(xzibit.len() + 72);
        reply::encode_login(1, xzibit, &self.sign(xzibit), &mut out);
        out
    }

    /// A mailbox success reply with a whole (small) payload: head, payload and the
    /// signature binding it to the request's signature (docs/protocol.md D4).
    pub fn mbox_reply(&self, request_sig: &[u8; 64], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + reply::MBOX_HEAD_LEN + 64);
        reply::encode_mbox_ok(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        let digest = cmtp_crypto::blake2b_256(payload);
        self.mbox_trailer(request_sig, &digest, &mut out);
        out
    }

    /// Appends the trailer of a (streamed) mailbox success reply, given the payload's
    /// BLAKE2b-256.
    pub fn mbox_trailer(
        &self,
        request_sig: &[u8; 64],
        payload_digest: &[u8; 32],
        out: &mut Vec<u8>,
    ) {
        let sig = self.sign(&cmtp_proto::mbox::reply_signing_bytes(
            request_sig,
            payload_digest,
        ));
        reply::encode_mbox_trailer(&sig, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_data_dir_is_detected_and_load_never_creates() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        ensure_data_dir(&d).unwrap();
        assert_eq!(data_dir_too_open(&d).unwrap(), None);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(data_dir_too_open(&d).unwrap(), Some(0o755));
        assert!(matches!(load(&d), Err(KeyError::Missing(_))));
        assert!(!d.join(SERVER_KEY_FILE).exists());
        let (kp, _) = load_or_create(&d).unwrap();
        assert_eq!(load(&d).unwrap().public(), kp.public());
    }

    #[test]
    fn key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        let meta = fs::metadata(dir.path().join(SERVER_KEY_FILE)).unwrap();
        assert_eq!(meta.len(), 64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_public(dir.path()).unwrap(), Some(a.public()));
    }

    #[test]
    fn bad_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SERVER_KEY_FILE), [1u8; 10]).unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(KeyError::Invalid { .. })
        ));
    }

    #[test]
    fn constant_replies_verify() {
        let kp = KeyPair::generate().unwrap();
        let pk = kp.public();
        let s = Signer::new(kp, 4);
        assert_eq!(&s.success[..8], b"SUCCESS\0");
        let sig = cmtp_crypto::Signature::from_bytes(&s.success[8..72]).unwrap();
        pk.verify(b"SUCCESS", &sig).unwrap();
        assert_eq!(s.key_not_available.len(), 4 + 16 + 65);
        assert_eq!(s.server_key.len(), 102);
        // The cache stays bounded and answers the same bytes.
        for i in 0..10u8 {
            let k = [i; 32];
            let r = s.user_key_reply(&k);
            assert_eq!(r, s.user_key_reply(&k));
            let sig = cmtp_crypto::Signature::from_bytes(&r[37..101]).unwrap();
            pk.verify(&k, &sig).unwrap();
        }
        let c = s.cache.lock().unwrap();
        assert!(c.young.len() + c.old.len() <= 4);
    }
}
