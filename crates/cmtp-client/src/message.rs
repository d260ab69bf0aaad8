//! Outgoing drafts and incoming (fetched) messages.

use std::path::Path;

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
            return Err(ClientError::File {
                path: name.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an attachment name must be non-empty and contain no NUL",
                ),
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

impl ReceivedAttachment {
    /// A name safe to create in a folder: the last path component, without control
    /// characters, never `.`/`..`/empty (then `attachment-N`).
    pub fn safe_name(&self, index: usize) -> String {
        let last = self
            .name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .collect::<String>();
        if last.is_empty() || last == "." || last == ".." {
            format!("attachment-{}", index + 1)
        } else {
            last
        }
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
    pub version: u32,
    pub dest_account: String,
    pub dest_domain: String,
    pub src_account: String,
    pub src_domain: String,
    pub log: &'a [u8],
    pub body: &'a [u8],
    /// Empty for a `head` fetch.
    pub attachments: Vec<&'a [u8]>,
}

/// Splits a stored message. With `head`, the bytes end after the body.
pub(crate) fn parse_stored(
    buf: &[u8],
    head: bool,
) -> std::result::Result<StoredMessage<'_>, String> {
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: u64| -> std::result::Result<&[u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflow".to_string())?;
        let end = pos.checked_add(n).ok_or("length overflow")?;
        if end > buf.len() {
            return Err(format!("truncated: need {end} bytes, have {}", buf.len()));
        }
        let s = &buf[*pos..end];
        *pos = end;
        Ok(s)
    };
    let hdr = take(&mut pos, 24)?;
    let version = u32::from_be_bytes(hdr[0..4].try_into().unwrap_or_default());
    let count = u32::from_be_bytes(hdr[4..8].try_into().unwrap_or_default());
    let log_len = u64::from_be_bytes(hdr[8..16].try_into().unwrap_or_default());
    let body_len = u64::from_be_bytes(hdr[16..24].try_into().unwrap_or_default());
    let mut names = Vec::with_capacity(4);
    for _ in 0..4 {
        let rest = &buf[pos..];
        let n = rest
            .iter()
            .take(cmtp_proto::MAX_PARAM + 1)
            .position(|&b| b == 0)
            .ok_or("envelope name unterminated or too long")?;
        names.push(String::from_utf8_lossy(&rest[..n]).into_owned());
        pos += n + 1;
    }
    let log = take(&mut pos, log_len)?;
    let body = take(&mut pos, body_len)?;
    let mut attachments = Vec::new();
    if !head {
        for _ in 0..count {
            let l = take(&mut pos, 8)?;
            let len = u64::from_be_bytes(l.try_into().unwrap_or_default());
            attachments.push(take(&mut pos, len)?);
        }
        if pos != buf.len() {
            return Err(format!("{} trailing bytes", buf.len() - pos));
        }
    }
    let mut it = names.into_iter();
    Ok(StoredMessage {
        version,
        dest_account: it.next().unwrap_or_default(),
        dest_domain: it.next().unwrap_or_default(),
        src_account: it.next().unwrap_or_default(),
        src_domain: it.next().unwrap_or_default(),
        log,
        body,
        attachments,
    })
}

/// Splits a log into its NUL-terminated entries (empty entries dropped).
pub(crate) fn log_entries(log: &[u8]) -> Vec<String> {
    log.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
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
        assert!(Attachment::new("a\0b", b"").is_err());
        let r = |n: &str| ReceivedAttachment {
            name: n.into(),
            data: vec![],
        };
        assert_eq!(r("../../etc/passwd").safe_name(0), "passwd");
        assert_eq!(r("..").safe_name(1), "attachment-2");
        assert_eq!(r("a\\b\nc").safe_name(0), "bc");
        assert_eq!(r("").safe_name(0), "attachment-1");
    }

    #[test]
    fn parses_message_vectors() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors/message.json"
        );
        let text = std::fs::read_to_string(path).expect("shared vectors at ../shared/vectors");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut n = 0;
        for m in v["vectors"].as_array().unwrap() {
            let bytes = hex::decode(m["message"].as_str().unwrap()).unwrap();
            let p = parse_stored(&bytes, false).unwrap();
            assert_eq!(p.dest_account, m["dest_account"].as_str().unwrap());
            assert_eq!(p.src_domain, m["source_domain"].as_str().unwrap());
            assert_eq!(hex::encode(p.body), m["body"].as_str().unwrap());
            assert_eq!(hex::encode(p.log), m["log"].as_str().unwrap());
            assert_eq!(p.version, m["version"].as_u64().unwrap() as u32);
            // Truncations are errors, never panics.
            for cut in [0, 1, 23, 24, bytes.len() - 1] {
                assert!(parse_stored(&bytes[..cut], false).is_err());
            }
            n += 1;
        }
        assert!(n >= 5);
    }
}
