//! The syncer thread: one fdatasync over every batch written since the last one
//! started, then the index update and the replies (group commit).

use std::fs::{self, File};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::index::Loc;
use super::shared::Shared;
use crate::{MessageInfo, Result};

/// A record of a written batch, as the syncer applies it to the index once durable (the
/// message data is already in the page cache and has been dropped).
pub(super) enum Applied {
    /// Inline message; `offset` is where its data starts in the segment.
    Message {
        info: MessageInfo,
        offset: u64,
        rec_len: u64,
    },
    /// Blob reference.
    Blob {
        info: MessageInfo,
        file: u64,
        rec_len: u64,
    },
    /// Tombstone.
    Delete {
        id: u64,
        mailbox: String,
        rec_len: u64,
    },
    /// A message's new note.
    Note {
        id: u64,
        mailbox: String,
        note: Vec<u8>,
        rec_len: u64,
    },
}

/// One batch written to the active segment (page cache), waiting for its fdatasync.
pub(super) struct Written {
    pub(super) file: Arc<File>,
    pub(super) segment: u64,
    /// End of the batch's last record in the segment.
    pub(super) end: u64,
    pub(super) bytes: u64,
    pub(super) records: Vec<(oneshot::Sender<Result<u64>>, Applied)>,
}

/// Work for the syncer thread, in log order.
pub(super) enum Job {
    Sync(Written),
    /// Answered once every job sent before it is durable and acknowledged (or failed).
    Barrier(mpsc::Sender<()>),
}

/// The syncer thread: one fdatasync at a time over everything written since the last
/// one started, then the index update and the replies.
pub(super) struct Syncer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Job>,
}

impl Syncer {
    pub(super) fn run(self) {
        let mut next: Option<Job> = None;
        loop {
            let job = match next.take() {
                Some(j) => j,
                None => match self.rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            };
            let first = match job {
                Job::Barrier(tx) => {
                    let _ = tx.send(());
                    continue;
                }
                Job::Sync(w) => w,
            };
            // Every batch already written joins this fdatasync (same segment: a rotation
            // is preceded by a barrier).
            let mut group = vec![first];
            loop {
                match self.rx.try_recv() {
                    Ok(Job::Sync(w)) if w.segment == group[0].segment => group.push(w),
                    Ok(j) => {
                        next = Some(j);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let n = group.len() as u64;
            commit_group(&self.shared, group);
            // After the replies: the writer may now sync on its own again.
            self.shared.sync_in_flight.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// One fdatasync that started after every batch of `group` was written (and after every
/// earlier batch was acknowledged); then apply and acknowledge them, or fail them all.
/// Run by the syncer, or by the writer itself when nothing is in flight.
pub(super) fn commit_group(shared: &Shared, group: Vec<Written>) {
    // Poisoned: a write or fsync failed since the last repair. A batch written after
    // the last acknowledged one may have lost its pages (a failed fsync can drop them)
    // or follow a torn batch; it must never be acknowledged. The writer repairs first.
    let ok = !shared.poisoned.load(Ordering::Acquire) && {
        let file = &group[group.len() - 1].file;
        let _one = shared.sync_lock.lock();
        match log_sync(shared, file) {
            Err(e) => {
                // Before the lock is released, like the preallocator.
                shared.fail("syncing the log", &e);
                tracing::error!(error = %e, "mail log fsync failed; its batches are not stored");
                false
            }
            // Another fdatasync (the preallocator's) or a write failed since: its
            // error may have been this file's; trust nothing.
            Ok(()) => !shared.poisoned.load(Ordering::Acquire),
        }
    };
    if !ok {
        for w in group {
            for (done, _) in w.records {
                let _ = done.send(Err(shared.failure_error()));
            }
        }
        return;
    }
    apply_group(shared, group);
}

/// The log's fdatasync (tests can make it fail).
pub(super) fn log_sync(shared: &Shared, file: &File) -> io::Result<()> {
    #[cfg(test)]
    if shared.inject_sync_error.load(Ordering::Acquire) {
        shared.metrics.observe_fsync(std::time::Duration::ZERO);
        return Err(io::Error::other("injected fdatasync error"));
    }
    shared.fsync(file, true)
}

/// Updates the index, then unlinks deleted blobs, then completes the waiters.
pub(super) fn apply_group(shared: &Shared, group: Vec<Written>) {
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut dead_blobs = Vec::new();
    let mut replies = Vec::new();
    {
        let mut index = shared.index.lock();
        for w in group {
            records += w.records.len() as u64;
            bytes += w.bytes;
            index.segments.insert(w.segment, w.end);
            for (done, a) in w.records {
                let reply = match a {
                    Applied::Message {
                        info,
                        offset,
                        rec_len,
                    } => {
                        let id = info.id;
                        let loc = Loc::Inline {
                            segment: w.segment,
                            offset,
                        };
                        index.apply_message(info, loc, rec_len);
                        id
                    }
                    Applied::Blob {
                        info,
                        file,
                        rec_len,
                    } => {
                        let id = info.id;
                        index.apply_message(info, Loc::Blob { file }, rec_len);
                        id
                    }
                    Applied::Delete {
                        id,
                        mailbox,
                        rec_len,
                    } => match index.apply_delete(id, &mailbox, rec_len) {
                        Some(e) => {
                            if let Loc::Blob { file } = e.loc {
                                dead_blobs.push(file);
                            }
                            1
                        }
                        None => 0,
                    },
                    Applied::Note {
                        id,
                        mailbox,
                        note,
                        rec_len,
                    } => u64::from(index.apply_note(id, &mailbox, note, rec_len)),
                };
                replies.push((done, reply));
            }
        }
    }
    // One group commit per log fdatasync.
    shared.metrics.observe_batch(records, bytes);
    shared.acknowledged();
    // The tombstone is durable: the blob may go (before the reply, so a finished
    // delete has freed the space). A crash before this leaves an orphan, removed
    // on the next open.
    for file in dead_blobs {
        if let Err(e) = fs::remove_file(shared.blob_path(file)) {
            tracing::warn!(file, error = %e, "could not remove a deleted blob");
        }
    }
    for (done, reply) in replies {
        let _ = done.send(Ok(reply));
    }
}
