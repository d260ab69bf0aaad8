//! The local profile: who I am, my home server, and the keys I pinned.
//!
//! A profile is a folder holding:
//! - `profile.toml` — address, home server (`host:port`), own public key, dialect,
//!   timeouts. No secret.
//! - `pins.toml` — trust-on-first-use pins: server keys by `host:port`, user keys by
//!   address (hex), and the servers seen offering TLS (a later plaintext offer from one
//!   is a downgrade).
//! - `read.toml` — which messages were read (see [`Profile::read_ids`]).
//! - `secret.key` — only after `login --remember`: the 64-byte Ed25519 secret key, hex,
//!   mode 0600. Without it, commands that need the secret fetch the xzibit again with
//!   LOGIN and open it with the password. The xzibit itself is never stored locally:
//!   the server is its home, and fetching it again proves the account still exists.
//!
//! Files are written atomically (temporary file, fsync, rename, fsync of the folder).
//! The folder is created mode 0700; a `secret.key` that group or others may read is
//! refused rather than used.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cmtp_crypto::{KeyPair, PublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::conn::{Dialect, Timeouts};
use crate::error::{ClientError, Result};

const PROFILE_FILE: &str = "profile.toml";
const PINS_FILE: &str = "pins.toml";
const SECRET_FILE: &str = "secret.key";

/// Which server software the home server is assumed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// CMTP/1 as docs/protocol.md defines it (default).
    #[default]
    Cmtp1,
    /// The 2016 C server: MAIL carries a 64-byte nonce and gets no reply.
    #[serde(rename = "2016")]
    Legacy2016,
}

/// Timeouts as stored in the profile (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeoutConfig {
    /// TCP connect timeout.
    pub connect_secs: f64,
    /// Timeout of each read/write step.
    pub io_secs: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        TimeoutConfig {
            connect_secs: t.connect.as_secs_f64(),
            io_secs: t.io.as_secs_f64(),
        }
    }
}

impl TimeoutConfig {
    /// As [`Timeouts`]; nonsensical values (negative, NaN) fall back to the defaults.
    pub fn to_timeouts(self) -> Timeouts {
        let d = Timeouts::default();
        let conv = |s: f64, dflt: Duration| {
            if s.is_finite() && s > 0.0 {
                Duration::from_secs_f64(s.min(86_400.0))
            } else {
                dflt
            }
        };
        Timeouts {
            connect: conv(self.connect_secs, d.connect),
            io: conv(self.io_secs, d.io),
        }
    }
}

/// The non-secret part of a profile (`profile.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileConfig {
    /// My address, `account@domain`.
    pub address: String,
    /// My home server, `host:port`.
    pub server: String,
    /// My Ed25519 public key, hex.
    pub public_key: String,
    /// Server dialect.
    #[serde(default)]
    pub compat: Compat,
    /// Network timeouts.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// The dialect the server spoke at login (recorded, not a setting). The dialect is
    /// detected from the unsigned greeting and OHAI, so when this says CMTP/1 a server
    /// answering as the 2016 one is refused as a possible downgrade. `None` in
    /// profiles written before it was recorded (no check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<Compat>,
    /// This account logs in with OPAQUE on this server (docs/protocol.md D8; recorded,
    /// not a setting): from then on a failed OPAQUE login is a wrong password (never a
    /// fallback to LOGIN), and a server that stops offering OPAQUE is refused as a
    /// possible downgrade.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opaque: bool,
}

/// Trust-on-first-use pins (`pins.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// Server keys by `host:port`, hex.
    #[serde(default)]
    pub servers: BTreeMap<String, String>,
    /// User keys by address, hex.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Servers (`host:port`) seen offering TLS (docs/protocol.md D7): a later connection
    /// where one does not is refused as a downgrade.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tls: BTreeSet<String>,
}

/// How a presented key compares with the pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinStatus {
    /// Nothing was pinned for this name.
    New,
    /// The presented key equals the pin.
    Same,
    /// The pin differs; it holds the pinned key.
    Changed(PublicKey),
}

impl Pins {
    fn check(map: &BTreeMap<String, String>, name: &str, key: &PublicKey) -> PinStatus {
        match map.get(name).and_then(|h| PublicKey::from_hex(h).ok()) {
            None => PinStatus::New,
            Some(p) if p == *key => PinStatus::Same,
            Some(p) => PinStatus::Changed(p),
        }
    }

    /// Compares a server's key with its pin.
    pub fn check_server(&self, server: &str, key: &PublicKey) -> PinStatus {
        Self::check(&self.servers, server, key)
    }

    /// Compares a user's key with its pin.
    pub fn check_user(&self, address: &str, key: &PublicKey) -> PinStatus {
        Self::check(&self.users, address, key)
    }

    /// Pins (or re-pins) a server key.
    pub fn pin_server(&mut self, server: &str, key: &PublicKey) {
        self.servers.insert(server.to_owned(), key.to_hex());
    }

    /// Records that `server` offered TLS; returns whether that is new.
    pub fn pin_tls(&mut self, server: &str) -> bool {
        self.tls.insert(server.to_owned())
    }

