//! The preallocator thread: keeps the active segment zero-filled (written and durable)
//! ahead of the writer, so the syncer's fdatasyncs are data flushes only.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::shared::Shared;

/// The active segment is zero-filled ahead of the records in steps of this size.
pub(super) const PREALLOC_STEP: u64 = 8 * 1024 * 1024;

/// Zero-fill ahead of the writer, shared by the writer and the preallocator thread.
pub(super) struct PreState {
    /// The preallocator's own file description of the active segment (`None` while the
    /// writer rotates). Its own description, so its `sync_file_range` can never consume a
    /// write-back error that the syncer's `fdatasync` must see.
    pub(super) file: Option<Arc<File>>,
    /// Bumped at each rotation and repair: a step finished for an older segment (or an
    /// older length of this one) is ignored.
    pub(super) generation: u64,
    /// Zeros are written and durable up to here; the writer only writes below it.
    pub(super) alloc_end: u64,
    /// The writer's position (or the end it needs).
    pub(super) want: u64,
    /// Most the segment is filled to (its size, or more for one oversized batch).
    pub(super) limit: u64,
    /// The writer has written (or wants to write): until then a store opened and closed
    /// again leaves its segment as recovery left it.
    pub(super) active: bool,
    /// A step is being written outside the lock.
    pub(super) busy: bool,
    /// A step failed: no more zero-fill in this segment until a rotation or a repair
    /// resets it; the writer writes past `alloc_end` without waiting (once no step is
    /// `busy`, so the two never write the same bytes).
    pub(super) fallback: bool,
    pub(super) stop: bool,
}

pub(super) struct Prealloc {
    pub(super) state: Mutex<PreState>,
    pub(super) cv: Condvar,
}

/// How far ahead of the writer's position zeros are kept.
pub(super) const PREALLOC_AHEAD: u64 = PREALLOC_STEP;

/// The preallocator thread: keeps the active segment zero-filled (written and durable)
/// [`PREALLOC_AHEAD`] or more beyond the writer's position, in [`PREALLOC_STEP`] steps.
pub(super) fn prealloc_run(shared: Arc<Shared>, pre: Arc<Prealloc>, step: u64) {
    let zeros = vec![0u8; 1 << 20];
    let mut st = pre.state.lock();
    loop {
        if st.stop {
            return;
        }
        // One step at a time, so a writer waiting for the first one is woken early.
        let goal = st.want.saturating_add(PREALLOC_AHEAD).div_ceil(step) * step;
        let next_step = (st.alloc_end / step + 1) * step;
        let target = goal.min(next_step).min(st.limit.max(st.want));
        let file = match &st.file {
            Some(f) if st.active && !st.fallback && target > st.alloc_end => f.clone(),
            _ => {
                pre.cv.wait(&mut st);
                continue;
            }
        };
        let (from, generation) = (st.alloc_end, st.generation);
        st.busy = true;
        drop(st);
        let r = zero_fill(&shared, &file, &zeros, from, target);
        drop(file);
        st = pre.state.lock();
        st.busy = false;
        match r {
            Ok(()) if st.generation == generation => st.alloc_end = target,
            Ok(()) => {}
            Err(ZeroFillError::Write(e)) => {
                // No room for the zeros (or the write failed): the records may still
                // fit. Give the partial zeros back (nothing else writes at or past
                // `from` while this step runs) and let the writer go on without them.
                tracing::warn!(error = %e, "mail log preallocation failed; writing without it");
                shared.metrics.observe_prealloc_fallback();
                st.fallback = true;
            }
            Err(ZeroFillError::Sync(e)) => {
                // `zero_fill` already recorded the failure (the store is poisoned until
                // the writer repairs the segment); stop filling until then.
                tracing::error!(error = %e, "mail log preallocation sync failed");
                st.fallback = true;
            }
        }
        pre.cv.notify_all();
    }
}

/// Why a zero-fill step failed.
#[derive(Debug)]
pub(super) enum ZeroFillError {
    /// Writing the zeros failed (typically no space): the step was undone; nothing
    /// acknowledged is concerned.
    Write(io::Error),
    /// Flushing or syncing failed: the write-back error may belong to the writer's
    /// records in the same file, so the store is poisoned (see `Shared::fail`).
    Sync(io::Error),
}

impl std::fmt::Display for ZeroFillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Write(e) => write!(f, "writing zeros: {e}"),
            Self::Sync(e) => write!(f, "syncing zeros: {e}"),
        }
    }
}

/// Writes zeros over `from..to`, flushes them, then one `fdatasync` (under the store's
/// sync lock: one fdatasync at a time) commits the new size and extents, so the
/// syncer's later fdatasyncs over this region are data flushes only. A failed write
/// truncates the file back to `from` (the file ended there: only this step writes past
/// the writer's records); a failed flush or sync poisons the store before the sync lock
/// is released.
pub(super) fn zero_fill(
    shared: &Shared,
    file: &File,
    zeros: &[u8],
    from: u64,
    to: u64,
) -> Result<(), ZeroFillError> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        if let Err(e) = file.write_all_at(&zeros[..n], at) {
            if let Err(t) = file.set_len(from) {
                tracing::warn!(error = %t, "could not trim a failed preallocation");
            }
            return Err(ZeroFillError::Write(e));
        }
        at += n as u64;
    }
    // Start and wait for the data write-out outside the lock (the slow part).
    #[cfg(target_os = "linux")]
    {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        let off = i64::try_from(from).unwrap_or(i64::MAX);
        let len = i64::try_from(to - from).unwrap_or(i64::MAX);
        // SAFETY: a valid, owned file descriptor; plain integer arguments.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, len, flags) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let _one = shared.sync_lock.lock();
            shared.fail("flushing the log's preallocation", &e);
            return Err(ZeroFillError::Sync(e));
        }
    }
    let _one = shared.sync_lock.lock();
    shared.fsync(file, true).map_err(|e| {
        // Before the lock is released: the syncer checks the poison after its own sync.
        shared.fail("syncing the log's preallocation", &e);
        ZeroFillError::Sync(e)
    })
}
