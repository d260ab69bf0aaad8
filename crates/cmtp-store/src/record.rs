//! The on-disk log format (byte layout in docs/storage.md): segment header, record
//! header, payload encodings, and a validating decoder.

use crate::{MessageInfo, MessageMeta, Result, StoreError};

/// First 8 bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"CMTPLOG1";
/// Segment header: magic + u64 LE segment number.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// First 4 bytes of every record.
pub(crate) const RECORD_MAGIC: &[u8; 4] = b"CMRC";
/// Record header: magic, kind, 3 reserved zero bytes, u32 LE payload length, u32 LE CRC.
pub(crate) const RECORD_HEADER: usize = 16;
/// Largest payload a record may have (inline threshold cap + metadata); anything larger
/// is garbage, so a torn length field can never make us allocate wildly.
pub(crate) const MAX_PAYLOAD: u32 = 64 * 1024 * 1024 + 4096;

/// Record kinds.
pub(crate) const KIND_MESSAGE: u8 = 1;
pub(crate) const KIND_BLOB_REF: u8 = 2;
pub(crate) const KIND_DELETE: u8 = 3;

/// Fixed part of the message metadata: id, received, size, version, attachments, body_end.
const META_FIXED: usize = 8 + 8 + 8 + 4 + 4 + 8;

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

/// Checks metadata fits the format (each string ≤ 255 bytes). A mailbox is "" (the
/// postmaster's) or a user's name, so it must be path-safe like one, although in this
/// backend it never reaches a path.
pub(crate) fn check_meta(meta: &MessageMeta) -> Result<()> {
    if !meta.mailbox.is_empty() {
        crate::ensure_path_safe(&meta.mailbox)?;
    }
    check_field(&meta.src_account, "src_account over 255 bytes")?;
    check_field(&meta.src_domain, "src_domain over 255 bytes")
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths were checked by `check_meta` / `ensure_path_safe`.
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Bytes of a Message/BlobRef record before its data: record header + metadata. Lets a
/// delivery size its record before the writer thread assigns the id and encodes it.
pub(crate) fn message_head_len(meta: &MessageMeta) -> usize {
    RECORD_HEADER
        + META_FIXED
        + 3
        + meta.mailbox.len()
        + meta.src_account.len()
        + meta.src_domain.len()
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
/// `data_crc` is the CRC of those following bytes.
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
    encode_message_head_into(out, KIND_BLOB_REF, info, BLOB_REF_TRAILER as u64, &h);
    out.extend_from_slice(&trailer);
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
    if !(KIND_MESSAGE..=KIND_DELETE).contains(&kind) {
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
        KIND_MESSAGE | KIND_BLOB_REF => {
            let id = c.u64().ok_or_else(bad)?;
            let received = c.u64().ok_or_else(bad)?;
            let size = c.u64().ok_or_else(bad)?;
            let version = c.u32().ok_or_else(bad)?;
            let attachment_count = c.u32().ok_or_else(bad)?;
            let body_end = c.u64().ok_or_else(bad)?;
            let mailbox = c.str().ok_or_else(bad)?;
            let src_account = c.str().ok_or_else(bad)?;
            let src_domain = c.str().ok_or_else(bad)?;
            let body = if kind == KIND_MESSAGE {
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
            },
        }
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
        assert_eq!(rec.len(), blob_ref_len(&info(7).meta));
        match decode_record(&rec) {
            Decoded::Message { info: i, body } => {
                assert_eq!(i, info(7));
                assert_eq!(body, Body::Blob(42));
            }
            d => panic!("{d:?}"),
        }
        // The earlier layout (CRC only): the blob file is named by the message id.
        let crc = 0xdead_beefu32.to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&crc);
        let mut old = Vec::new();
        encode_message_head_into(&mut old, KIND_BLOB_REF, &info(7), 4, &h);
        old.extend_from_slice(&crc);
        match decode_record(&old) {
            Decoded::Message { body, .. } => assert_eq!(body, Body::Blob(7)),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn message_head_len_matches_the_encoding() {
        let i = info(1);
        let mut data_crc = crc32fast::Hasher::new();
        data_crc.update(b"abc");
        let mut rec = vec![9u8; 5]; // appended after existing bytes, as in a batch buffer
        encode_message_head_into(&mut rec, KIND_MESSAGE, &i, 3, &data_crc);
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
