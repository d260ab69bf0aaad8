//! Reading records back: the segment scan that rebuilds (or extends) the index, and the
//! zero-tail check that tells preallocation from a torn write.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::index::{Index, Loc};
use crate::Result;
use crate::record::{self, Body, Decoded, RECORD_HEADER, SEGMENT_HEADER, SEGMENT_MAGIC};

/// `read_exact`, but a file that ended early (a reader racing a writer's truncation at
/// open) is `false`, like a torn record, not an error.
pub(super) fn read_or_eof(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Scans segment `n` from `start`, applying every valid record to `index`. Returns the
/// end of the last valid record and the file's length at scan time; they differ when
/// the scan stopped at a torn or invalid record.
pub(super) fn scan_segment(
    path: &Path,
    n: u64,
    start: u64,
    index: &mut Index,
) -> Result<(u64, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = io::BufReader::with_capacity(256 * 1024, file);
    let mut pos = start;
    if pos == 0 {
        let mut h = [0u8; SEGMENT_HEADER as usize];
        if r.read_exact(&mut h).is_err() || &h[..8] != SEGMENT_MAGIC || h[8..] != n.to_le_bytes() {
            return Ok((0, file_len));
        }
        pos = SEGMENT_HEADER;
    } else {
        r.seek(SeekFrom::Start(pos))?;
    }
    let mut payload = Vec::new();
    loop {
        if pos + RECORD_HEADER as u64 > file_len {
            break;
        }
        let mut h = [0u8; RECORD_HEADER];
        if !read_or_eof(&mut r, &mut h)? {
            break;
        }
        let Some(head) = record::parse_header(&h) else {
            break;
        };
        let rec_len = RECORD_HEADER as u64 + u64::from(head.len);
        if pos + rec_len > file_len {
            break;
        }
        payload.resize(head.len as usize, 0);
        if !read_or_eof(&mut r, &mut payload)? {
            break;
        }
        if !record::crc_ok(&h, &payload, head.crc) {
            break;
        }
        match record::decode(head.kind, &payload)? {
            Decoded::Message { info, body } => {
                let loc = match body {
                    Body::Inline(off) => Loc::Inline {
                        segment: n,
                        offset: pos + (RECORD_HEADER + off) as u64,
                    },
                    Body::Blob(file) => Loc::Blob { file },
                };
                index.apply_message(info, loc, rec_len);
            }
            Decoded::Delete { id, mailbox } => {
                index.apply_delete(id, &mailbox, rec_len);
            }
            // For a message deleted since (or never acknowledged): ignored.
            Decoded::Note { id, mailbox, note } => {
                index.apply_note(id, &mailbox, note, rec_len);
            }
        }
        pos += rec_len;
    }
    Ok((pos, file_len))
}

/// Whether bytes `from..len` of the file are all zero.
pub(super) fn tail_is_zero(path: &Path, from: u64, len: u64) -> io::Result<bool> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
