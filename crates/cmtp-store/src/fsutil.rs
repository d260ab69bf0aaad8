//! File-system helpers shared by the user store and the mail log: private file modes and
//! durable directory creation.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every file the store creates: mail and keys are private to the server's user.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the store creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// fsyncs a directory so a rename or creation in it is durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// `OpenOptions` for a new private file (mode 0600 whatever the umask allows more of).
pub(crate) fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates a new private file for writing, failing if it exists.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    private_file().write(true).create_new(true).open(path)
}

/// Prefix of the temporaries of [`write_atomic`] (a name no stored file has).
pub(crate) const ATOMIC_TMP_PREFIX: &str = ".tmp-";

/// Replaces `dir/name` atomically and durably: writes a private temporary in `dir`,
/// fsyncs it, renames it over `name`, fsyncs `dir`. A reader sees the old file or the
/// new one, whole; a crash leaves one of them (and maybe a temporary).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        "{ATOMIC_TMP_PREFIX}{name}-{}-{n}",
        std::process::id()
    ));
    let result = (|| {
        let mut f = create_new_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// `create_dir_all` that makes the new directories durable: each directory it created
/// and the existing ancestor it was created in are fsync'd, deepest first (a directory's
/// entry lives in its parent). Returns the directories fsync'd, so nothing is synced
/// (and nothing returned) when `path` already existed.
pub(crate) fn create_dirs_synced(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = path;
    loop {
        match fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(missing);
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let mut synced = missing;
    if let Some(root) = synced.last().and_then(|d| d.parent()) {
        let root = if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            root
        };
        synced.push(root.to_path_buf());
    }
    for d in &synced {
        sync_dir(d)?;
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_directories_and_their_parent_are_synced() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let tmp = data.join("mail/blobs/tmp");
        let synced = create_dirs_synced(&tmp).unwrap();
        assert_eq!(
            synced,
            vec![
                tmp.clone(),
                data.join("mail/blobs"),
                data.join("mail"),
                data.clone(),
                root.path().to_path_buf(),
            ]
        );
        assert!(tmp.is_dir());
        let mode = fs::metadata(data.join("mail"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        // Already there: nothing to sync. One new level: it and its parent.
        assert!(create_dirs_synced(&tmp).unwrap().is_empty());
        let users = data.join("users");
        assert_eq!(
            create_dirs_synced(&users).unwrap(),
            vec![users.clone(), data.clone()]
        );
    }

    #[test]
    fn private_files_are_0600() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("f");
        drop(create_new_private(&p).unwrap());
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert!(
            create_new_private(&p).is_err(),
            "create_new must not replace"
        );
    }
}
