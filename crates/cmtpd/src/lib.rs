//! `cmtpd`, the CMTP/1 server of Cipher Mail, as a library: the binary (`main.rs`) is a
//! thin shell over [`cli`], [`server`] and [`admin`].
//!
//! Layout (mini-redis style), each module importing only those listed after it:
//! [`server`] (listeners, connection limits, shutdown) → [`handler`] (one connection's
//! command loop) → `cmd` (dispatch, one handler per command) → [`connection`] (a
//! connection's buffered I/O, through methods) → [`shared`] (what connections share,
//! generic over the store) → [`config`], [`keys`] (server key, pre-signed replies built
//! with cmtp-proto's encoders), [`metrics`], [`ratelimit`], [`quota`], [`relay`]
//! (federation as connections see it: relay policy, routes, relayed keys, pinned peer
//! keys), [`shutdown`]. [`outbound`] (the relay queue's scheduler and delivery workers)
//! sits beside `handler`: it imports `shared` and `relay`, nothing imports it but
//! `server`. [`http`] serves `/metrics` and `/health`;
//! [`admin`] and [`cli`] are the admin subcommands and the command line.

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
mod cmd;
pub mod config;
pub mod connection;
pub mod handler;
pub mod http;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod opaque;
pub mod outbound;
pub mod quota;
pub mod ratelimit;
pub mod relay;
pub mod server;
pub mod shared;
pub mod shutdown;

pub use config::Config;
pub use server::{Server, ServerError};
pub use shared::{Backend, Shared};

/// Seconds since the Unix epoch (the client library's clock helper; one copy).
pub use cmtp_client::unix_now;
