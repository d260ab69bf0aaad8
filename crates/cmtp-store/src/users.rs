//! Users as one directory each: `<data>/users/<name>/{public.key,xzibit,created}`, plus
//! `opaque` once the user has an OPAQUE login (docs/protocol.md D8).
//!
//! Written in `<data>/tmp/`, fsync'd, then renamed into place without replacing, so a
//! user directory is always complete; read from disk on every call so the admin CLI's
//! changes are seen by the server at once.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsutil::{DIR_MODE, create_dirs_synced, create_new_private, sync_dir};
use crate::path_safe::ensure_path_safe;
use crate::{Result, StoreError, UserRecord, UserStore};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Age after which a temporary entry is certainly abandoned.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// The embedded user store over a data directory.
#[derive(Debug, Clone)]
pub struct FsUsers {
    users: PathBuf,
    tmp: PathBuf,
}

impl FsUsers {
    /// Opens (creating if needed) `<data>/users` and `<data>/tmp`.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self> {
        let data = data_dir.as_ref();
        let users = data.join("users");
        let tmp = data.join("tmp");
        // New directories are fsync'd with their parents (a user added next must not
        // lose `users/` itself in a crash).
        create_dirs_synced(&users)?;
        create_dirs_synced(&tmp)?;
        // Leftovers of an add/remove interrupted by a crash. Only old ones: another
        // process (the admin CLI) may be adding a user right now.
        for e in fs::read_dir(&tmp)?.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            let name = e.file_name();
            let ours = name
                .to_str()
                .is_some_and(|n| n.starts_with("user-") || n.starts_with("removed-"));
            if old && ours {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(Self { users, tmp })
    }

    /// Opens without creating or cleaning anything (the admin CLI beside a running
    /// server); a missing `users` directory reads as no users. Writes still work: they
    /// create the directories they need.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Self {
        let data = data_dir.as_ref();
        Self {
            users: data.join("users"),
            tmp: data.join("tmp"),
        }
    }

    fn dir(&self, name: &str) -> Result<PathBuf> {
        ensure_path_safe(name)?;
        Ok(self.users.join(name))
    }

    fn unique_tmp(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{what}-{}-{n}", std::process::id()))
    }
}

/// Reads a file, `None` if it (or its directory) does not exist.
fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn parse_key(bytes: Vec<u8>, path: &Path) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{} is not 32 bytes", path.display())))
}

/// Writes a new private (0600) file and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_new_private(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `rename` that fails with `AlreadyExists` instead of replacing the target.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystem without RENAME_NOREPLACE: check, then rename(2), which refuses to
        // replace a non-empty directory (ours never is empty), so the race is still safe.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if to.exists() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => io::ErrorKind::AlreadyExists.into(),
                _ => e,
            })
        }
        _ => Err(err),
    }
}

/// `renameat2(RENAME_EXCHANGE)`: swaps two existing directories atomically.
fn rename_exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// File of the OPAQUE login inside a user's directory.
const OPAQUE_FILE: &str = "opaque";

impl UserStore for FsUsers {
    fn opaque_login(&self, name: &str) -> Result<Option<Vec<u8>>> {
        read_opt(&self.dir(name)?.join(OPAQUE_FILE))
    }

    fn set_opaque_login(&self, name: &str, login: &[u8], xzibit: Option<&[u8]>) -> Result<bool> {
        let target = self.dir(name)?;
        let Some(current) = self.get(name)? else {
            return Ok(false);
        };
        create_dirs_synced(&self.tmp)?;
        let tmp = self.unique_tmp("user");
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(DIR_MODE).create(&tmp)?;
        }
        // A complete new directory, then one atomic swap: the xzibit and the OPAQUE
        // record change together or not at all.
        let result = (|| -> Result<bool> {
            write_synced(&tmp.join("public.key"), &current.public_key)?;
            write_synced(
                &tmp.join("xzibit"),
                xzibit.unwrap_or(current.xzibit.as_slice()),
            )?;
            if target.join("created").exists() {
                write_synced(&tmp.join("created"), current.created.to_string().as_bytes())?;
            }
            write_synced(&tmp.join(OPAQUE_FILE), login)?;
            sync_dir(&tmp)?;
            match rename_exchange(&tmp, &target) {
                Ok(()) => {}
                // Removed meanwhile: nothing to update.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            sync_dir(&self.users)?;
            Ok(true)
        })();
        // After a swap `tmp` holds the old directory; otherwise the unused new one.
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn get(&self, name: &str) -> Result<Option<UserRecord>> {
        let dir = self.dir(name)?;
        let key_path = dir.join("public.key");
        let Some(key) = read_opt(&key_path)? else {
            return Ok(None);
        };
        let public_key = parse_key(key, &key_path)?;
        let xzibit = read_opt(&dir.join("xzibit"))?.unwrap_or_default();
        // Users imported from the 2016 tool may lack `created`: read as 0.
        let created = match read_opt(&dir.join("created"))? {
            None => 0,
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("{}/created", dir.display())))?,
        };
        Ok(Some(UserRecord {
            name: name.to_owned(),
            public_key,
            xzibit,
            created,
        }))
    }

    fn public_key(&self, name: &str) -> Result<Option<[u8; 32]>> {
        let path = self.dir(name)?.join("public.key");
        read_opt(&path)?.map(|b| parse_key(b, &path)).transpose()
    }

    fn xzibit(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let dir = self.dir(name)?;
        if !dir.join("public.key").exists() {
            return Ok(None);
        }
        Ok(Some(read_opt(&dir.join("xzibit"))?.unwrap_or_default()))
    }

    fn add(&self, user: &UserRecord) -> Result<()> {
        let target = self.dir(&user.name)?;
        create_dirs_synced(&self.users)?;
        create_dirs_synced(&self.tmp)?;
        let tmp = self.unique_tmp("user");
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().mode(DIR_MODE).create(&tmp)?;
        }
        let result = (|| -> Result<()> {
            write_synced(&tmp.join("public.key"), &user.public_key)?;
            write_synced(&tmp.join("xzibit"), &user.xzibit)?;
            write_synced(&tmp.join("created"), user.created.to_string().as_bytes())?;
            sync_dir(&tmp)?;
            rename_noreplace(&tmp, &target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    StoreError::AlreadyExists
                } else {
                    e.into()
                }
            })?;
            sync_dir(&self.users)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let dir = self.dir(name)?;
        create_dirs_synced(&self.tmp)?;
        let grave = self.unique_tmp("removed");
        // Rename first (atomic: the user is gone at once), then delete at leisure.
        match fs::rename(&dir, &grave) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.users)?;
        fs::remove_dir_all(&grave)?;
        Ok(true)
    }

    fn list_users(&self) -> Result<Vec<UserRecord>> {
        let entries = match fs::read_dir(&self.users) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            // Names that are not UTF-8 or not path-safe cannot have been written by us: skip.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if ensure_path_safe(&name).is_err() {
                continue;
            }
            if let Some(u) = self.get(&name)? {
                out.push(u);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
