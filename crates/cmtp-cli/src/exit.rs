//! Exit codes: one per class of error a person (or a script) acts on differently.
//! The table is repeated in `cmtp --help` (main.rs, checked by a test) and docs/client.md.

use cmtp_client::{ClientError, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// Anything not listed below (local I/O, bad input, ...).
pub const OTHER: u8 = 1;
/// Command-line usage error (clap).
pub const USAGE: u8 = 2;
/// Server unreachable: DNS found nothing, connection refused or connect timeout.
pub const UNREACHABLE: u8 = 3;
/// Not a CMTP server (e.g. an SMTP server answered).
pub const NOT_CMTP: u8 = 4;
/// Wrong password.
pub const WRONG_PASSWORD: u8 = 5;
/// Unknown user (no such account / no key).
pub const UNKNOWN_USER: u8 = 6;
/// A pinned key (server or user) changed.
pub const KEY_CHANGED: u8 = 7;
/// Message too large.
pub const TOO_LARGE: u8 = 8;
/// Delivery failure (DELIVERYFAILURE: no such account, relaying refused, or the
/// recipient's domain unreachable).
pub const DELIVERY_FAILURE: u8 = 9;
/// The server broke the protocol or a signature did not verify.
pub const PROTOCOL: u8 = 10;
/// A network step timed out.
pub const TIMEOUT: u8 = 11;
/// The mailbox refused the request (AUTHFAILURE) or there is no such message.
pub const MAILBOX: u8 = 12;
/// No usable profile (not logged in, or the profile is damaged).
pub const PROFILE: u8 = 13;

/// The exit code for a client error.
pub fn for_kind(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::Unreachable => UNREACHABLE,
        ErrorKind::NotCmtp => NOT_CMTP,
        ErrorKind::WrongPassword => WRONG_PASSWORD,
        ErrorKind::UnknownUser => UNKNOWN_USER,
        ErrorKind::KeyChanged => KEY_CHANGED,
        ErrorKind::TooLarge => TOO_LARGE,
        ErrorKind::DeliveryFailure => DELIVERY_FAILURE,
        ErrorKind::Protocol => PROTOCOL,
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::Mailbox => MAILBOX,
        ErrorKind::Profile => PROFILE,
        ErrorKind::Other => OTHER,
    }
}

/// The exit code for any error: the first [`ClientError`] in its chain decides.
pub fn for_error(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<ClientError>())
        .map(|c| for_kind(c.kind()))
        .unwrap_or(OTHER)
}
