//! The typed errors of the client library.
//!
//! Every variant is something a person can act on; [`ClientError::kind`] groups them
//! into the few classes a program (or the `cmtp` binary's exit codes) cares about.

use std::net::SocketAddr;
use std::time::Duration;

/// Which broad class an error belongs to. The `cmtp` binary maps each to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The server could not be found or reached (DNS, refused, connect timeout).
    Unreachable,
    /// Something answered, but it is not a CMTP server (e.g. an SMTP server).
    NotCmtp,
    /// The password does not open the xzibit.
    WrongPassword,
    /// The server does not know this user (LOGIN FAILURE, KEYNOTAVAILABLE).
    UnknownUser,
    /// A pinned key (server or user) changed.
    KeyChanged,
    /// The message is larger than the server (or the local limit) accepts.
    TooLarge,
    /// The server could not deliver the message (DELIVERYFAILURE) or the recipient's
    /// domain is unreachable.
    DeliveryFailure,
    /// A step took longer than its timeout (the 2016 server answers some errors with silence).
    Timeout,
    /// The server broke the protocol or a signature did not verify.
    Protocol,
    /// The mailbox refused the request (AUTHFAILURE) or has no such message.
    Mailbox,
    /// The local profile is missing or unusable.
    Profile,
    /// Local I/O, bad input, anything else.
    Other,
}

