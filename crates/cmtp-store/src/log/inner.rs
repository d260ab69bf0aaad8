//! The handle shared by [`super::LogMail`] and its deliveries: the writer's queue.

use std::fs::File;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::options::Options;
use super::read_only;
use super::shared::Shared;
use super::writer::{Op, Req};
use crate::{Result, StoreError};

/// Shared by [`LogMail`] and its deliveries; stops the writer thread when the last goes.
pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: Option<mpsc::Sender<Req>>,
    pub(super) thread: Option<JoinHandle<()>>,
    pub(super) opts: Options,
    /// Held for the writer's lifetime: the `flock` on `mail/LOCK`.
    pub(super) _lock: Option<File>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queue is drained; join so
        // the lock is released only after the last write.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    pub(super) fn read_only(&self) -> bool {
        self.tx.is_none()
    }

    /// Queues a record for the writer and waits until it is durable (or failed). Even
    /// after a failure the request goes to the writer: it repairs the log first, so a
    /// store whose disk was full accepts deliveries again once there is room.
    pub(super) async fn submit(&self, op: Op) -> Result<u64> {
        let tx = self.tx.as_ref().ok_or(StoreError::ReadOnly)?;
        let (done, rx) = oneshot::channel();
        tx.send(Req { op, done })
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Read-only mode: picks up records the writer appended since the last call.
    pub(super) fn refresh(&self) -> Result<()> {
        if !self.read_only() {
            return Ok(());
        }
        read_only::refresh(&self.shared)
    }
}
