//! Plaintexts inside a message (spec §6): the internal body and attachments.
//!
//! These are the bytes a crypto system seals; this module only frames them.
//!
//! Internal body (July 2016 layout):
//! `u32 timestamp | subject NUL | reply_to NUL | cc_list | text`, where the cc list is
//! `a@x NUL b@y NUL NUL` (each address NUL-terminated, then one more NUL) and `NUL NUL`
//! when there are no carbon copies. A reader takes strings until an empty one; if the
//! very first one is empty it takes one more NUL.

/// Errors of the plaintext formats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A field that is written NUL-terminated contains a NUL.
    #[error("{0} contains a NUL byte")]
    NulInField(&'static str),
    /// An empty carbon-copy address cannot be written (it would end the list).
    #[error("empty carbon-copy address")]
    EmptyCc,
    /// An attachment plaintext without the NUL after its file name.
    #[error("attachment has no NUL after its file name")]
    MissingNul,
    /// An attachment file name that is not UTF-8.
    #[error("attachment file name is not valid UTF-8")]
    InvalidUtf8,
}

/// The structured body plaintext ("internal body").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalBody {
    /// Creation time, Unix seconds.
    pub timestamp: u32,
    /// Subject line.
    pub subject: String,
    /// Reply address `account@domain`; may be empty.
    pub reply_to: String,
    /// Carbon-copy addresses (each non-empty).
    pub cc: Vec<String>,
    /// The text, to the end of the body (may contain NUL).
    pub text: String,
}

impl InternalBody {
    /// Appends the wire form. Fails if subject, reply-to or a CC contains a NUL, or a
    /// CC is empty: those cannot be framed.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.subject.contains('\0') {
            return Err(BodyError::NulInField("subject"));
        }
        if self.reply_to.contains('\0') {
            return Err(BodyError::NulInField("reply_to"));
        }
        for cc in &self.cc {
            if cc.is_empty() {
                return Err(BodyError::EmptyCc);
            }
            if cc.contains('\0') {
                return Err(BodyError::NulInField("cc"));
            }
        }
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(self.subject.as_bytes());
        out.push(0);
        out.extend_from_slice(self.reply_to.as_bytes());
        out.push(0);
        if self.cc.is_empty() {
            out.extend_from_slice(&[0, 0]);
        } else {
            for cc in &self.cc {
                out.extend_from_slice(cc.as_bytes());
                out.push(0);
            }
            out.push(0);
        }
        out.extend_from_slice(self.text.as_bytes());
        Ok(())
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BodyError> {
        let mut v = Vec::new();
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Parses an internal body; `None` if `b` does not follow the layout exactly
    /// (missing NULs, or any string or the text not valid UTF-8).
    pub fn parse(b: &[u8]) -> Option<InternalBody> {
        if b.len() < 4 {
            return None;
        }
        let timestamp = crate::be_u32(b);
        let mut pos = 4;
        let take = |pos: &mut usize| -> Option<String> {
            let rest = &b[*pos..];
            let n = rest.iter().position(|&c| c == 0)?;
            let s = std::str::from_utf8(&rest[..n]).ok()?.to_owned();
            *pos += n + 1;
            Some(s)
        };
        let subject = take(&mut pos)?;
        let reply_to = take(&mut pos)?;
        let mut cc = Vec::new();
        loop {
            let s = take(&mut pos)?;
            if s.is_empty() {
                if cc.is_empty() {
                    // No carbon copies: `NUL NUL`, the second NUL is part of the list.
                    if b.get(pos) != Some(&0) {
                        return None;
                    }
                    pos += 1;
                }
                break;
            }
            cc.push(s);
        }
        let text = std::str::from_utf8(&b[pos..]).ok()?.to_owned();
        Some(InternalBody {
            timestamp,
            subject,
            reply_to,
            cc,
            text,
        })
    }
}

/// A decrypted body, as a reader presents it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Body {
    /// A structured internal body.
    Internal(InternalBody),
    /// Anything else, e.g. the bare text the 2016 client sealed (lossy UTF-8).
    Legacy(String),
}