    /// Whether `server` was seen offering TLS.
    pub fn tls_seen(&self, server: &str) -> bool {
        self.tls.contains(server)
    }

    /// Pins (or re-pins) a user key.
    pub fn pin_user(&mut self, address: &str, key: &PublicKey) {
        self.users.insert(address.to_owned(), key.to_hex());
    }
}

/// A profile folder: configuration, pins and (optionally) the remembered secret key.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
    /// The configuration (`None` before the first login).
    pub config: Option<ProfileConfig>,
    /// The pins.
    pub pins: Pins,
}

impl Profile {
    /// Opens the profile folder `dir`, which need not exist yet (then it is empty).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Profile> {
        let dir = dir.into();
        let config = read_toml::<ProfileConfig>(&dir.join(PROFILE_FILE))?;
        let pins = read_toml::<Pins>(&dir.join(PINS_FILE))?.unwrap_or_default();
        Ok(Profile { dir, config, pins })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration, or a [`ClientError::Profile`] saying to log in first.
    pub fn require_config(&self) -> Result<&ProfileConfig> {
        self.config.as_ref().ok_or_else(|| ClientError::Profile {
            path: self.dir.display().to_string(),
            detail: "no account here yet; run `cmtp login NAME@DOMAIN` first".into(),
        })
    }

    /// My address, parsed.
    pub fn address(&self) -> Result<Address> {
        let c = self.require_config()?;
        Address::parse(&c.address).map_err(|e| self.bad(PROFILE_FILE, e))
    }

    /// My public key, parsed.
    pub fn public_key(&self) -> Result<PublicKey> {
        let c = self.require_config()?;
        PublicKey::from_hex(&c.public_key).map_err(|e| self.bad(PROFILE_FILE, e))
    }

    /// The pinned key of my home server, if any.
    pub fn server_key(&self) -> Result<Option<PublicKey>> {
        let c = self.require_config()?;
        match self.pins.servers.get(&c.server) {
            None => Ok(None),
            Some(h) => PublicKey::from_hex(h)
                .map(Some)
                .map_err(|e| self.bad(PINS_FILE, e)),
        }
    }

    /// The dialect of my home server.
    pub fn dialect(&self) -> Dialect {
        match self.config.as_ref().map(|c| c.compat) {
            Some(Compat::Legacy2016) => Dialect::Legacy2016,
            _ => Dialect::Cmtp1,
        }
    }

    fn bad(&self, file: &str, e: impl std::fmt::Display) -> ClientError {
        ClientError::Profile {
            path: self.dir.join(file).display().to_string(),
            detail: e.to_string(),
        }
    }

    /// Writes `profile.toml` and `pins.toml` (atomically, durably).
    pub fn save(&self) -> Result<()> {
        create_private_dir(&self.dir)?;
        if let Some(c) = &self.config {
            let text = toml::to_string_pretty(c).map_err(|e| self.bad(PROFILE_FILE, e))?;
            write_atomic(&self.dir.join(PROFILE_FILE), text.as_bytes(), false)?;
        }
        let text = toml::to_string_pretty(&self.pins).map_err(|e| self.bad(PINS_FILE, e))?;
        write_atomic(&self.dir.join(PINS_FILE), text.as_bytes(), false)?;
        Ok(())
    }

    /// Stores the secret key (mode 0600). Only for `login --remember`.
    pub fn remember_secret(&self, keys: &KeyPair) -> Result<()> {
        create_private_dir(&self.dir)?;
        let hex = Zeroizing::new(hex::encode(keys.secret_bytes().as_slice()));
        write_atomic(&self.dir.join(SECRET_FILE), hex.as_bytes(), true)
    }

    /// Removes a remembered secret key, if any.
    pub fn forget_secret(&self) -> Result<()> {
        let p = self.dir.join(SECRET_FILE);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(file_err(&p, e)),
        }
    }

    /// The remembered secret key, if `login --remember` stored one. A `secret.key` that
    /// is a symbolic link, or whose mode lets group or others read or write it, is a
    /// [`ClientError::Profile`]: someone else may have read (or planted) it.
    pub fn remembered_secret(&self) -> Result<Option<KeyPair>> {
        use std::io::Read;
        let p = self.dir.join(SECRET_FILE);
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.custom_flags(libc::O_NOFOLLOW);
        }
        let mut f = match opts.open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            #[cfg(unix)]
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(self.bad(
                    SECRET_FILE,
                    "is a symbolic link; refusing to use it (run `cmtp logout`, then \
                     `cmtp login --remember`)",
                ));
            }
            Err(e) => return Err(file_err(&p, e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = f
                .metadata()
                .map_err(|e| file_err(&p, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(self.bad(
                    SECRET_FILE,
                    format!(
                        "mode {:04o} lets other users read the secret key; refusing to use it \
                         (fix with `chmod 600`, or run `cmtp logout` and \
                         `cmtp login --remember` again)",
                        mode & 0o7777
                    ),
                ));
            }
        }
        let mut text = Zeroizing::new(String::new());
        f.read_to_string(&mut text).map_err(|e| file_err(&p, e))?;
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|e| self.bad(SECRET_FILE, e))?);
        let kp = KeyPair::from_secret_bytes(&bytes).map_err(|e| self.bad(SECRET_FILE, e))?;
        Ok(Some(kp))
    }
}

