//! Outgoing drafts and incoming (fetched) messages.

use std::path::Path;

use cmtp_proto::{Envelope, MessageDecoder, MessageEvent, MessageLimits};
use serde::Serialize;

use crate::address::Address;
use crate::error::{ClientError, Result};

/// One attachment of a draft, kept as its plaintext `file_name NUL data` so that each
/// recipient's copy is sealed straight from it, without another copy.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    plain: Vec<u8>,
    name_len: usize,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name())
            .field("size", &self.size())
            .finish()
    }
}

impl Attachment {
    /// An attachment from memory. The name must not contain NUL (it is only a name: a
    /// path's folders are not sent).
    pub fn new(name: &str, data: &[u8]) -> Result<Attachment> {
        let mut plain = Vec::with_capacity(name.len() + 1 + data.len());
        Self::check_name(name)?;
        plain.extend_from_slice(name.as_bytes());
        plain.push(0);
        plain.extend_from_slice(data);
        Ok(Attachment {
            plain,
            name_len: name.len(),
        })
    }

    /// Reads a file; the attachment is named after the file's last path component.
    pub fn from_file(path: &Path) -> Result<Attachment> {
        use std::io::Read;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ClientError::File {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
            })?;
        Self::check_name(&name)?;
        let ferr = |e| ClientError::File {
            path: path.display().to_string(),
            source: e,
        };
        let mut f = std::fs::File::open(path).map_err(ferr)?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let mut plain = Vec::with_capacity(name.len() + 1 + len);
        plain.extend_from_slice(name.as_bytes());
        plain.push(0);
        f.read_to_end(&mut plain).map_err(ferr)?;
        Ok(Attachment {
            plain,
            name_len: name.len(),
        })
    }

    fn check_name(name: &str) -> Result<()> {
        if name.contains('\0') || name.is_empty() {
            return Err(ClientError::BadAttachmentName {
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// The file name.
    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.plain[..self.name_len]).unwrap_or("")
    }

    /// The contents.
    pub fn data(&self) -> &[u8] {
        &self.plain[self.name_len + 1..]
    }

    /// Size of the contents in bytes.
    pub fn size(&self) -> u64 {
        (self.plain.len() - self.name_len - 1) as u64
    }

    /// The plaintext that is sealed: `file_name NUL data`.
    pub fn plaintext(&self) -> &[u8] {
        &self.plain
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    /// Primary recipients.
    pub to: Vec<Address>,
    /// Carbon copies (each gets its own copy; all are listed in the body).
    pub cc: Vec<Address>,
    /// Subject (no NUL).
    pub subject: String,
    /// Where replies should go, if not the sender.
    pub reply_to: Option<Address>,
    /// The text (UTF-8).
    pub text: String,
    /// Attachments.
    pub attachments: Vec<Attachment>,
}

/// One line of the inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxItem {
    /// Message id (for `read` and `delete`).
    pub id: u64,
    /// Sender as the envelope claims it (`account@domain`; empty account = the server).
    pub from: String,
    /// Subject; for a legacy plain-text body, the start of its first line (≤ 60
    /// characters); empty when the body did not open.
    pub subject: String,
    /// Creation time from the sealed body (Unix seconds); the receive time when the
    /// body has none (legacy).
    pub timestamp: u64,
    /// When the server received it (Unix seconds).
    pub received: u64,
    /// Stored size in bytes.
    pub size: u64,
    /// Number of attachments.
    pub attachments: u32,
    /// The body is legacy plain text (2016 client), not an internal body.
    pub legacy: bool,
    /// Why the body could not be opened, if it could not.
    pub error: Option<String>,
}

/// An attachment of a message read.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedAttachment {
    /// The file name as the sender wrote it (sanitise before using it as a path).
    pub name: String,
    /// The contents.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for ReceivedAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceivedAttachment")
            .field("name", &self.name)
            .field("size", &self.data.len())
            .finish()
    }
}

/// Most bytes in a file name on Linux and most file systems (NAME_MAX).
pub const MAX_FILE_NAME: usize = 255;

/// Longest tail after the last dot still kept as an extension when a name is shortened.
const MAX_EXTENSION: usize = 32;

impl ReceivedAttachment {
    /// A name safe to create in a folder: the last path component, without control
    /// or bidirectional-control characters and without leading dots (no hidden file
    /// such as `.bashrc`, never `.`/`..`); `attachment-N` (N = `index` + 1) when
    /// nothing is left. At most [`MAX_FILE_NAME`] bytes: a longer name is cut on a
    /// UTF-8 boundary, keeping its extension. See [`ReceivedAttachment::safe_name_numbered`]
    /// for a name that is already taken.
    pub fn safe_name(&self, index: usize) -> String {
        self.safe_name_numbered(index, 0)
    }