/// Everything that can go wrong in `cmtp-client`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// DNS found no CMTP or mail server for a domain.
    #[error("no CMTP server found for domain {domain}: {reason}")]
    Discovery {
        /// The domain looked up.
        domain: String,
        /// What the resolver said.
        reason: String,
    },
    /// TCP connect failed.
    #[error("cannot reach the server at {addr}: {source}")]
    Connect {
        /// The address tried (host:port as given).
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A host name did not resolve to any address.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said, or that it did not answer in time.
        reason: String,
    },
    /// A network step timed out.
    #[error("timed out after {after:?} while {step} (server {peer})")]
    Timeout {
        /// What we were doing.
        step: &'static str,
        /// The timeout that elapsed.
        after: Duration,
        /// The server.
        peer: SocketAddr,
    },
    /// The connection broke.
    #[error("connection to {peer} failed while {step}: {source}")]
    Io {
        /// What we were doing.
        step: &'static str,
        /// The server.
        peer: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection where a reply was due.
    #[error("the server {peer} closed the connection while {step}")]
    Closed {
        /// What we were doing.
        step: &'static str,
        /// The server.
        peer: SocketAddr,
    },
    /// The peer is not a CMTP server.
    #[error("{peer} is not a CMTP server (it said {said:?}); is this an SMTP server?")]
    NotCmtp {
        /// The server.
        peer: SocketAddr,
        /// What it said (greeting or answer to OHAI), truncated.
        said: String,
    },
    /// The server answered something the protocol does not allow.
    #[error("protocol error from {peer} while {step}: {detail}")]
    Protocol {
        /// What we were doing.
        step: &'static str,
        /// The server.
        peer: SocketAddr,
        /// What was wrong.
        detail: String,
    },
    /// A server signature did not verify against the pinned key.
    #[error(
        "the server's signature on its {what} does not verify against the pinned server key: \
         someone may be tampering with the connection"
    )]
    BadSignature {
        /// Which reply.
        what: &'static str,
    },
    /// The server presented a key other than the pinned one.
    #[error(
        "@@@ THE SERVER KEY OF {server} HAS CHANGED @@@\n  pinned:    {pinned}\n  presented: {presented}\n\
         Someone may be intercepting your mail, or the operator replaced the server key.\n\
         Check the new fingerprint with the operator; to accept it run:\n  \
         cmtp server trust --fingerprint '{presented}'"
    )]
    ServerKeyChanged {
        /// host:port of the server.
        server: String,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the presented key.
        presented: String,
    },
    /// `server trust --fingerprint` named a key other than the one the server presents.
    #[error(
        "the server presents the key {presented}, not the fingerprint you gave ({expected}); \
         nothing was changed"
    )]
    FingerprintMismatch {
        /// What the person typed.
        expected: String,
        /// Fingerprint of the presented key.
        presented: String,
    },
    /// A user's key differs from the pinned one.
    #[error(
        "@@@ THE KEY OF {address} HAS CHANGED @@@\n  pinned:    {pinned}\n  presented: {presented}\n\
         Mail sealed to the new key may be read by someone else. Confirm the new fingerprint\n\
         with {address}; to accept it run:\n  cmtp key {address} --accept"
    )]
    UserKeyChanged {
        /// The address.
        address: String,
        /// Fingerprint of the pinned key.
        pinned: String,
        /// Fingerprint of the presented key.
        presented: String,
    },
    /// The server knows no such user (LOGIN FAILURE or KEYNOTAVAILABLE).
    #[error("unknown user {address}: the server has no such account or key")]
    UnknownUser {
        /// The address asked about.
        address: String,
    },
    /// The password does not open the xzibit.
    #[error("wrong password for {address}")]
    WrongPassword {
        /// The address.
        address: String,
    },
    /// The key inside the xzibit differs from what KEYREQUEST says for the same user.
    #[error(
        "the key inside {address}'s xzibit differs from the key the server publishes for it \
         (xzibit {xzibit}, published {published})"
    )]
    XzibitKeyMismatch {
        /// The address.
        address: String,
        /// Fingerprint of the key in the xzibit.
        xzibit: String,
        /// Fingerprint of the published key.
        published: String,
    },
    /// The message exceeds a size limit.
    #[error("message too large: {detail}")]
    TooLarge {
        /// Which limit, and the sizes.
        detail: String,
    },
    /// The server answered a general FAILURE where a specific reply was due (a rate
    /// limit or a server-side error).
    #[error("the server refused the command while {step} (FAILURE: rate limit or server error)")]
    ServerFailure {
        /// What we were doing.
        step: &'static str,
    },
    /// The server answered DELIVERYFAILURE.
    #[error("delivery to {recipient} failed: the server answered DELIVERYFAILURE ({why})")]
    DeliveryFailure {
        /// The recipient.
        recipient: String,
        /// Our best explanation.
        why: String,
    },
    /// The mailbox refused the request.
    #[error("the mailbox refused the request: {text}{hint}")]
    MailboxRefused {
        /// AUTHFAILURE / FAILURE.
        text: String,
        /// A hint for the person.
        hint: &'static str,
    },
    /// The mailbox has no message with this id.
    #[error("no message with id {id}")]
    NoSuchMessage {
        /// The id asked for.
        id: u64,
    },
    /// A message we fetched could not be decoded or opened.
    #[error("message {id} cannot be read: {detail}")]
    BadMessage {
        /// The id of the message fetched.
        id: u64,
        /// What was wrong.
        detail: String,
    },
    /// An address is not `account@domain` or breaks the name rule.
    #[error("invalid address {address:?}: {why}")]
    BadAddress {
        /// The address (or name) as given.
        address: String,
        /// What is wrong.
        why: String,
    },
    /// The draft cannot be encoded as an internal body (spec §6), e.g. a subject or
    /// address with a NUL, or too many CCs.
    #[error("cannot encode the message body: {0}")]
    InvalidBody(#[source] cmtp_proto::BodyError),
    /// An attachment name that cannot be sent (empty, or with a NUL).
    #[error("invalid attachment name {name:?}: it must be non-empty and contain no NUL")]
    BadAttachmentName {
        /// The name.
        name: String,
    },
    /// A signature had to be checked before a server key was set
    /// ([`crate::Connection::set_server_key`]): a misuse of the library.
    #[error("no server key set on the connection to {peer}: cannot verify its signatures")]
    NoServerKey {
        /// The server.
        peer: SocketAddr,
    },
    /// A background task (the password KDF) failed to run.
    #[error("internal error: the {what} task failed: {detail}")]
    Task {
        /// Which task.
        what: &'static str,
        /// What the runtime said.
        detail: String,
    },
    /// The profile is missing or unusable.
    #[error("profile {path}: {detail}")]
    Profile {
        /// The profile folder or file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered as the 2016 implementation although it spoke CMTP/1 when
    /// the profile logged in: the dialect comes from unsigned lines, so someone on the
    /// path may be downgrading the connection.
    #[error(
        "the server {server} now answers as the 2016 implementation, but it spoke CMTP/1 \
         when you logged in: someone on the network may be forcing a downgrade to the \
         older dialect (unconfirmed MAIL, no mailbox). Nothing was sent. If the server \
         really was replaced by the 2016 one, log in again with `--compat 2016`"
    )]
    Downgrade {
        /// host:port of the server.
        server: String,
    },
    /// The server no longer offers the OPAQUE login (docs/protocol.md D8) although this
    /// account logged in with it before: the offer is in the unsigned OHAI answer, so
    /// someone on the path may have removed it.
    #[error(
        "the server {server} no longer offers the OPAQUE login, but this account used it \
         before: someone on the network may be forcing a downgrade to the CMTP/1 LOGIN. \
         Nothing was sent. If the server's operator really turned OPAQUE off, log in \
         again with a new profile"
    )]
    OpaqueDowngrade {
        /// host:port of the server.
        server: String,
    },
    /// The server refused an OPAQUE registration (AUTHFAILURE: a bad signature, a stale
    /// timestamp, or a malformed record).
    #[error("the server refused the OPAQUE registration (AUTHFAILURE); check the clock")]
    RegistrationRefused,
    /// The TLS handshake failed (docs/protocol.md D7). Nothing was sent over it.
    #[error("TLS with {peer} failed: {detail}")]
    Tls {
        /// The server's address.
        peer: SocketAddr,
        /// What went wrong (rustls' words).
        detail: String,
    },
    /// The server did not offer TLS although it is required: it offered TLS before
    /// (the profile recorded it), or `--require-tls` was given. The offer is in the
    /// unsigned OHAI answer, so someone on the path may be stripping it.
    #[error(
        "the server {server} did not offer TLS{why}: someone on the network may be \
         stripping it to read the connection. Nothing was sent"
    )]
    TlsDowngrade {
        /// host:port of the server.
        server: String,
        /// Why TLS was expected (" although it did when you logged in", " (--require-tls)").
        why: &'static str,
    },
    /// Not supported by the server dialect in use.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A crypto operation failed (other than a wrong password).
    #[error("crypto error: {0}")]
    Crypto(#[from] cmtp_crypto::CryptoError),
}

