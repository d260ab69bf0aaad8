//! `cmtp-bench`: a load generator for CMTP servers (like Postfix's smtp-source) and a
//! probe of this machine's raw ceilings, so server figures can be stated as ratios.
//!
//! Modes: `mail`, `keyrequest`, `idle`, `big`, `spike` (against a running server),
//! `relay` (through a relaying server to another) and `limits` (fdatasync and loopback
//! TCP). Every loop is bounded by a count, a duration or a size, and only loopback
//! servers are targeted unless `--allow-remote` is given.

pub mod args;
pub mod cli;
pub mod hist;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod relay;
pub mod size;
pub mod spike;
pub mod sys;
pub mod wire;

use anyhow::{Result, bail};
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `addr` and refuses anything but loopback unless `allow_remote`.
pub fn resolve_target(addr: &str, allow_remote: bool) -> Result<SocketAddr> {
    let all: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let Some(first) = all.first().copied() else {
        bail!("{addr} resolves to no address");
    };
    if !allow_remote && !all.iter().all(|a| a.ip().is_loopback()) {
        bail!("{addr} is not a loopback address; pass --allow-remote to load another host");
    }
    Ok(first)
}