impl Body {
    /// Classifies a body plaintext: internal if it follows the layout exactly,
    /// otherwise legacy text. Never fails.
    pub fn decode(b: &[u8]) -> Body {
        match InternalBody::parse(b) {
            Some(ib) => Body::Internal(ib),
            None => Body::Legacy(String::from_utf8_lossy(b).into_owned()),
        }
    }
}

/// An attachment plaintext: `file_name NUL data`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttachmentPlain {
    /// File name (UTF-8, no NUL; a reader must still sanitise it before using it as a
    /// path).
    pub name: String,
    /// File contents.
    pub data: Vec<u8>,
}

impl AttachmentPlain {
    /// Appends `name NUL data`; fails if the name contains a NUL.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), BodyError> {
        if self.name.contains('\0') {
            return Err(BodyError::NulInField("attachment name"));
        }
        out.extend_from_slice(self.name.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.data);
        Ok(())
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BodyError> {
        let mut v = Vec::with_capacity(self.name.len() + 1 + self.data.len());
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Parses `name NUL data`.
    pub fn decode(b: &[u8]) -> Result<AttachmentPlain, BodyError> {
        let n = b
            .iter()
            .position(|&c| c == 0)
            .ok_or(BodyError::MissingNul)?;
        let name = std::str::from_utf8(&b[..n]).map_err(|_| BodyError::InvalidUtf8)?;
        Ok(AttachmentPlain {
            name: name.to_owned(),
            data: b[n + 1..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ib(cc: &[&str], text: &str) -> InternalBody {
        InternalBody {
            timestamp: 0x577a_f880,
            subject: "Lunch?".into(),
            reply_to: "dave@example.org".into(),
            cc: cc.iter().map(|s| s.to_string()).collect(),
            text: text.into(),
        }
    }

    #[test]
    fn cc_layouts() {
        let none = ib(&[], "hi").to_bytes().unwrap();
        assert_eq!(&none[4..], b"Lunch?\0dave@example.org\0\0\0hi");
        let two = ib(&["a@x", "b@y"], "hi").to_bytes().unwrap();
        assert_eq!(&two[4..], b"Lunch?\0dave@example.org\0a@x\0b@y\0\0hi");
        assert_eq!(Body::decode(&none), Body::Internal(ib(&[], "hi")));
        assert_eq!(
            Body::decode(&two),
            Body::Internal(ib(&["a@x", "b@y"], "hi"))
        );
        // Text starting with NUL survives.
        let t = ib(&[], "\0x");
        assert_eq!(Body::decode(&t.to_bytes().unwrap()), Body::Internal(t));
    }

    #[test]
    fn legacy_and_errors() {
        assert_eq!(
            Body::decode(b"Hello Bob\n"),
            Body::Legacy("Hello Bob\n".into())
        );
        assert_eq!(Body::decode(b""), Body::Legacy(String::new()));
        // First cc string empty but not followed by a second NUL: not internal.
        assert!(matches!(
            Body::decode(b"\0\0\0\0s\0r\0\0x"),
            Body::Legacy(_)
        ));
        assert!(matches!(
            Body::decode(b"\0\0\0\0s\0r\0\0\0x"),
            Body::Internal(_)
        ));
        assert_eq!(ib(&[""], "").to_bytes(), Err(BodyError::EmptyCc));
        let mut bad = ib(&[], "");
        bad.subject = "a\0".into();
        assert_eq!(bad.to_bytes(), Err(BodyError::NulInField("subject")));
    }

    #[test]
    fn attachments() {
        let a = AttachmentPlain {
            name: "f.txt".into(),
            data: vec![0, 1, 2],
        };
        let b = a.to_bytes().unwrap();
        assert_eq!(b, b"f.txt\0\0\x01\x02");
        assert_eq!(AttachmentPlain::decode(&b), Ok(a));
        assert_eq!(AttachmentPlain::decode(b"abc"), Err(BodyError::MissingNul));
        assert_eq!(
            AttachmentPlain::decode(b"\xff\0"),
            Err(BodyError::InvalidUtf8)
        );
    }
}
