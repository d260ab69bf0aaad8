//! [`MessageReader`]: chunked reads of one stored message.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::shared::blocking;
use crate::{MessageRead, Result};

/// Largest chunk a reader returns, whatever `max` asks.
pub(super) const MAX_READ_CHUNK: usize = 8 * 1024 * 1024;

/// A streamed reader over one stored message (inline in a segment or in a blob file).
pub struct MessageReader {
    pub(super) file: Arc<File>,
    pub(super) pos: u64,
    pub(super) end: u64,
}

impl MessageRead for MessageReader {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(None);
        }
        let n = (max.clamp(1, MAX_READ_CHUNK) as u64).min(left) as usize;
        let file = self.file.clone();
        let pos = self.pos;
        let buf = blocking(move || {
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, pos)?;
            Ok(buf)
        })
        .await?;
        self.pos += n as u64;
        Ok(Some(buf))
    }

    fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}
