//! The read-only (admin) view: no lock, nothing changed on disk; each call scans the
//! records appended since the last one (segments are append-only and every record is
//! CRC-checked, so a record being written is simply not seen yet).

use std::fs;

use super::scan::scan_segment;
use super::shared::{Shared, list_segments};
use crate::Result;

/// Picks up records the writer appended since the last call.
pub(super) fn refresh(sh: &Shared) -> Result<()> {
    let mut index = sh.index.lock();
    for n in list_segments(&sh.mail)? {
        if n < index.scan_seg {
            continue;
        }
        if n > index.scan_seg {
            // Move on only if the previous segment was read to its end (the writer
            // rotates only after the old segment is complete).
            let prev = index.scan_seg;
            let prev_len = if prev == 0 {
                0
            } else {
                fs::metadata(sh.segment_path(prev))
                    .map(|m| m.len())
                    .unwrap_or(0)
            };
            if prev != 0 && index.scan_off < prev_len {
                break;
            }
            index.scan_seg = n;
            index.scan_off = 0;
        }
        let start = index.scan_off;
        let (end, _) = scan_segment(&sh.segment_path(n), n, start, &mut index)?;
        index.scan_off = end;
        index.segments.insert(n, end);
    }
    Ok(())
}