fn file_err(p: &Path, e: std::io::Error) -> ClientError {
    ClientError::File {
        path: p.display().to_string(),
        source: e,
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(p: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(p) {
        Ok(t) => toml::from_str(&t)
            .map(Some)
            .map_err(|e| ClientError::Profile {
                path: p.display().to_string(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_err(p, e)),
    }
}

/// Creates the profile folder (and missing parents) mode 0700: it holds the pins and
/// possibly the secret key. An existing folder is left as it is.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| file_err(dir, e))
}

/// The temporary file [`write_atomic`] writes `path` through.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `data` to `path` atomically: temporary file in the same folder, fsync,
/// rename, fsync of the folder. `secret` makes the file mode 0600 from its creation.
///
/// A mode given to `open` applies only when the file is created, so the temporary
/// file is removed first and then created exclusively (`O_CREAT|O_EXCL`, plus
/// `O_NOFOLLOW`): a file or symbolic link planted under its name is never written
/// through and never lends its looser mode to the secret.
pub(crate) fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(&tmp, e)),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 })
            .custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp).map_err(|e| file_err(&tmp, e))?;
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(&tmp, e));
    drop(f);
    if let Err(e) =
        written.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| file_err(path, e)))
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: some platforms cannot fsync a folder.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_pins() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Profile::open(dir.path().join("p")).unwrap();
        assert!(p.config.is_none());
        assert!(p.require_config().is_err());
        let kp = KeyPair::generate().unwrap();
        p.config = Some(ProfileConfig {
            address: "alice@example.org".into(),
            server: "127.0.0.1:9001".into(),
            public_key: kp.public().to_hex(),
            compat: Compat::Cmtp1,
            timeouts: TimeoutConfig::default(),
            dialect: Some(Compat::Cmtp1),
            opaque: false,
        });
        let other = KeyPair::generate().unwrap().public();
        assert_eq!(
            p.pins.check_server("127.0.0.1:9001", &other),
            PinStatus::New
        );
        p.pins.pin_server("127.0.0.1:9001", &other);
        p.save().unwrap();
        let q = Profile::open(dir.path().join("p")).unwrap();
        assert_eq!(q.config, p.config);
        assert_eq!(q.server_key().unwrap(), Some(other));
        assert_eq!(
            q.pins.check_server("127.0.0.1:9001", &other),
            PinStatus::Same
        );
        assert_eq!(
            q.pins.check_server("127.0.0.1:9001", &kp.public()),
            PinStatus::Changed(other)
        );
        assert!(q.remembered_secret().unwrap().is_none());
        q.remember_secret(&kp).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(dir.path().join("p/secret.key")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600);
        }
        let back = q.remembered_secret().unwrap().unwrap();
        assert_eq!(back.public(), kp.public());
        q.forget_secret().unwrap();
        assert!(q.remembered_secret().unwrap().is_none());
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn folder_is_private_and_planted_temp_files_are_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/p");
        let p = Profile::open(&dir).unwrap();
        let kp = KeyPair::generate().unwrap();
        let secret = dir.join(SECRET_FILE);
        let tmp = temp_path(&secret);
        // A world-readable file planted under the temporary name (its folder made
        // first, as an attacker with access would).
        p.save().unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        std::fs::write(&tmp, b"planted").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        p.remember_secret(&kp).unwrap();
        assert_eq!(mode(&secret), 0o600);
        assert!(!tmp.exists());
        assert_eq!(
            p.remembered_secret().unwrap().unwrap().public(),
            kp.public()
        );

        // A symbolic link planted under the temporary name: the file it points to
        // is not written, and the secret is a fresh regular file.
        let outside = t.path().join("outside");
        std::fs::write(&outside, b"untouched").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, &tmp).unwrap();
        p.remember_secret(&kp).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"untouched");
        assert_eq!(mode(&outside), 0o644);
        assert!(
            std::fs::symlink_metadata(&secret)
                .unwrap()
                .file_type()
                .is_file()
        );
        assert_eq!(mode(&secret), 0o600);
        assert!(std::fs::symlink_metadata(&tmp).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = Profile::open(t.path().join("p")).unwrap();
        let kp = KeyPair::generate().unwrap();
        p.remember_secret(&kp).unwrap();
        let secret = t.path().join("p").join(SECRET_FILE);
        for m in [0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(m)).unwrap();
            let e = p.remembered_secret().unwrap_err();
            assert!(matches!(e, ClientError::Profile { .. }), "{e:?}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(p.remembered_secret().unwrap().is_some());
        // A symbolic link in its place is refused too.
        let real = t.path().join("real.key");
        std::fs::rename(&secret, &real).unwrap();
        std::os::unix::fs::symlink(&real, &secret).unwrap();
        let e = p.remembered_secret().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
