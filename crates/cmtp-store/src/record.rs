//! The on-disk log format (byte layout in docs/storage.md): segment header, record
//! header, payload encodings, and a validating decoder.

use crate::{MAX_NOTE, MessageInfo, MessageMeta, Result, StoreError};

/// First 8 bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"CMTPLOG1";
/// Segment header: magic + u64 LE segment number.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// First 4 bytes of every record.
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"CMRC";
/// Record header: magic, kind, 3 reserved zero bytes, u32 LE payload length, u32 LE CRC.
pub(crate) const RECORD_HEADER: usize = 16;
/// Largest payload a record may have (inline threshold cap + metadata, whose strings and
/// note are at most 3 × 256 + 2 + 4096 bytes plus fixed fields); anything larger is
/// garbage, so a torn length field can never make us allocate wildly.
pub(crate) const MAX_PAYLOAD: u32 = 64 * 1024 * 1024 + 8192;

/// Record kinds. 1 and 2 are the first metadata layout (no note, no relay id): still
/// read, no longer written; 4 and 5 are the same records with both appended.
pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_BLOB_REF: u8 = 2;
pub(crate) const KIND_DELETE: u8 = 3;
pub(crate) const KIND_MESSAGE2: u8 = 4;
pub(crate) const KIND_BLOB_REF2: u8 = 5;
/// Replaces the note of a live message.
pub(crate) const KIND_NOTE: u8 = 6;
const KIND_MAX: u8 = KIND_NOTE;

/// Fixed part of the message metadata: id, received, size, version, attachments, body_end.
const META_FIXED: usize = 8 + 8 + 8 + 4 + 4 + 8;
/// What the second layout appends after `src_domain`: u8 has_relay_id, the 16-byte relay
/// id (zeros when absent), u16 note length (the note follows).
const META2_EXTRA: usize = 1 + 16 + 2;

pub(crate) fn segment_header(n: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&n.to_le_bytes());
    h
}

fn check_field(s: &str, what: &'static str) -> Result<()> {
    if s.len() > 255 {
        return Err(StoreError::InvalidMeta(what));
    }
    Ok(())
}

/// Checks a mailbox name: "" (the postmaster's) or a user's name (or the relay queue),
/// so it must be path-safe like one, although in this backend it never reaches a path.
pub(crate) fn check_mailbox(mailbox: &str) -> Result<()> {
    if mailbox.is_empty() {
        return Ok(());
    }
    crate::ensure_path_safe(mailbox)
}

/// Checks a note's length (at most [`MAX_NOTE`] bytes).
pub(crate) fn check_note(note: &[u8]) -> Result<()> {
    if note.len() > MAX_NOTE {
        return Err(StoreError::InvalidMeta("note over 4096 bytes"));
    }
    Ok(())
}