impl ClientError {
    /// The broad class of this error (stable; the CLI's exit codes follow it).
    pub fn kind(&self) -> ErrorKind {
        use ClientError as E;
        match self {
            E::Discovery { .. } | E::Connect { .. } | E::Resolve { .. } => ErrorKind::Unreachable,
            E::Timeout { .. } => ErrorKind::Timeout,
            E::Io { .. }
            | E::Closed { .. }
            | E::Protocol { .. }
            | E::BadSignature { .. }
            | E::Downgrade { .. }
            | E::OpaqueDowngrade { .. }
            | E::Tls { .. }
            | E::TlsDowngrade { .. } => ErrorKind::Protocol,
            E::NotCmtp { .. } => ErrorKind::NotCmtp,
            E::ServerFailure { .. } | E::RegistrationRefused => ErrorKind::Other,
            E::ServerKeyChanged { .. }
            | E::UserKeyChanged { .. }
            | E::FingerprintMismatch { .. } => ErrorKind::KeyChanged,
            E::XzibitKeyMismatch { .. } => ErrorKind::Protocol,
            E::UnknownUser { .. } => ErrorKind::UnknownUser,
            E::WrongPassword { .. } => ErrorKind::WrongPassword,
            E::TooLarge { .. } => ErrorKind::TooLarge,
            E::DeliveryFailure { .. } => ErrorKind::DeliveryFailure,
            E::MailboxRefused { .. } | E::NoSuchMessage { .. } => ErrorKind::Mailbox,
            E::Profile { .. } => ErrorKind::Profile,
            E::BadMessage { .. }
            | E::BadAddress { .. }
            | E::File { .. }
            | E::Unsupported(_)
            | E::InvalidBody(_)
            | E::BadAttachmentName { .. }
            | E::NoServerKey { .. }
            | E::Task { .. } => ErrorKind::Other,
            E::Crypto(_) => ErrorKind::Other,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
