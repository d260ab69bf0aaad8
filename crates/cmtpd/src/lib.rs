//! `cmtpd`, the CMTP/1 server of Cipher Mail, as a library: the binary (`main.rs`) is a
//! thin shell over [`cli`], [`server`] and [`admin`].
//!
//! Layout (mini-redis style): [`config`] (TOML + CLI overrides), [`keys`] (server key,
//! pre-signed replies), [`server`] (listeners, limits, shutdown), [`connection`] (one
//! client: pipelined commands, batched writes), `cmd` (one handler per command),
//! [`metrics`] + [`http`] (Prometheus endpoint), [`ratelimit`], [`relay`] (the seam for
//! federation), [`admin`] (the admin subcommands).

#![warn(missing_docs)]

pub mod admin;
pub mod cli;
mod cmd;
pub mod config;
pub mod connection;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod ratelimit;
pub mod relay;
pub mod server;

pub use config::Config;
pub use server::{Server, ServerError, Shared};
