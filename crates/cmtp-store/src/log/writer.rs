//! The writer thread: takes requests, assigns ids, writes batches into the page cache
//! and hands them to the syncer; rotates segments.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::budget::Budget;
use super::options::Options;
use super::prealloc::Prealloc;
use super::shared::Shared;
use super::syncer::{Applied, Job, Written, commit_group};
use crate::fsutil::create_new_private;
use crate::record::{self, KIND_MESSAGE2, SEGMENT_HEADER};
use crate::{MessageInfo, Result};

/// Data pieces above this go straight to the file instead of through the batch buffer.
pub(super) const DIRECT_WRITE: usize = 64 * 1024;

/// A record for the writer thread. Messages arrive without an id: the writer assigns it
/// as it serialises the record, so ids ascend in log order.
pub(super) enum Op {
    /// Inline message: metadata (id not yet set), the data and its CRC.
    Message {
        info: MessageInfo,
        crc: crc32fast::Hasher,
        /// Bytes of the record before the data (`record::message_head_len`).
        head_len: usize,
        data: Vec<u8>,
        /// The data's share of the inline budget, released once the writer is done.
        _budget: Budget,
    },
    /// Reference to an already durable blob file.
    BlobRef {
        info: MessageInfo,
        blob_crc: u32,
        file: u64,
        len: usize,
    },
    /// Tombstone.
    Delete {
        id: u64,
        mailbox: String,
        rec: Vec<u8>,
    },
    /// A message's new note (the whole encoded record, and the note for the index).
    Note {
        id: u64,
        mailbox: String,
        note: Vec<u8>,
        rec: Vec<u8>,
    },
}

impl Op {
    pub(super) fn len(&self) -> usize {
        match self {
            Op::Message { head_len, data, .. } => head_len + data.len(),
            Op::BlobRef { len, .. } => *len,
            Op::Delete { rec, .. } | Op::Note { rec, .. } => rec.len(),
        }
    }
}

pub(super) struct Req {
    pub(super) op: Op,
    /// `Ok(id)` for a message; `Ok(1)` if it existed, `Ok(0)` if not, for a delete or a
    /// note.
    pub(super) done: oneshot::Sender<Result<u64>>,
}

/// The writer thread's own state: takes requests, assigns ids, writes batches to the
/// page cache and hands them to the syncer without waiting for their fdatasync.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Req>,
    /// Per mailbox, the id of the last message record written: each
    /// mailbox has its own sequence, so a user's ids say nothing of others' traffic.
    pub(super) last_ids: HashMap<String, u64>,
    pub(super) file: Arc<File>,
    pub(super) segment: u64,
    pub(super) pos: u64,
    pub(super) opts: Options,
    pub(super) buf: Vec<u8>,
    pub(super) sync_tx: Option<mpsc::Sender<Job>>,
    pub(super) syncer: Option<JoinHandle<()>>,
    /// A request taken from the queue to see whether more are waiting.
    pub(super) next: Option<Req>,
    pub(super) pre: Arc<Prealloc>,
    pub(super) preallocator: Option<JoinHandle<()>>,
}

impl Drop for Writer {
    /// The request channel closed (or the thread never started, or it panicked): let
    /// the syncer finish what was written, then stop the preallocator.
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Nothing more will be written: say so in the health report.
            let e = io::Error::other("the writer thread panicked");
            self.shared.fail("the mail log's writer", &e);
        }
        self.sync_tx.take();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.pre.state.lock().stop = true;
        self.pre.cv.notify_all();
        if let Some(t) = self.preallocator.take() {
            let _ = t.join();
        }
    }
}

