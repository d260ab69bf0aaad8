//! Async CMTP client library: discovery, key pinning, login, sealing, sending and the
//! mailbox extension (docs/protocol.md D4).
//!
//! Layers, lowest first:
//! - [`Connection`]: one TCP connection, one method per command, a timeout on every
//!   network step, every server signature verified against the server key.
//! - [`Profile`] and [`Pins`]: the local profile folder and trust-on-first-use pins.
//! - [`Discovery`]: DNS SRV `_cmtp._tcp` / MX / implicit MX lookup, and `route` to
//!   socket addresses.
//! - [`Session`]: the high-level API (`login`, `send`, `inbox`, `read`, `delete`) the
//!   `cmtp` binary is a thin layer over.
//!
//! [`terminal::sanitize`] makes sender-controlled text safe to print on a terminal.
//!
//! Errors are typed ([`ClientError`]); [`ClientError::kind`] classifies them.
//!
//! ```no_run
//! use cmtp_client::{Address, ClientOptions, Draft, NoProgress, Profile, Session};
//!
//! # async fn demo() -> Result<(), cmtp_client::ClientError> {
//! let opts = ClientOptions::default();
//! let mut profile = Profile::open("/tmp/alice-profile")?;
//! let me = Address::parse("alice@localhost")?;
//! // Finds the server (here given), pins its key, opens the xzibit, writes the profile.
//! Session::login(&mut profile, &me, Some("127.0.0.1:9001"), b"password", false, &opts).await?;
//!
//! let mut s = Session::open(profile, &opts).await?;
//! let draft = Draft {
//!     to: vec![Address::parse("bob@localhost")?],
//!     subject: "Hello".into(),
//!     text: "Sealed for Bob.".into(),
//!     ..Default::default()
//! };
//! for r in s.send(&draft, &mut NoProgress).await? {
//!     println!("{}: {:?}", r.address, r.outcome.map_err(|e| e.to_string()));
//! }
//! s.unlock(b"password").await?; // the secret key, for the mailbox
//! for item in s.inbox().await? {
//!     let m = s.read(item.id).await?;
//!     println!("{} {} {}", m.from, m.subject, m.attachments.len());
//! }
//! s.close().await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod address;
mod conn;
mod discovery;
mod error;
mod message;
mod profile;
mod readstate;
mod session;
pub mod terminal;
pub mod tls;

/// The README's examples, compiled as documentation tests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use address::Address;
pub use conn::{
    Connection, Dialect, MailHead, MailOutcome, NoProgress, Progress, Timeouts, sign_mbox,
    sign_submit, submit_digest,
};
pub use discovery::{Candidate, CandidateSource, Discovery, MAX_TARGETS, MX_PORT, RouteError};
pub use error::{ClientError, ErrorKind, Result};
pub use message::{Attachment, Draft, InboxItem, MAX_FILE_NAME, ReadMessage, ReceivedAttachment};
pub use profile::{Compat, PinStatus, Pins, Profile, ProfileConfig, TimeoutConfig};
pub use readstate::MAX_READ_IDS;
pub use session::{
    ClientOptions, DEFAULT_INBOX_DEADLINE, DEFAULT_INBOX_LIMIT, DEFAULT_MAX_MESSAGE, KeyLookup,
    LoginInfo, RecipientResult, Session, discover,
};

pub use cmtp_crypto::PublicKey;

/// The current time in Unix seconds (0 if the clock is before 1970), as the mailbox
/// requests and internal bodies carry it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod send_check {
    //! A webmail runs sessions on a multi-threaded runtime: everything must be `Send`.
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[allow(dead_code, unreachable_code, clippy::diverging_sub_expression)]
    fn futures_are_send(s: &mut Session, p: &mut Profile, d: &Draft, a: &Address) {
        let o = ClientOptions::default();
        is_send(&Session::login(p, a, None, b"", false, &o));
        is_send(&Session::open(Profile::open("x").unwrap(), &o));
        is_send(&s.send(d, &mut NoProgress));
        is_send(&s.inbox());
        is_send(&s.inbox_with(1, std::time::Duration::ZERO));
        is_send(&s.read(1));
        is_send(&s.read_with(1, &mut NoProgress));
        is_send(&s.delete(1));
        is_send(&s.unlock(b""));
        is_send(&s.lookup_key(a));
    }

    /// The server's relay routes from many connection tasks at once, sharing one
    /// `Discovery`.
    #[allow(dead_code)]
    fn discovery_is_shared(d: &Discovery) {
        fn is_sync<T: Send + Sync>(_: &T) {}
        is_sync(d);
        is_send(&d.route("x"));
        is_send(&d.lookup("x"));
        is_send(&d.candidates("x"));
    }
}