    /// [`ReceivedAttachment::safe_name`] with `-n` before the extension when `n > 0`
    /// (`report.pdf` → `report-1.pdf`), still within [`MAX_FILE_NAME`] bytes: the
    /// names to try in turn when the plain one is taken.
    pub fn safe_name_numbered(&self, index: usize, n: u32) -> String {
        let last: String = self
            .name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("")
            .chars()
            .filter(|&c| !c.is_control() && !crate::terminal::is_bidi_or_separator(c))
            .collect();
        let last = last.trim_start_matches('.');
        let base = if last.is_empty() {
            format!("attachment-{}", index + 1)
        } else {
            last.to_owned()
        };
        // The extension: from the last dot, when short enough to be one.
        let (stem, ext) = match base.rfind('.') {
            Some(dot) if dot > 0 && base.len() - dot <= MAX_EXTENSION => base.split_at(dot),
            _ => (base.as_str(), ""),
        };
        let suffix = if n > 0 {
            format!("-{n}")
        } else {
            String::new()
        };
        let mut room = MAX_FILE_NAME - ext.len() - suffix.len();
        room = room.min(stem.len());
        while !stem.is_char_boundary(room) {
            room -= 1;
        }
        format!("{}{suffix}{ext}", &stem[..room])
    }
}

/// A message fetched, verified and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMessage {
    /// Message id.
    pub id: u64,
    /// Sender as the envelope claims it (sealed boxes do not authenticate senders).
    pub from: String,
    /// Recipient (the envelope's destination).
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Reply-to address, empty if none.
    pub reply_to: String,
    /// Carbon copies.
    pub cc: Vec<String>,
    /// Creation time (Unix seconds; 0 for legacy bodies, which carry none).
    pub timestamp: u64,
    /// The text.
    pub text: String,
    /// True for a legacy plain-text body (2016 client).
    pub legacy: bool,
    /// The envelope's log entries.
    pub log: Vec<String>,
    /// Attachments, opened.
    pub attachments: Vec<ReceivedAttachment>,
}

/// The parts of a stored message (spec §6), borrowed from the fetched bytes.
#[derive(Debug)]
pub(crate) struct StoredMessage<'a> {
    /// The envelope as stored (names, version, announced lengths).
    pub envelope: Envelope,
    pub log: &'a [u8],
    pub body: &'a [u8],
    /// Empty for a `head` fetch.
    pub attachments: Vec<&'a [u8]>,
}

/// Splits a stored message with the proto crate's [`MessageDecoder`]. With `head`, the
/// bytes end after the body. The whole message is in `buf`, so each field is one
/// contiguous range of it; the fetched size was already bounded by the connection.
pub(crate) fn parse_stored(
    buf: &[u8],
    head: bool,
) -> std::result::Result<StoredMessage<'_>, String> {
    let mut dec = MessageDecoder::new(MessageLimits::UNLIMITED);
    let mut pos = 0usize;
    let mut envelope = None;
    // Ranges of the log and body, and the start and length of each attachment.
    let (mut log, mut body) = (pos..pos, pos..pos);
    let mut attachments: Vec<(usize, usize)> = Vec::new();
    loop {
        let (n, ev) = dec.decode(&buf[pos..]).map_err(|e| e.to_string())?;
        pos += n;
        // A chunk is always the last bytes consumed by its call.
        let chunk_end = pos;
        match ev {
            None | Some(MessageEvent::End) => break,
            Some(MessageEvent::Envelope(e)) => {
                envelope = Some(e);
                log = pos..pos;
                body = pos..pos;
            }
            Some(MessageEvent::Log(_)) => {
                log.end = chunk_end;
                body = chunk_end..chunk_end;
            }
            Some(MessageEvent::Body(_)) => body.end = chunk_end,
            Some(MessageEvent::AttachmentStart { .. }) => attachments.push((pos, 0)),
            Some(MessageEvent::Attachment(_)) => {
                if let Some(a) = attachments.last_mut() {
                    a.1 = chunk_end - a.0;
                }
            }
        }
        if head && dec.body_end() == Some(dec.consumed()) {
            break;
        }
    }
    let envelope = envelope.ok_or_else(|| format!("truncated envelope ({} bytes)", buf.len()))?;
    let complete = if head {
        dec.body_end() == Some(dec.consumed())
    } else {
        dec.is_done()
    };
    if !complete {
        return Err(format!(
            "truncated: {} bytes, the envelope announces more",
            buf.len()
        ));
    }
    if !head && pos != buf.len() {
        return Err(format!("{} trailing bytes", buf.len() - pos));
    }
    Ok(StoredMessage {
        envelope,
        log: &buf[log],
        body: &buf[body],
        attachments: attachments
            .into_iter()
            .map(|(start, len)| &buf[start..start + len])
            .collect(),
    })
}

