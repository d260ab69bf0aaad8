//! State shared by the store's handles and its threads, file naming, and the fsync
//! helpers that feed the metrics.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::index::Index;
use crate::clock::unix_now;
use crate::fsutil::sync_dir;
use crate::metrics::StoreMetrics;
use crate::{Result, StoreError, StoreHealth};

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
    /// [`super::Options::relay_id_window_secs`], for the indexes built from the log.
    pub(super) relay_window: u64,
    pub(super) metrics: StoreMetrics,
    /// Set by every failed write or fsync of the log (before the sync lock is released,
    /// for a sync): from then on nothing is acknowledged until the writer has repaired
    /// the active segment (truncated it to its last acknowledged record and fsync'd it).
    pub(super) poisoned: AtomicBool,
    /// The failure the health report shows; kept until a batch is acknowledged again
    /// after the repair.
    pub(super) failure: Mutex<Option<Failure>>,
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

/// A failed write or fsync of the log, as the health report shows it.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// The OS error's kind (`StorageFull` for a full disk), kept for the waiters' errors.
    pub(super) kind: io::ErrorKind,
    /// What failed and why.
    pub(super) reason: String,
    /// Unix seconds of the first failure since the store was last healthy.
    pub(super) since: u64,
}

impl Shared {
    /// Records a failed write or fsync of the log: poisons the store (nothing not yet
    /// acknowledged will be), counts the failure and makes the health degraded. Called
    /// under the sync lock when a sync failed, so the syncer sees the poison after its
    /// own fdatasync.
    pub(super) fn fail(&self, what: &str, e: &io::Error) {
        let mut f = self.failure.lock();
        let repeat = self.poisoned.swap(true, Ordering::AcqRel);
        self.metrics.observe_write_failure();
        // While poisoned, later failures are consequences or repeats of the first one:
        // keep its reason (the root cause) and kind.
        if repeat && f.is_some() {
            return;
        }
        let since = f.as_ref().map_or_else(unix_now, |old| old.since);
        *f = Some(Failure {
            kind: e.kind(),
            reason: format!("{what}: {e}"),
            since,
        });
    }

    /// A batch was acknowledged: healthy again, unless a failure poisoned the store
    /// meanwhile (checked under the same lock as [`Shared::fail`]).
    pub(super) fn acknowledged(&self) {
        let mut f = self.failure.lock();
        if f.is_some() && !self.poisoned.load(Ordering::Acquire) {
            tracing::info!("mail log writes succeed again");
            *f = None;
        }
    }

    /// The error given to a waiter whose batch is failed because of the recorded
    /// failure (the OS error kind is kept, so a full disk reads as one).
    pub(super) fn failure_error(&self) -> StoreError {
        match &*self.failure.lock() {
            Some(f) => StoreError::Io(io::Error::new(f.kind, f.reason.clone())),
            None => StoreError::Io(io::Error::other("an earlier write of the log failed")),
        }
    }

    /// `Ok`, or `Degraded` with the recorded failure.
    pub(super) fn health(&self) -> StoreHealth {
        match &*self.failure.lock() {
            None => StoreHealth::Ok,
            Some(f) => StoreHealth::Degraded {
                reason: f.reason.clone(),
                since: f.since,
            },
        }
    }

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

pub(super) fn new_shared(mail: PathBuf, inline_budget: u64, relay_window: u64) -> Shared {
    Shared {
        blobs: mail.join("blobs"),
        blobs_tmp: mail.join("blobs").join("tmp"),
        mail,
        index: Mutex::new(Index::new(relay_window)),
        next_blob: AtomicU64::new(1),
        inline_used: AtomicU64::new(0),
        inline_budget,
        relay_window,
        metrics: StoreMetrics::default(),
        poisoned: AtomicBool::new(false),
        failure: Mutex::new(None),
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
        .map_err(|e| StoreError::TaskFailed(e.to_string()))?
}
