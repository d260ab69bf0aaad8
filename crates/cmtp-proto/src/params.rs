//! What every command parser shares (spec §2): the reader of NUL-terminated
//! parameters, the "need more" early return, and the error that ends a stream. A module
//! of its own so that the parsers of the core commands (`command`) and of the OPAQUE
//! extension (`opaque`) both use it without depending on each other.

use crate::limits::{MAX_COMMAND_WORD, MAX_PARAM};
use crate::text::parse_decimal;

/// Why the bytes are not a valid command. Every variant means the stream can no
/// longer be framed: the server answers FAILURE and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// More than 10 bytes without a terminator.
    #[error("command word longer than {MAX_COMMAND_WORD} bytes")]
    WordTooLong,
    /// A byte that cannot be part of a command word, or a word ended by a space, CR or
    /// LF that is not an SMTP verb.
    #[error("malformed command word")]
    MalformedWord,
    /// A well-formed word that is not a CMTP command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A parameter longer than 255 bytes.
    #[error("parameter longer than {MAX_PARAM} bytes")]
    ParamTooLong,
    /// A parameter that is not valid UTF-8.
    #[error("parameter is not valid UTF-8")]
    InvalidUtf8,
    /// A parameter with the wrong syntax (number, part, signature hex).
    #[error("invalid {0} parameter")]
    InvalidParam(&'static str),
}

/// Incremental reader of NUL-terminated parameters.
pub(crate) struct Params<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Params<'a> {
    /// Parameters of `buf` from byte `pos` on (after the command word).
    pub(crate) fn new(buf: &'a [u8], pos: usize) -> Self {
        Params { buf, pos }
    }

    /// Bytes consumed so far, the command word included.
    pub(crate) fn used(&self) -> usize {
        self.pos
    }

    /// The bytes after the current position (for binary fields).
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Moves past `n` bytes of [`Params::rest`].
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Next parameter as raw bytes; Ok(None) = need more.
    pub(crate) fn raw(&mut self) -> Result<Option<&'a [u8]>, CommandError> {
        let rest = &self.buf[self.pos..];
        let window = &rest[..rest.len().min(MAX_PARAM + 1)];
        match window.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                Ok(Some(&rest[..n]))
            }
            None if window.len() > MAX_PARAM => Err(CommandError::ParamTooLong),
            None => Ok(None),
        }
    }

    pub(crate) fn string(&mut self) -> Result<Option<String>, CommandError> {
        match self.raw()? {
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| CommandError::InvalidUtf8),
            None => Ok(None),
        }
    }

    pub(crate) fn number(&mut self, what: &'static str) -> Result<Option<u64>, CommandError> {
        match self.raw()? {
            Some(b) => parse_decimal(b)
                .map(Some)
                .ok_or(CommandError::InvalidParam(what)),
            None => Ok(None),
        }
    }
}

/// `?`-like early return of `Ok(None)` for "need more".
macro_rules! need {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}
pub(crate) use need;
