//! State shared by the store's handles and its threads, file naming, and the fsync
//! helpers that feed the metrics.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use parking_lot::Mutex;

use super::index::Index;
use crate::fsutil::sync_dir;
use crate::metrics::StoreMetrics;
use crate::{Result, StoreError};

/// State shared by the handles and the writer thread.
pub(super) struct Shared {
    pub(super) mail: PathBuf,
    pub(super) blobs: PathBuf,
    pub(super) blobs_tmp: PathBuf,
    pub(super) index: Mutex<Index>,
    /// Number of the next blob file (independent of message ids, which the writer
    /// assigns only when the BlobRef reaches the log).
    pub(super) next_blob: AtomicU64,
    /// Bytes reserved by deliveries buffering in memory, and the most allowed.
    pub(super) inline_used: AtomicU64,
    pub(super) inline_budget: u64,
    pub(super) metrics: StoreMetrics,
    /// Set after a failed write/fsync: the store accepts no more writes.
    pub(super) failed: AtomicBool,
    pub(super) readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Held around every fdatasync of the active segment: one in flight per file, so a
    /// write-back error cannot be reported to one call while another succeeds.
    pub(super) sync_lock: Mutex<()>,
    /// Batches handed to the syncer and not yet acknowledged (or failed).
    pub(super) sync_in_flight: AtomicU64,
    /// Tests: the syncer's next fdatasyncs fail.
    #[cfg(test)]
    pub(super) inject_sync_error: AtomicBool,
}

impl Shared {
    pub(super) fn segment_path(&self, n: u64) -> PathBuf {
        segment_path(&self.mail, n)
    }

    pub(super) fn blob_path(&self, file: u64) -> PathBuf {
        self.blobs.join(blob_name(file))
    }

    pub(super) fn segment_reader(&self, n: u64) -> io::Result<Arc<File>> {
        let mut r = self.readers.lock();
        if let Some(f) = r.get(&n) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.segment_path(n))?);
        r.insert(n, f.clone());
        Ok(f)
    }

    pub(super) fn fsync(&self, f: &File, data_only: bool) -> io::Result<()> {
        let t = Instant::now();
        let r = if data_only {
            f.sync_data()
        } else {
            f.sync_all()
        };
        self.metrics.observe_fsync(t.elapsed());
        r
    }

    pub(super) fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        let t = Instant::now();
        let r = sync_dir(dir);
        self.metrics.observe_fsync(t.elapsed());
        r
    }
}

pub(super) fn blob_name(file: u64) -> String {
    format!("{file:016x}")
}

pub(super) fn segment_path(mail: &Path, n: u64) -> PathBuf {
    mail.join(format!("segment-{n:08}.log"))
}

/// Segment numbers present in `mail`, ascending.
pub(super) fn list_segments(mail: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(mail) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name
            .strip_prefix("segment-")
            .and_then(|s| s.strip_suffix(".log"))
        else {
            continue;
        };
        if let Ok(n) = num.parse::<u64>() {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(super) fn new_shared(mail: PathBuf, inline_budget: u64) -> Shared {
    Shared {
        blobs: mail.join("blobs"),
        blobs_tmp: mail.join("blobs").join("tmp"),
        mail,
        index: Mutex::new(Index::default()),
        next_blob: AtomicU64::new(1),
        inline_used: AtomicU64::new(0),
        inline_budget,
        metrics: StoreMetrics::default(),
        failed: AtomicBool::new(false),
        readers: Mutex::new(HashMap::new()),
        sync_lock: Mutex::new(()),
        sync_in_flight: AtomicU64::new(0),
        #[cfg(test)]
        inject_sync_error: AtomicBool::new(false),
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e.to_string())))?
}