impl Writer {
    pub(super) fn run(mut self) {
        loop {
            let first = match self.next.take() {
                Some(r) => r,
                None => match self.rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut bytes = first.op.len();
            let mut batch = vec![first];
            while bytes < self.opts.max_batch_bytes {
                match self.rx.try_recv() {
                    Ok(r) => {
                        bytes += r.op.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            // After a failed write or fsync: repair the segment before writing again. If
            // that fails too (the disk is still full, or broken), this batch fails and
            // the next one tries again.
            if self.shared.poisoned.load(Ordering::Acquire)
                && let Err(e) = self.repair()
            {
                self.shared.fail("repairing the log", &e);
                tracing::error!(error = %e, "mail log repair failed; the batch is not stored");
                for r in batch {
                    let _ = r.done.send(Err(self.shared.failure_error()));
                }
                continue;
            }
            match self.write_batch(&mut batch, bytes as u64) {
                Ok(offsets) => {
                    let w = self.written(batch, offsets, bytes as u64);
                    self.advance_prealloc();
                    // Nothing else to write and nothing in flight: sync here, without
                    // the hand-off to the syncer (the lowest latency at low load).
                    // Otherwise the syncer syncs while this thread writes what waits.
                    self.next = self.rx.try_recv().ok();
                    if self.next.is_none()
                        && self.shared.sync_in_flight.load(Ordering::Acquire) == 0
                    {
                        commit_group(&self.shared, vec![w]);
                        continue;
                    }
                    self.shared.sync_in_flight.fetch_add(1, Ordering::AcqRel);
                    let sent = match &self.sync_tx {
                        Some(tx) => tx.send(Job::Sync(w)).map_err(|e| e.0),
                        None => Err(Job::Sync(w)),
                    };
                    if let Err(Job::Sync(w)) = sent {
                        // The syncer is gone (it panicked): nothing can be acknowledged;
                        // every repair fails at its barrier from now on.
                        let e = io::Error::other("the log's syncer stopped");
                        self.shared.fail("handing a batch to the syncer", &e);
                        for (done, _) in w.records {
                            let _ = done.send(Err(self.shared.failure_error()));
                        }
                    }
                }
                Err(e) => {
                    // The batch may be partly in the file: poison (nothing written since
                    // the last acknowledgement will be acknowledged), fail it, and repair
                    // before the next one.
                    self.shared.fail("writing the log", &e);
                    tracing::error!(error = %e, "mail log write failed; the batch is not stored");
                    for r in batch {
                        let _ = r.done.send(Err(self.shared.failure_error()));
                    }
                }
            }
        }
    }

    /// Tells the preallocator where the writer is.
    pub(super) fn advance_prealloc(&self) {
        let mut st = self.pre.state.lock();
        if self.pos > st.want {
            st.want = self.pos;
            self.pre.cv.notify_all();
        }
    }

    /// Waits until the zeros reach `upto` (the preallocator normally keeps ahead; when the
    /// writer catches up, it waits for the zero-fill it asked for, as it used to do it).
    pub(super) fn ensure_alloc(&self, upto: u64) -> io::Result<()> {
        let mut st = self.pre.state.lock();
        st.active = true;
        if st.alloc_end >= upto {
            return Ok(());
        }
        st.want = st.want.max(upto);
        st.limit = st.limit.max(upto);
        self.pre.cv.notify_all();
        // Without preallocation (a step failed) the writer writes past `alloc_end`, once
        // no step is in progress: the two never write the same bytes.
        while st.alloc_end < upto && (!st.fallback || st.busy) {
            if st.stop {
                return Err(io::Error::other("the log's preallocator stopped"));
            }
            self.pre
                .cv
                .wait_for(&mut st, std::time::Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until every batch handed to the syncer is answered (acknowledged, or
    /// failed if the store is poisoned).
    pub(super) fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .sync_tx
            .as_ref()
            .is_some_and(|s| s.send(Job::Barrier(tx)).is_ok());
        if !sent || rx.recv().is_err() {
            return Err(io::Error::other("the log's syncer stopped"));
        }
        Ok(())
    }

    /// Waits until every batch handed to the syncer is durable and acknowledged.
    pub(super) fn drain_syncer(&self) -> io::Result<()> {
        self.barrier()?;
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(io::Error::other("a write of the log failed meanwhile"));
        }
        Ok(())
    }

    /// Stops the zero-fill of the active segment: no step runs when this returns, and
    /// none starts until [`Writer::restart_prealloc`].
    pub(super) fn stop_prealloc(&self) {
        let mut st = self.pre.state.lock();
        st.file = None;
        st.generation += 1;
        while st.busy {
            self.pre.cv.wait(&mut st);
        }
    }

    /// Restarts the zero-fill of the active segment from `self.pos`, which is its end.
    pub(super) fn restart_prealloc(&self, file: File) {
        let mut st = self.pre.state.lock();
        st.file = Some(Arc::new(file));
        st.alloc_end = self.pos;
        st.want = self.pos;
        st.limit = self.opts.segment_size.max(self.pos);
        st.fallback = false;
        self.pre.cv.notify_all();
    }

    /// Brings the active segment back to its last acknowledged record after a failed
    /// write or fsync, so writing can resume without a restart:
    ///
    /// 1. every batch handed to the syncer is answered (none is acknowledged while
    ///    poisoned), so the index holds the segment's acknowledged end;
    /// 2. the zero-fill is stopped, and a next segment left by a failed rotation is
    ///    removed (nothing was ever written into it);
    /// 3. the segment is truncated to that end and fsync'd (size included): whatever
    ///    was written after the last acknowledgement — a torn batch, or pages a failed
    ///    fsync may have dropped — is gone from the file and from the page cache;
    /// 4. only then is the poison lifted (under the sync lock) and the zero-fill
    ///    restarted at the new end.
    ///
    /// Acknowledged records are below that end and were made durable by an fsync that
    /// succeeded; nothing rewrites them. On error the store stays poisoned.
    pub(super) fn repair(&mut self) -> io::Result<()> {
        self.barrier()?;
        self.stop_prealloc();
        let end = self
            .shared
            .index
            .lock()
            .segments
            .get(&self.segment)
            .copied()
            .unwrap_or(SEGMENT_HEADER);
        let next = self.shared.segment_path(self.segment + 1);
        match std::fs::remove_file(&next) {
            Ok(()) => self.shared.fsync_dir(&self.shared.mail)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.file.set_len(end)?;
        {
            let _one = self.shared.sync_lock.lock();
            self.shared.fsync(&self.file, false)?;
            self.shared.poisoned.store(false, Ordering::Release);
        }
        tracing::warn!(
            segment = self.segment,
            from = self.pos,
            to = end,
            "mail log repaired: truncated to the last acknowledged record"
        );
        self.pos = end;
        let own = OpenOptions::new()
            .write(true)
            .open(self.shared.segment_path(self.segment))?;
        self.restart_prealloc(own);
        Ok(())
    }

    /// Closes the active segment (trimmed to its records) and starts the next one.
    pub(super) fn rotate(&mut self) -> io::Result<()> {
        // Every record of the old segment durable and acknowledged first: its successor's
        // records are acknowledged only after it is complete. Then stop the zero-fill.
        self.drain_syncer()?;
        self.stop_prealloc();
        // Trim the zero-filled tail and make it durable: a finished segment is exactly
        // its records, before any later segment exists.
        self.file.set_len(self.pos)?;
        {
            let _one = self.shared.sync_lock.lock();
            self.shared.fsync(&self.file, false)?;
        }
        let n = self.segment + 1;
        let path = self.shared.segment_path(n);
        let f = create_new_private(&path)?;
        f.write_all_at(&record::segment_header(n), 0)?;
        self.shared.fsync(&f, false)?;
        self.shared.fsync_dir(&self.shared.mail)?;
        let own = OpenOptions::new().write(true).open(&path)?;
        self.file = Arc::new(f);
        self.segment = n;
        self.pos = SEGMENT_HEADER;
        self.shared.index.lock().segments.insert(n, SEGMENT_HEADER);
        self.restart_prealloc(own);
        Ok(())
    }

    /// The next id in `mailbox`'s sequence (1 for a new mailbox), now taken.
    fn next_id(&mut self, mailbox: &str) -> u64 {
        let last = match self.last_ids.get_mut(mailbox) {
            Some(last) => last,
            None => self.last_ids.entry(mailbox.to_owned()).or_insert(0),
        };
        *last += 1;
        *last
    }

    /// Assigns the messages' ids (in log order) and writes the batch into the page cache;
    /// returns each record's file offset. Durability is the syncer's job.
    pub(super) fn write_batch(&mut self, batch: &mut [Req], bytes: u64) -> io::Result<Vec<u64>> {
        if self.pos > SEGMENT_HEADER && self.pos + bytes > self.opts.segment_size {
            self.rotate()?;
        }
        self.ensure_alloc(self.pos + bytes)?;
        let mut offsets = Vec::with_capacity(batch.len());
        let mut written = self.pos;
        let mut flushed = self.pos;
        self.buf.clear();
        for r in batch.iter_mut() {
            offsets.push(written);
            written += r.op.len() as u64;
            match &mut r.op {
                Op::Message {
                    info,
                    crc,
                    head_len,
                    data,
                    ..
                } => {
                    info.id = self.next_id(&info.meta.mailbox);
                    let at = self.buf.len();
                    let size = data.len() as u64;
                    record::encode_message_head_into(&mut self.buf, KIND_MESSAGE2, info, size, crc);
                    debug_assert_eq!(self.buf.len() - at, *head_len);
                    if data.len() > DIRECT_WRITE {
                        self.file.write_all_at(&self.buf, flushed)?;
                        flushed += self.buf.len() as u64;
                        self.buf.clear();
                        self.file.write_all_at(data, flushed)?;
                        flushed += data.len() as u64;
                    } else {
                        self.buf.extend_from_slice(data);
                    }
                }
                Op::BlobRef {
                    info,
                    blob_crc,
                    file,
                    len,
                } => {
                    info.id = self.next_id(&info.meta.mailbox);
                    let at = self.buf.len();
                    record::encode_blob_ref_into(&mut self.buf, info, *blob_crc, *file);
                    debug_assert_eq!(self.buf.len() - at, *len);
                }
                Op::Delete { rec, .. } | Op::Note { rec, .. } => self.buf.extend_from_slice(rec),
            }
        }
        self.file.write_all_at(&self.buf, flushed)?;
        debug_assert_eq!(flushed + self.buf.len() as u64, written);
        self.pos = written;
        Ok(offsets)
    }

    /// The written batch for the syncer; the message data (and its inline budget) are
    /// released here, once in the page cache.
    pub(super) fn written(&self, batch: Vec<Req>, offsets: Vec<u64>, bytes: u64) -> Written {
        let records = batch
            .into_iter()
            .zip(offsets)
            .map(|(r, off)| {
                let rec_len = r.op.len() as u64;
                let a = match r.op {
                    Op::Message { info, head_len, .. } => Applied::Message {
                        info,
                        offset: off + head_len as u64,
                        rec_len,
                    },
                    Op::BlobRef { info, file, .. } => Applied::Blob {
                        info,
                        file,
                        rec_len,
                    },
                    Op::Delete { id, mailbox, .. } => Applied::Delete {
                        id,
                        mailbox,
                        rec_len,
                    },
                    Op::Note {
                        id, mailbox, note, ..
                    } => Applied::Note {
                        id,
                        mailbox,
                        note,
                        rec_len,
                    },
                };
                (r.done, a)
            })
            .collect();
        Written {
            file: self.file.clone(),
            segment: self.segment,
            end: self.pos,
            bytes,
            records,
        }
    }
}
