//! [`PgReader`]: a stored message read back chunk by chunk (one chunk in memory).

use std::sync::Arc;

use cmtp_store::{MessageRead, Result, StoreError};

use crate::bridge::Bridge;
use crate::state::Shared;

/// A streamed read of one message: each `message_chunks` row is fetched when the
/// previous one has been handed out.
pub struct PgReader {
    shared: Arc<Shared>,
    bridge: Bridge,
    key: i64,
    next_seq: i32,
    buf: Vec<u8>,
    pos: usize,
    remaining: u64,
}

impl PgReader {
    pub(crate) fn new(shared: Arc<Shared>, bridge: Bridge, key: i64, size: u64) -> Self {
        Self {
            shared,
            bridge,
            key,
            next_seq: 0,
            buf: Vec::new(),
            pos: 0,
            remaining: size,
        }
    }
}

impl MessageRead for PgReader {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        if self.remaining == 0 || max == 0 {
            return Ok(None);
        }
        if self.pos == self.buf.len() {
            let (sh, key, seq) = (self.shared.clone(), self.key, self.next_seq);
            let data = self
                .bridge
                .run(async move {
                    let what = "reading a message";
                    let c = sh.conn(what).await?;
                    let stmt = c
                        .prepare_cached(
                            "SELECT data FROM message_chunks WHERE key = $1 AND seq = $2",
                        )
                        .await
                        .map_err(|e| sh.pg(what, e))?;
                    let row = c
                        .query_opt(&stmt, &[&key, &seq])
                        .await
                        .map_err(|e| sh.pg(what, e))?;
                    Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
                })
                .await?;
            // Deleted (through this node or another) while being read.
            let data = data.ok_or_else(|| {
                StoreError::Database("the message was deleted while being read".into())
            })?;
            if data.is_empty() || data.len() as u64 > self.remaining {
                return Err(StoreError::Corrupt(format!(
                    "chunk {seq} of message key {key} has {} bytes, {} were expected at most",
                    data.len(),
                    self.remaining
                )));
            }
            self.buf = data;
            self.pos = 0;
            self.next_seq += 1;
        }
        let n = max.min(self.buf.len() - self.pos);
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        self.remaining -= n as u64;
        Ok(Some(out))
    }

    fn remaining(&self) -> u64 {
        self.remaining
    }
}