/// Splits a log into its NUL-terminated entries (empty entries dropped), as text.
pub(crate) fn log_entries(log: &[u8]) -> Vec<String> {
    cmtp_proto::log::entries(log)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_layout_and_safe_names() {
        let a = Attachment::new("x.bin", b"\0\x01data").unwrap();
        assert_eq!(a.plaintext(), b"x.bin\0\0\x01data");
        assert_eq!(a.name(), "x.bin");
        assert_eq!(a.data(), b"\0\x01data");
        assert_eq!(a.size(), 6);
        for bad in ["a\0b", ""] {
            assert!(matches!(
                Attachment::new(bad, b""),
                Err(ClientError::BadAttachmentName { .. })
            ));
        }
        let r = |n: &str| ReceivedAttachment {
            name: n.into(),
            data: vec![],
        };
        assert_eq!(r("../../etc/passwd").safe_name(0), "passwd");
        assert_eq!(r("..").safe_name(1), "attachment-2");
        assert_eq!(r("a\\b\nc").safe_name(0), "bc");
        assert_eq!(r("").safe_name(0), "attachment-1");
        // Leading dots go: no hidden files, no `.`/`..`.
        assert_eq!(r(".bashrc").safe_name(0), "bashrc");
        assert_eq!(r("..").safe_name(0), "attachment-1");
        assert_eq!(r("...").safe_name(4), "attachment-5");
        assert_eq!(r("../../x").safe_name(0), "x");
        assert_eq!(r("a/.\n.ssh").safe_name(2), "ssh");
        assert_eq!(r("dir/").safe_name(2), "attachment-3");
        assert_eq!(r("v1.2.tar").safe_name(0), "v1.2.tar");
        assert_eq!(r("invoice\u{202e}fdp.exe").safe_name(0), "invoicefdp.exe");
        assert_eq!(r("report.pdf").safe_name_numbered(0, 2), "report-2.pdf");
        assert_eq!(r("README").safe_name_numbered(0, 1), "README-1");
        assert_eq!(r("..").safe_name_numbered(3, 1), "attachment-4-1");
    }

    #[test]
    fn long_names_are_shortened_keeping_the_extension() {
        let r = |n: String| ReceivedAttachment {
            name: n,
            data: vec![],
        };
        // 300 bytes: ASCII, then 2-byte and 3-byte characters that a cut must not split.
        for unit in ["a", "é", "語"] {
            let stem = unit.repeat(300 / unit.len());
            for n in [0, 1, 999_999] {
                let name = r(format!("{stem}.tar.gz")).safe_name_numbered(0, n);
                assert!(name.len() <= MAX_FILE_NAME, "{} bytes", name.len());
                assert!(name.len() > MAX_FILE_NAME - 3, "{} bytes", name.len());
                let tail = if n > 0 {
                    format!("-{n}.gz")
                } else {
                    ".gz".into()
                };
                assert!(name.ends_with(&tail), "{name}");
                assert!(name.starts_with(unit));
            }
        }
        // A tail too long to be an extension is cut like the rest.
        let odd = r(format!("x.{}", "y".repeat(300))).safe_name(0);
        assert_eq!(odd.len(), MAX_FILE_NAME);
        assert!(odd.starts_with("x.y"));
        // Exactly at the limit: unchanged.
        let exact = format!("{}.txt", "b".repeat(MAX_FILE_NAME - 4));
        assert_eq!(r(exact.clone()).safe_name(0), exact);
    }

    #[test]
    fn parses_message_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/vectors/message.json"
        );
        let text = std::fs::read_to_string(path).expect("test vectors at testdata/vectors");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut n = 0;
        for m in v["vectors"].as_array().unwrap() {
            let bytes = hex::decode(m["message"].as_str().unwrap()).unwrap();
            let p = parse_stored(&bytes, false).unwrap();
            let e = &p.envelope;
            assert_eq!(e.dest_account, m["dest_account"].as_str().unwrap());
            assert_eq!(e.src_domain, m["source_domain"].as_str().unwrap());
            assert_eq!(hex::encode(p.body), m["body"].as_str().unwrap());
            assert_eq!(hex::encode(p.log), m["log"].as_str().unwrap());
            assert_eq!(e.version, m["version"].as_u64().unwrap() as u32);
            assert_eq!(p.attachments.len(), e.attachment_count as usize);
            // A head fetch: the bytes up to the end of the body.
            let end = e.body_end() as usize;
            let h = parse_stored(&bytes[..end], true).unwrap();
            assert_eq!((h.log, h.body), (p.log, p.body));
            assert!(h.attachments.is_empty());
            // Truncations are errors, never panics; so are trailing bytes.
            for cut in [0, 1, 23, 24, bytes.len() - 1] {
                assert!(parse_stored(&bytes[..cut], false).is_err());
            }
            assert!(parse_stored(&bytes[..end - 1], true).is_err());
            let mut long = bytes.clone();
            long.push(0);
            assert!(parse_stored(&long, false).is_err());
            n += 1;
        }
        assert!(n >= 5);
    }
}