/// Checks metadata fits the format (each string ≤ 255 bytes, the note ≤ [`MAX_NOTE`],
/// the mailbox path-safe).
pub(crate) fn check_meta(meta: &MessageMeta) -> Result<()> {
    check_mailbox(&meta.mailbox)?;
    check_field(&meta.src_account, "src_account over 255 bytes")?;
    check_field(&meta.src_domain, "src_domain over 255 bytes")?;
    check_note(&meta.note)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths were checked by `check_meta` / `ensure_path_safe`.
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Bytes of a Message/BlobRef record (the current layout, kinds 4 and 5) before its
/// data: record header + metadata. Lets a delivery size its record before the writer
/// thread assigns the id and encodes it.
pub(crate) fn message_head_len(meta: &MessageMeta) -> usize {
    RECORD_HEADER
        + META_FIXED
        + 3
        + meta.mailbox.len()
        + meta.src_account.len()
        + meta.src_domain.len()
        + META2_EXTRA
        + meta.note.len()
}

/// Bytes of a whole BlobRef record (the metadata, the blob's CRC and its file number).
pub(crate) fn blob_ref_len(meta: &MessageMeta) -> usize {
    message_head_len(meta) + BLOB_REF_TRAILER
}

/// BlobRef trailer: u32 CRC-32 of the blob, u64 blob file number.
const BLOB_REF_TRAILER: usize = 4 + 8;
/// The trailer of BlobRefs written before blob files had their own numbers (the file was
/// named by the message id): the CRC only.
const BLOB_REF_TRAILER_V1: usize = 4;

/// Appends a record header + the metadata part of a Message/BlobRef payload to `out`;
/// the caller appends `data_len` data bytes (Message) or the trailer (BlobRef).
/// `data_crc` is the CRC of those following bytes. The layout follows `kind`: the first
/// (1, 2: no note, no relay id) is written only by tests of old data.
pub(crate) fn encode_message_head_into(
    out: &mut Vec<u8>,
    kind: u8,
    info: &MessageInfo,
    data_len: u64,
    data_crc: &crc32fast::Hasher,
) {
    let m = &info.meta;
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(&info.id.to_le_bytes());
    out.extend_from_slice(&info.received.to_le_bytes());
    out.extend_from_slice(&info.size.to_le_bytes());
    out.extend_from_slice(&m.version.to_le_bytes());
    out.extend_from_slice(&m.attachment_count.to_le_bytes());
    out.extend_from_slice(&m.body_end.to_le_bytes());
    put_str(out, &m.mailbox);
    put_str(out, &m.src_account);
    put_str(out, &m.src_domain);
    if kind == KIND_MESSAGE2 || kind == KIND_BLOB_REF2 {
        out.push(u8::from(m.relay_id.is_some()));
        out.extend_from_slice(&m.relay_id.unwrap_or_default());
        // At most MAX_NOTE (checked by `check_meta`).
        out.extend_from_slice(&(m.note.len() as u16).to_le_bytes());
        out.extend_from_slice(&m.note);
    }
    let rec = &mut out[start..];
    let payload_len = (rec.len() - RECORD_HEADER) as u64 + data_len;
    finish_header(rec, kind, payload_len as u32, data_crc);
}

/// Appends a whole BlobRef record to `out`: the metadata, the u32 LE CRC-32 of the blob's
/// bytes (for verification tools; the blob itself was fsync'd before this record) and the
/// u64 LE number of its file `blobs/<blob:016x>`.
pub(crate) fn encode_blob_ref_into(
    out: &mut Vec<u8>,
    info: &MessageInfo,
    blob_crc: u32,
    blob: u64,
) {
    let mut trailer = [0u8; BLOB_REF_TRAILER];
    trailer[..4].copy_from_slice(&blob_crc.to_le_bytes());
    trailer[4..].copy_from_slice(&blob.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&trailer);
    encode_message_head_into(out, KIND_BLOB_REF2, info, BLOB_REF_TRAILER as u64, &h);
    out.extend_from_slice(&trailer);
}

/// Bytes of a whole Note record.
pub(crate) fn note_len(mailbox: &str, note: &[u8]) -> usize {
    RECORD_HEADER + 8 + 1 + mailbox.len() + 2 + note.len()
}

/// Encodes a whole Note record: u64 id, u8 length + mailbox, u16 length + note (lengths
/// checked by `check_mailbox` / `check_note`).
pub(crate) fn encode_note(id: u64, mailbox: &str, note: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(note_len(mailbox, note));
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(&id.to_le_bytes());
    put_str(&mut out, mailbox);
    out.extend_from_slice(&(note.len() as u16).to_le_bytes());
    out.extend_from_slice(note);
    let len = (out.len() - RECORD_HEADER) as u32;
    finish_header(&mut out, KIND_NOTE, len, &crc32fast::Hasher::new());
    out
}

/// Encodes a whole Delete record.
pub(crate) fn encode_delete(id: u64, mailbox: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + 8 + 1 + mailbox.len());
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    out.extend_from_slice(&id.to_le_bytes());
    put_str(&mut out, mailbox);
    let len = (out.len() - RECORD_HEADER) as u32;
    finish_header(&mut out, KIND_DELETE, len, &crc32fast::Hasher::new());
    out
}

