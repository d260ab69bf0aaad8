//! Opening as the writer: [`lock_exclusive`], then [`recover`] the log (scan, verify,
//! truncate a torn tail), [`sweep_blobs`] (temporaries and orphans), and
//! [`spawn_writer`] (the writer, syncer and preallocator threads).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::index::{Index, Loc};
use super::options::Options;
use super::prealloc::{PREALLOC_STEP, PreState, Prealloc, prealloc_run};
use super::scan::{scan_segment, tail_is_zero};
use super::shared::{Shared, blob_name, list_segments};
use super::syncer::Syncer;
use super::writer::{Req, Writer};
use crate::fsutil::{create_new_private, private_file};
use crate::record::{self, SEGMENT_HEADER};
use crate::{Result, StoreError};

/// Takes `flock(LOCK_EX | LOCK_NB)` on `path` (created if missing), held as long as the
/// returned file is open: [`StoreError::Locked`] if another process holds it.
pub(super) fn lock_exclusive(path: &Path) -> Result<File> {
    let f = private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            StoreError::Locked
        } else {
            e.into()
        });
    }
    Ok(f)
}

/// Scans and verifies every segment in order and rebuilds the index. A torn or
/// preallocated tail of the last segment is truncated and fsync'd (an intact last
/// segment is fsync'd too); damage in an older segment is [`StoreError::Corrupt`]. Creates the first segment of an empty log.
/// Returns the index and the number of the active (last) segment.
pub(super) fn recover(sh: &Shared) -> Result<(Index, u64)> {
    let mut index = Index::new(sh.relay_window);
    let segments = list_segments(&sh.mail)?;
    let last = segments.last().copied();
    for &n in &segments {
        let path = sh.segment_path(n);
        let (end, len) = scan_segment(&path, n, 0, &mut index)?;
        index.segments.insert(n, end.max(SEGMENT_HEADER));
        if end == len && end >= SEGMENT_HEADER {
            if Some(n) == last {
                // A crashed writer's last records may still be only in the page cache:
                // make them durable before the index shows them (what a repair
                // truncates back to must be durable).
                sh.fsync(&OpenOptions::new().write(true).open(&path)?, true)?;
            }
            continue;
        }
        // The active segment is zero-filled ahead of its records: a tail of zeros is
        // that preallocation; anything else is a batch torn by a crash.
        let zero_tail = end >= SEGMENT_HEADER && tail_is_zero(&path, end, len)?;
        if Some(n) != last && !zero_tail {
            // Older segments were complete and durable before the next one began:
            // damage there is not a torn write.
            return Err(StoreError::Corrupt(format!(
                "{} is invalid at byte {end} of {len}",
                path.display()
            )));
        }
        if zero_tail {
            tracing::debug!(
                segment = n,
                valid = end,
                len,
                "trimming preallocated log tail"
            );
        } else {
            tracing::warn!(segment = n, valid = end, len, "truncating a torn log tail");
        }
        let f = OpenOptions::new().write(true).open(&path)?;
        if end < SEGMENT_HEADER {
            f.set_len(0)?;
            f.write_all_at(&record::segment_header(n), 0)?;
        } else {
            f.set_len(end)?;
        }
        sh.fsync(&f, false)?;
    }
    let segment = match last {
        Some(n) => n,
        None => {
            let mut f = create_new_private(&sh.segment_path(1))?;
            f.write_all(&record::segment_header(1))?;
            sh.fsync(&f, false)?;
            sh.fsync_dir(&sh.mail)?;
            index.segments.insert(1, SEGMENT_HEADER);
            1
        }
    };
    Ok((index, segment))
}

/// Deletes the temporaries of aborted deliveries and every blob file no live BlobRef
/// names (its BlobRef never became durable, or it was deleted and the crash came before
/// the unlink); a live BlobRef without its file is [`StoreError::Corrupt`]. Returns the
/// highest blob file number present, so new files are numbered above every name seen.
pub(super) fn sweep_blobs(sh: &Shared, index: &Index) -> Result<u64> {
    for e in fs::read_dir(&sh.blobs_tmp)? {
        let p = e?.path();
        let _ = fs::remove_file(&p);
    }
    let mut live = HashSet::new();
    for mb in index.mailboxes.values() {
        for e in mb.messages.values() {
            if let Loc::Blob { file } = e.loc {
                live.insert(file);
            }
        }
    }
    // New blob files are numbered above every name present, live or not.
    let mut max_blob = 0;
    for e in fs::read_dir(&sh.blobs)? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let name = e.file_name();
        let file = name.to_str().and_then(|s| u64::from_str_radix(s, 16).ok());
        if let Some(file) = file {
            max_blob = max_blob.max(file);
            if live.contains(&file) {
                continue;
            }
        }
        tracing::info!(blob = ?name, "removing an unreferenced blob");
        let _ = fs::remove_file(e.path());
    }
    for (name, mb) in &index.mailboxes {
        for (id, e) in &mb.messages {
            if let Loc::Blob { file } = e.loc
                && !sh.blob_path(file).exists()
            {
                return Err(StoreError::Corrupt(format!(
                    "blob {} of message {id} in {name:?} is missing",
                    blob_name(file)
                )));
            }
        }
    }
    Ok(max_blob)
}

/// Starts the preallocator, the syncer and the writer on the active segment `segment`,
/// whose records end at `pos`. Returns the writer's request queue and thread; if a
/// spawn fails, the threads already started are stopped.
pub(super) fn spawn_writer(
    shared: &Arc<Shared>,
    segment: u64,
    pos: u64,
    last_ids: HashMap<String, u64>,
    opts: &Options,
) -> Result<(mpsc::Sender<Req>, JoinHandle<()>)> {
    let path = shared.segment_path(segment);
    let file = Arc::new(OpenOptions::new().write(true).open(&path)?);
    // The preallocator's own description of the same file (see `PreState::file`).
    let pre_file = Arc::new(OpenOptions::new().write(true).open(&path)?);
    let pre = Arc::new(Prealloc {
        state: Mutex::new(PreState {
            file: Some(pre_file),
            generation: 0,
            alloc_end: pos,
            want: pos,
            limit: opts.segment_size,
            active: false,
            busy: false,
            fallback: false,
            stop: false,
        }),
        cv: Condvar::new(),
    });
    let step = PREALLOC_STEP.min(opts.segment_size.max(SEGMENT_HEADER));
    let preallocator = {
        let (shared, pre) = (shared.clone(), pre.clone());
        std::thread::Builder::new()
            .name("cmtp-store-zero".into())
            .spawn(move || prealloc_run(shared, pre, step))?
    };
    let (sync_tx, sync_rx) = mpsc::channel();
    let syncer = Syncer {
        shared: shared.clone(),
        rx: sync_rx,
    };
    let syncer = std::thread::Builder::new()
        .name("cmtp-store-sync".into())
        .spawn(move || syncer.run());
    let syncer = match syncer {
        Ok(t) => t,
        Err(e) => {
            pre.state.lock().stop = true;
            pre.cv.notify_all();
            let _ = preallocator.join();
            return Err(e.into());
        }
    };
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        shared: shared.clone(),
        rx,
        last_ids,
        file,
        segment,
        pos,
        opts: opts.clone(),
        buf: Vec::with_capacity(1 << 20),
        sync_tx: Some(sync_tx),
        syncer: Some(syncer),
        next: None,
        pre,
        preallocator: Some(preallocator),
    };
    // If this spawn fails, dropping the writer stops the syncer and the preallocator.
    let thread = std::thread::Builder::new()
        .name("cmtp-store-writer".into())
        .spawn(move || writer.run())?;
    Ok((tx, thread))
}
