//! Read/unread state, kept in the profile (`read.toml`): the server's mailbox has no
//! "seen" flag, so which messages this person has read is local knowledge.
//!
//! The file names the account and server it belongs to; after a login to another
//! account or server in the same folder, its ids mean other messages, so it is
//! ignored (and replaced at the next change). It is written atomically like the rest
//! of the profile. Two `cmtp` processes marking messages at the same moment may lose
//! one of the marks (last writer wins); nothing worse.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};
use crate::profile::{Profile, write_atomic};

const READ_FILE: &str = "read.toml";

/// Most ids kept: past this, the lowest (oldest) are dropped, so the file stays small
/// (about 1 MiB) however long the profile is used.
pub const MAX_READ_IDS: usize = 100_000;

/// Largest `read.toml` read back; a larger one is damaged or planted.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct ReadFile {
    address: String,
    server: String,
    #[serde(default)]
    read: BTreeSet<u64>,
}

impl Profile {
    /// The ids of the messages marked read, for the profile's account and server
    /// (empty before the first `mark_read`, or when the file belongs to another login).
    pub fn read_ids(&self) -> Result<BTreeSet<u64>> {
        Ok(self.read_file()?.read)
    }

    /// Marks message `id` read (or unread when `read` is false) and saves the state.
    /// Returns whether anything changed.
    pub fn mark_read(&self, id: u64, read: bool) -> Result<bool> {
        let mut f = self.read_file()?;
        let changed = if read {
            f.read.insert(id)
        } else {
            f.read.remove(&id)
        };
        if changed {
            self.save_read_file(f)?;
        }
        Ok(changed)
    }

    /// Forgets the read marks of messages not in `present` (deleted ones, whose ids
    /// are not listed any more). Call it with the ids of the whole mailbox listing.
    pub fn keep_read_marks(&self, present: &BTreeSet<u64>) -> Result<()> {
        let mut f = self.read_file()?;
        let before = f.read.len();
        f.read.retain(|id| present.contains(id));
        if f.read.len() != before {
            self.save_read_file(f)?;
        }
        Ok(())
    }

    /// The state for this login: the file when it names the profile's account and
    /// server, else an empty one carrying them.
    fn read_file(&self) -> Result<ReadFile> {
        let c = self.require_config()?;
        let fresh = || ReadFile {
            address: c.address.clone(),
            server: c.server.clone(),
            read: BTreeSet::new(),
        };
        let p = self.dir().join(READ_FILE);
        let bad = |detail: String| ClientError::Profile {
            path: p.display().to_string(),
            detail,
        };
        let text = match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh()),
            Err(e) => return Err(bad(e.to_string())),
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(bad(format!(
                    "{} bytes, more than a read state ever needs; remove the file to start \
                     afresh (all messages then show as unread)",
                    m.len()
                )));
            }
            Ok(_) => std::fs::read_to_string(&p).map_err(|e| bad(e.to_string()))?,
        };
        let f: ReadFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if f.address == c.address && f.server == c.server {
            Ok(f)
        } else {
            Ok(fresh())
        }
    }

    fn save_read_file(&self, mut f: ReadFile) -> Result<()> {
        while f.read.len() > MAX_READ_IDS {
            f.read.pop_first();
        }
        let text = toml::to_string(&f).map_err(|e| ClientError::Profile {
            path: self.dir().join(READ_FILE).display().to_string(),
            detail: e.to_string(),
        })?;
        write_atomic(&self.dir().join(READ_FILE), text.as_bytes(), false)
    }
}

#[cfg(test)]
mod tests {
    use crate::profile::{Compat, ProfileConfig, TimeoutConfig};

    use super::*;

    fn profile(dir: &std::path::Path, address: &str) -> Profile {
        let mut p = Profile::open(dir).unwrap();
        p.config = Some(ProfileConfig {
            address: address.into(),
            server: "127.0.0.1:9001".into(),
            public_key: "00".repeat(32),
            compat: Compat::Cmtp1,
            timeouts: TimeoutConfig::default(),
            dialect: None,
            opaque: false,
        });
        p.save().unwrap();
        p
    }

    #[test]
    fn marks_persist_per_login_and_are_bounded() {
        let t = tempfile::tempdir().unwrap();
        let p = profile(t.path(), "alice@example.org");
        assert!(p.read_ids().unwrap().is_empty());
        assert!(p.mark_read(7, true).unwrap());
        assert!(!p.mark_read(7, true).unwrap());
        assert!(p.mark_read(9, true).unwrap());
        let again = Profile::open(t.path()).unwrap();
        assert_eq!(again.read_ids().unwrap(), BTreeSet::from([7, 9]));
        assert!(again.mark_read(7, false).unwrap());
        assert_eq!(p.read_ids().unwrap(), BTreeSet::from([9]));
        p.keep_read_marks(&BTreeSet::from([1, 2])).unwrap();
        assert!(p.read_ids().unwrap().is_empty());
        // Another account in the same folder does not inherit the marks.
        p.mark_read(3, true).unwrap();
        let bob = profile(t.path(), "bob@example.org");
        assert!(bob.read_ids().unwrap().is_empty());
        // Bounded: the oldest ids go first.
        let mut f = bob.read_file().unwrap();
        f.read.extend(0..(MAX_READ_IDS as u64 + 10));
        bob.save_read_file(f).unwrap();
        let ids = bob.read_ids().unwrap();
        assert_eq!(ids.len(), MAX_READ_IDS);
        assert_eq!(ids.first(), Some(&10));
    }

    #[test]
    fn a_damaged_file_is_a_profile_error() {
        let t = tempfile::tempdir().unwrap();
        let p = profile(t.path(), "alice@example.org");
        std::fs::write(t.path().join(READ_FILE), "read = [[[").unwrap();
        let e = p.read_ids().unwrap_err();
        assert!(matches!(e, ClientError::Profile { .. }), "{e:?}");
        let big = std::fs::File::create(t.path().join(READ_FILE)).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = p.read_ids().unwrap_err();
        assert!(e.to_string().contains("remove the file"), "{e}");
    }
}
