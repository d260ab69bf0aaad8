//! [`LogDelivery`]: a message being received, buffered inline within the budget or
//! spilled to its blob file, then committed through the writer.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::budget::Budget;
use super::inner::Inner;
use super::shared::{blob_name, blocking};
use super::writer::Op;
use crate::fsutil::create_new_private;
use crate::{Delivery, MessageInfo, MessageMeta, Result, StoreError, record};

/// Write buffer of a spilling delivery: memory per large delivery stays about this.
pub(super) const SPILL_BUF: usize = 64 * 1024;
/// Smallest inline buffer reservation (fewer budget updates for small messages).
pub(super) const MIN_INLINE_STEP: usize = 4096;

/// A spilled delivery's blob file.
pub(super) struct Spill {
    /// Number of the blob file (`blobs/tmp/<file>` until commit, then `blobs/<file>`).
    pub(super) file_no: u64,
    pub(super) tmp: PathBuf,
    pub(super) file: Option<File>,
}

/// A streaming delivery into [`LogMail`]. Dropping it aborts: nothing is visible and a
/// temporary blob is removed.
pub struct LogDelivery {
    pub(super) inner: Arc<Inner>,
    pub(super) buf: Vec<u8>,
    /// Inline budget held for `buf` while the message is buffered in memory.
    pub(super) budget: Budget,
    pub(super) crc: crc32fast::Hasher,
    pub(super) size: u64,
    pub(super) spill: Option<Spill>,
}

impl Drop for LogDelivery {
    fn drop(&mut self) {
        if let Some(s) = self.spill.take() {
            drop(s.file);
            let _ = fs::remove_file(&s.tmp);
        }
    }
}

impl LogDelivery {
    /// Makes room for `need` bytes of inline buffer within the store-wide budget; `false`
    /// if the budget cannot cover them (the delivery then spills). Capacity grows by
    /// doubling, and the budget covers the capacity, not just the length.
    pub(super) fn reserve_inline(&mut self, need: usize) -> bool {
        let held = self.budget.bytes as usize;
        if need <= held && need <= self.buf.capacity() {
            return true;
        }
        let threshold = self.inner.opts.inline_threshold;
        let mut target = need
            .max(self.buf.capacity().saturating_mul(2))
            .max(MIN_INLINE_STEP)
            .min(threshold)
            .max(need);
        if target > held && !self.budget.try_grow((target - held) as u64) {
            // Not the comfortable step: maybe just what is needed.
            if need > held && !self.budget.try_grow((need - held) as u64) {
                return false;
            }
            target = need.max(held);
        }
        self.buf
            .reserve_exact(target.saturating_sub(self.buf.len()));
        true
    }

    /// Writes the buffer to the spill file off the runtime.
    pub(super) async fn flush_spill(&mut self) -> Result<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut file = spill.file.take().ok_or(StoreError::DeliveryIncomplete)?;
        let buf = std::mem::take(&mut self.buf);
        let (file, mut buf) = blocking(move || {
            file.write_all(&buf)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.buf = buf;
        if let Some(s) = self.spill.as_mut() {
            s.file = Some(file);
        }
        Ok(())
    }

    /// Switches to a blob file: creates it, writes what was buffered, and gives the
    /// buffer's inline budget back (from here on only a small spill buffer is used).
    pub(super) async fn start_spill(&mut self) -> Result<()> {
        let sh = &self.inner.shared;
        let file_no = sh.next_blob.fetch_add(1, Ordering::Relaxed);
        let tmp = sh.blobs_tmp.join(blob_name(file_no));
        let path = tmp.clone();
        let buf = std::mem::take(&mut self.buf);
        let file = blocking(move || {
            let mut f = create_new_private(&path)?;
            if let Err(e) = f.write_all(&buf) {
                drop(f);
                let _ = fs::remove_file(&path);
                return Err(e.into());
            }
            Ok(f)
        })
        .await?;
        self.budget.release();
        self.spill = Some(Spill {
            file_no,
            tmp,
            file: Some(file),
        });
        self.buf = Vec::with_capacity(SPILL_BUF);
        Ok(())
    }
}

impl Delivery for LogDelivery {
    async fn write(&mut self, mut chunk: &[u8]) -> Result<()> {
        if self.inner.read_only() {
            return Err(StoreError::ReadOnly);
        }
        self.crc.update(chunk);
        self.size += chunk.len() as u64;
        if self.spill.is_none() {
            let need = self.buf.len() + chunk.len();
            if need <= self.inner.opts.inline_threshold && self.reserve_inline(need) {
                self.buf.extend_from_slice(chunk);
                return Ok(());
            }
            self.start_spill().await?;
        }
        while !chunk.is_empty() {
            let n = chunk
                .len()
                .min(SPILL_BUF.saturating_sub(self.buf.len()).max(1));
            self.buf.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.buf.len() >= SPILL_BUF {
                self.flush_spill().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self, meta: MessageMeta) -> Result<u64> {
        if self.inner.read_only() {
            return Err(StoreError::ReadOnly);
        }
        record::check_meta(&meta)?;
        let received = crate::clock::unix_now();
        let inner = self.inner.clone();
        // The id is assigned by the writer thread when the record is serialised.
        let info = MessageInfo {
            id: 0,
            received,
            size: self.size,
            meta,
        };
        if self.spill.is_none() {
            if self.buf.len() as u64 != self.size {
                // A write of this delivery failed or was cancelled midway: never log a
                // record whose data is not what was written.
                return Err(StoreError::DeliveryIncomplete);
            }
            let head_len = record::message_head_len(&info.meta);
            let op = Op::Message {
                info,
                crc: self.crc.clone(),
                head_len,
                data: std::mem::take(&mut self.buf),
                _budget: self.budget.take(),
            };
            return inner.submit(op).await;
        }
        self.flush_spill().await?;
        let mut spill = self.spill.take().ok_or(StoreError::DeliveryIncomplete)?;
        let file_no = spill.file_no;
        let file = spill.file.take().ok_or(StoreError::DeliveryIncomplete)?;
        let sh = inner.shared.clone();
        let tmp = spill.tmp.clone();
        let done = blocking(move || {
            sh.fsync(&file, false)?;
            drop(file);
            let path = sh.blob_path(file_no);
            fs::rename(&tmp, &path)?;
            sh.fsync_dir(&sh.blobs)?;
            Ok(path)
        })
        .await;
        let path = match done {
            Ok(p) => p,
            Err(e) => {
                let _ = fs::remove_file(&spill.tmp);
                return Err(e);
            }
        };
        let len = record::blob_ref_len(&info.meta);
        let op = Op::BlobRef {
            info,
            blob_crc: self.crc.clone().finalize(),
            file: file_no,
            len,
        };
        match inner.submit(op).await {
            Ok(id) => Ok(id),
            Err(e) => {
                // Not referenced: remove now (or it is an orphan removed on the next open).
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }
}
