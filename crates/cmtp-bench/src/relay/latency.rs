//! The low-load latency of a relay hop: one message in flight, from A's SUCCESS (the
//! message is durable in A's queue) to A's `cmtpd_relay_delivered_total` counting it
//! (B stored it durably and A verified B's signed SUCCESS). A's /metrics is polled
//! back to back, so the figure is late by at most one poll (reported as `poll`).

use super::{A_DELIVERED, RelayConfig, connect, read_sample, submit_one};
use crate::hist::Histogram;
use crate::load::Latency;
use crate::sys;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Result of a latency run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// `mail` or `submit`.
    pub submission: String,
    /// A's address.
    pub server: String,
    /// Body bytes per message.
    pub size: usize,
    /// Messages measured (after the warm-up).
    pub messages: u64,
    /// Warm-up messages sent first and not measured (the first pins B's key).
    pub warmup: u64,
    /// A's SUCCESS → A counted B's SUCCESS.
    pub relay: Latency,
    /// Write → A's SUCCESS (the submission itself).
    pub submit: Latency,
    /// Duration of one /metrics poll (the resolution of `relay`).
    pub poll: Latency,
    /// Load average at the end.
    pub load_avg: Option<[f64; 3]>,
}

/// Sends `warmup + messages` messages one at a time on one connection; after each
/// SUCCESS polls A's delivered counter until it moves.
pub async fn latency(cfg: &RelayConfig, messages: u64, warmup: u64) -> Result<LatencyReport> {
    if messages == 0 {
        bail!("--messages must be at least 1");
    }
    let a_m = cfg.a_metrics()?;
    let mut c = connect(cfg).await.context("connection to A")?;
    let mut maker = cfg.maker(0)?;
    let mut buf = Vec::new();
    let (mut relay, mut submit, mut poll) = (Histogram::new(), Histogram::new(), Histogram::new());
    let mut delivered = read_sample(a_m, A_DELIVERED).await?;
    for i in 0..warmup + messages {
        let t0 = Instant::now();
        submit_one(&mut c, &mut maker, &mut buf)
            .await
            .with_context(|| format!("message {i}"))?;
        let accepted = Instant::now();
        let deadline = accepted + cfg.complete_timeout;
        loop {
            let p0 = Instant::now();
            let v = read_sample(a_m, A_DELIVERED).await?;
            let seen = Instant::now();
            if i >= warmup {
                poll.record((seen - p0).as_nanos() as u64);
            }
            if v > delivered {
                delivered = v;
                if i >= warmup {
                    relay.record((seen - accepted).as_nanos() as u64);
                    submit.record((accepted - t0).as_nanos() as u64);
                }
                break;
            }
            if seen >= deadline {
                bail!(
                    "message {i}: not delivered to B within {:?}",
                    cfg.complete_timeout
                );
            }
            // A fetch is a whole HTTP exchange; yielding between them is enough.
            tokio::task::yield_now().await;
        }
    }
    Ok(LatencyReport {
        submission: cfg.how.name().into(),
        server: cfg.server.to_string(),
        size: cfg.size,
        messages,
        warmup,
        relay: Latency::of(&relay),
        submit: Latency::of(&submit),
        poll: Latency::of(&poll),
        load_avg: sys::load_average(),
    })
}

/// Default warm-up: enough for A to have pinned B's key and warmed its connection path.
pub const DEFAULT_WARMUP: u64 = 5;

/// Refuses `--seconds` for a latency run: it sends a fixed number of messages, one at a
/// time (`--messages`).
pub fn count_only(seconds: Option<Duration>) -> Result<()> {
    if seconds.is_some() {
        bail!("--latency runs are counted: use --messages");
    }
    Ok(())
}
