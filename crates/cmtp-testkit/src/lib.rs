//! Test support shared by the Cipher Mail crates (a dev-dependency only, never published).
//!
//! - [`TestServer`]: the real `cmtpd` binary on an ephemeral 127.0.0.1 port with its own
//!   temporary folder, started through `--ready-file`; signals, kill, restart on the same
//!   address, admin subcommands, metrics and health over HTTP.
//! - [`Client`]: a blocking raw-protocol client that checks replies byte for byte and
//!   verifies every server signature.
//! - [`cmtp`], [`cmtp_cmd`], [`admin`], [`run`]: the real binaries as child processes,
//!   each bounded by a deadline.
//! - [`PgCluster`]: a private PostgreSQL cluster (initdb in a temporary directory, run
//!   unprivileged, on a free loopback port), one database per test.
//! - [`store_suite`] (feature `store-suite`): the behavioural checks every storage
//!   backend passes.
//! - [`dns`] (feature `dns`): a real DNS server (hickory-server) on 127.0.0.1.
//! - Fixtures: [`vectors_dir`], [`noise`], [`message`], [`poll`] / [`wait_until`].
//!
//! Binaries are found beside the test executable (`target/<profile>/`), because
//! `env!("CARGO_BIN_EXE_…")` exists only in the tests of the crate that owns the binary.
//! Cargo builds a package's binaries for its own integration tests, so
//! `cargo test --workspace` builds `cmtpd` and `cmtp` before any test runs; a crate's
//! tests run alone (`cargo test -p cmtp-cli`) get a panic naming the `cargo build -p …`
//! that makes the missing binary.
//!
//! Tests import everything with `use cmtp_testkit::*;`.

mod bins;
mod cli;
mod client;
mod fixtures;
mod pg;
mod process;
mod server;
mod tmpfs;

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "store-suite")]
pub mod store_suite;

pub use bins::{bin_dir, cmtp_bin, cmtpd_bin};
pub use cli::{cmtp, cmtp_cmd, login};
pub use client::Client;
pub use fixtures::{IO_TIMEOUT, message, noise, now, poll, vectors_dir, wait_until};
pub use pg::{PG_USER, PgCluster, pg_bin_dir};
pub use process::{
    Out, add_user, admin, admin_with_config, run, seed_user, seed_user_into, server_public_key,
};
pub use server::{Backend, NO_DNS, Opts, TestServer};
pub use tmpfs::{Tmpfs, on_tmpfs};