/// Fills the header of `out` (which holds header space + the payload's first part);
/// the CRC covers header bytes 4..12 then the whole payload (first part + data).
fn finish_header(out: &mut [u8], kind: u8, payload_len: u32, data_crc: &crc32fast::Hasher) {
    out[..4].copy_from_slice(RECORD_MAGIC);
    out[4] = kind;
    out[8..12].copy_from_slice(&payload_len.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out[4..12]);
    h.update(&out[RECORD_HEADER..]);
    h.combine(data_crc);
    let crc = h.finalize();
    out[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// A parsed record header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub kind: u8,
    pub len: u32,
    pub crc: u32,
}

/// Parses a header; `None` if it cannot be a valid record header (torn or garbage).
pub(crate) fn parse_header(h: &[u8; RECORD_HEADER]) -> Option<Header> {
    if &h[..4] != RECORD_MAGIC || h[5..8] != [0, 0, 0] {
        return None;
    }
    let kind = h[4];
    if !(KIND_MESSAGE..=KIND_MAX).contains(&kind) {
        return None;
    }
    let len = u32::from_le_bytes(h[8..12].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let crc = u32::from_le_bytes(h[12..16].try_into().ok()?);
    Some(Header { kind, len, crc })
}

/// Whether the payload matches the header's CRC.
pub(crate) fn crc_ok(h: &[u8; RECORD_HEADER], payload: &[u8], crc: u32) -> bool {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[4..12]);
    hasher.update(payload);
    hasher.finalize() == crc
}

/// Where a decoded message's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Inline, starting at this offset in the payload.
    Inline(usize),
    /// In the blob file of this number.
    Blob(u64),
}

/// A decoded record payload.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Message or BlobRef: the info and where its bytes are.
    Message { info: MessageInfo, body: Body },
    /// Tombstone.
    Delete { id: u64, mailbox: String },
    /// A message's new note.
    Note {
        id: u64,
        mailbox: String,
        note: Vec<u8>,
    },
}

struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    /// A u16 length, then that many bytes.
    fn note(&mut self) -> Option<Vec<u8>> {
        let n = self.u16()? as usize;
        if n > MAX_NOTE {
            return None;
        }
        Some(self.take(n)?.to_vec())
    }
    /// The second layout's relay id: u8 flag (0 or 1), then 16 bytes.
    fn relay_id(&mut self) -> Option<Option<[u8; 16]>> {
        let has = self.take(1)?[0];
        let id: [u8; 16] = self.take(16)?.try_into().ok()?;
        match has {
            0 => Some(None),
            1 => Some(Some(id)),
            _ => None,
        }
    }
    fn str(&mut self) -> Option<String> {
        let n = self.take(1)?[0] as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Decodes a CRC-checked payload. An error here means a record that passed its CRC
/// but is malformed: real corruption or a bug, never a torn write.
pub(crate) fn decode(kind: u8, payload: &[u8]) -> Result<Decoded> {
    let bad = || StoreError::Corrupt(format!("malformed record of kind {kind}"));
    let mut c = Cur(payload);
    match kind {
        KIND_MESSAGE | KIND_BLOB_REF | KIND_MESSAGE2 | KIND_BLOB_REF2 => {
            let id = c.u64().ok_or_else(bad)?;
            let received = c.u64().ok_or_else(bad)?;
            let size = c.u64().ok_or_else(bad)?;
            let version = c.u32().ok_or_else(bad)?;
            let attachment_count = c.u32().ok_or_else(bad)?;
            let body_end = c.u64().ok_or_else(bad)?;
            let mailbox = c.str().ok_or_else(bad)?;
            let src_account = c.str().ok_or_else(bad)?;
            let src_domain = c.str().ok_or_else(bad)?;
            // The first layout has neither: an empty note, no relay id.
            let (relay_id, note) = if kind == KIND_MESSAGE2 || kind == KIND_BLOB_REF2 {
                let relay_id = c.relay_id().ok_or_else(bad)?;
                (relay_id, c.note().ok_or_else(bad)?)
            } else {
                (None, Vec::new())
            };
            let body = if kind == KIND_MESSAGE || kind == KIND_MESSAGE2 {
                if c.0.len() as u64 != size {
                    return Err(bad());
                }
                Body::Inline(payload.len() - c.0.len())
            } else {
                // The blob's CRC-32 (not needed to serve the message), then its file
                // number; older records lack the number: their file is named by the id.
                match c.0.len() {
                    BLOB_REF_TRAILER => {
                        Body::Blob(u64::from_le_bytes(c.0[4..].try_into().map_err(|_| bad())?))
                    }
                    BLOB_REF_TRAILER_V1 => Body::Blob(id),
                    _ => return Err(bad()),
                }
            };
            let meta = MessageMeta {
                mailbox,
                src_account,
                src_domain,
                version,
                attachment_count,
                body_end,
                note,
                relay_id,
            };
            Ok(Decoded::Message {
                info: MessageInfo {
                    id,
                    received,
                    size,
                    meta,
                },
                body,
            })
        }
        KIND_DELETE => {
            let id = c.u64().ok_or_else(bad)?;
            let mailbox = c.str().ok_or_else(bad)?;
            if !c.0.is_empty() {
                return Err(bad());
            }
            Ok(Decoded::Delete { id, mailbox })
        }
        KIND_NOTE => {
            let id = c.u64().ok_or_else(bad)?;
            let mailbox = c.str().ok_or_else(bad)?;
            let note = c.note().ok_or_else(bad)?;
            if !c.0.is_empty() {
                return Err(bad());
            }
            Ok(Decoded::Note { id, mailbox, note })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64) -> MessageInfo {
        MessageInfo {
            id,
            received: 5,
            size: 3,
            meta: MessageMeta {
                mailbox: "bob".into(),
                src_account: "alice".into(),
                src_domain: "example.org".into(),
                version: 2,
                attachment_count: 1,
                body_end: 2,
                note: b"to example.net, attempt 3".to_vec(),
                relay_id: Some([0xa5; 16]),
            },
        }
    }

    /// `info` as the first layout stores it: no note, no relay id.
    fn info_v1(id: u64) -> MessageInfo {
        let mut i = info(id);
        i.meta.note.clear();
        i.meta.relay_id = None;
        i
    }

    fn decode_record(rec: &[u8]) -> Decoded {
        let h: [u8; RECORD_HEADER] = rec[..RECORD_HEADER].try_into().unwrap();
        let head = parse_header(&h).unwrap();
        assert_eq!(head.len as usize, rec.len() - RECORD_HEADER);
        assert!(crc_ok(&h, &rec[RECORD_HEADER..], head.crc));
        decode(head.kind, &rec[RECORD_HEADER..]).unwrap()
    }

    #[test]
    fn blob_ref_names_its_file_and_old_records_still_decode() {
        let mut rec = Vec::new();
        encode_blob_ref_into(&mut rec, &info(7), 0xdead_beef, 42);
        assert_eq!(rec[4], KIND_BLOB_REF2);
        assert_eq!(rec.len(), blob_ref_len(&info(7).meta));
        match decode_record(&rec) {
            Decoded::Message { info: i, body } => {
                assert_eq!(i, info(7));
                assert_eq!(body, Body::Blob(42));
            }
            d => panic!("{d:?}"),
        }
        // The first layout with blob numbers: kind 2, CRC + file number.
        let mut trailer = 0xdead_beefu32.to_le_bytes().to_vec();
        trailer.extend_from_slice(&42u64.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&trailer);
        let mut old = Vec::new();
        encode_message_head_into(&mut old, KIND_BLOB_REF, &info(7), 12, &h);
        old.extend_from_slice(&trailer);
        match decode_record(&old) {
            Decoded::Message { info: i, body } => {
                assert_eq!(i, info_v1(7));
                assert_eq!(body, Body::Blob(42));
            }
            d => panic!("{d:?}"),
        }
        // The earliest layout (CRC only): the blob file is named by the message id.
        let crc = 0xdead_beefu32.to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&crc);
        let mut old = Vec::new();
        encode_message_head_into(&mut old, KIND_BLOB_REF, &info(7), 4, &h);
        old.extend_from_slice(&crc);
        match decode_record(&old) {
            Decoded::Message { info: i, body } => {
                assert_eq!(i, info_v1(7));
                assert_eq!(body, Body::Blob(7));
            }
            d => panic!("{d:?}"),
        }
    }

    /// A Message record of the first layout (kind 1, written before notes and relay ids
    /// existed), built byte by byte as that version wrote it, still decodes: empty note,
    /// no relay id, the data right after `src_domain`.
    #[test]
    fn old_layout_message_decodes() {
        let mut payload = Vec::new();
        payload.extend_from_slice(&9u64.to_le_bytes()); // id
        payload.extend_from_slice(&5u64.to_le_bytes()); // received
        payload.extend_from_slice(&3u64.to_le_bytes()); // size
        payload.extend_from_slice(&2u32.to_le_bytes()); // version
        payload.extend_from_slice(&1u32.to_le_bytes()); // attachment_count
        payload.extend_from_slice(&2u64.to_le_bytes()); // body_end
        for s in ["bob", "alice", "example.org"] {
            payload.push(s.len() as u8);
            payload.extend_from_slice(s.as_bytes());
        }
        let data_at = payload.len();
        payload.extend_from_slice(b"abc");
        let mut rec = Vec::new();
        rec.extend_from_slice(RECORD_MAGIC);
        rec.extend_from_slice(&[KIND_MESSAGE, 0, 0, 0]);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&rec[4..12]);
        h.update(&payload);
        rec.extend_from_slice(&h.finalize().to_le_bytes());
        rec.extend_from_slice(&payload);
        match decode_record(&rec) {
            Decoded::Message { info: i, body } => {
                assert_eq!(i, info_v1(9));
                assert_eq!(body, Body::Inline(data_at));
            }
            d => panic!("{d:?}"),
        }
        // And the encoder's first layout is exactly that record.
        let mut data_crc = crc32fast::Hasher::new();
        data_crc.update(b"abc");
        let mut again = Vec::new();
        encode_message_head_into(&mut again, KIND_MESSAGE, &info(9), 3, &data_crc);
        again.extend_from_slice(b"abc");
        assert_eq!(again, rec);
    }

    #[test]
    fn message_head_len_matches_the_encoding() {
        for i in [info(1), info_v1(1)] {
            let mut data_crc = crc32fast::Hasher::new();
            data_crc.update(b"abc");
            let mut rec = vec![9u8; 5]; // appended after existing bytes, as in a batch buffer
            encode_message_head_into(&mut rec, KIND_MESSAGE2, &i, 3, &data_crc);
            assert_eq!(rec.len() - 5, message_head_len(&i.meta));
            rec.extend_from_slice(b"abc");
            match decode_record(&rec[5..]) {
                Decoded::Message { info: got, body } => {
                    assert_eq!(got, i);
                    assert_eq!(
                        body,
                        Body::Inline(message_head_len(&i.meta) - RECORD_HEADER)
                    );
                }
                d => panic!("{d:?}"),
            }
        }
    }

    #[test]
    fn note_records_round_trip() {
        for note in [Vec::new(), b"x".to_vec(), vec![7u8; MAX_NOTE]] {
            let rec = encode_note(11, "\\queue", &note);
            assert_eq!(rec.len(), note_len("\\queue", &note));
            match decode_record(&rec) {
                Decoded::Note {
                    id,
                    mailbox,
                    note: got,
                } => {
                    assert_eq!((id, mailbox.as_str(), got), (11, "\\queue", note));
                }
                d => panic!("{d:?}"),
            }
        }
    }

    /// A record that passed its CRC but breaks the layout is `Corrupt`, never a panic or
    /// a huge allocation.
    #[test]
    fn malformed_new_fields_are_corrupt() {
        let mut data_crc = crc32fast::Hasher::new();
        data_crc.update(b"abc");
        let mut rec = Vec::new();
        encode_message_head_into(&mut rec, KIND_MESSAGE2, &info(1), 3, &data_crc);
        rec.extend_from_slice(b"abc");
        let flag_at =
            message_head_len(&info(1).meta) - RECORD_HEADER - info(1).meta.note.len() - META2_EXTRA;
        let mut bad_flag = rec[RECORD_HEADER..].to_vec();
        bad_flag[flag_at] = 2;
        assert!(matches!(
            decode(KIND_MESSAGE2, &bad_flag),
            Err(StoreError::Corrupt(_))
        ));
        let mut long_note = rec[RECORD_HEADER..].to_vec();
        long_note[flag_at + 17..flag_at + 19].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            decode(KIND_MESSAGE2, &long_note),
            Err(StoreError::Corrupt(_))
        ));
        let note = encode_note(1, "bob", b"n");
        assert!(matches!(
            decode(KIND_NOTE, &note[RECORD_HEADER..note.len() - 1]),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn check_meta_refuses_a_note_over_the_limit() {
        let mut m = info(1).meta;
        m.note = vec![0; MAX_NOTE];
        check_meta(&m).unwrap();
        m.note.push(0);
        assert!(matches!(check_meta(&m), Err(StoreError::InvalidMeta(_))));
    }
}
