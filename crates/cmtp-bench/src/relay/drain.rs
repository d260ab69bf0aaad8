//! Draining a queue: with B down (A's route points at a closed port), N messages are
//! queued at A; then A's RSS is sampled every 10 ms while a command given by the caller
//! starts B and asks A to retry (`cmtpd queue retry --all`), until A's queue is empty.

use super::{A_DEFERRED, A_DELIVERED, A_DEPTH, RelayConfig, sample, submit_all};
use crate::sys::{self, RssSampler};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Result of a drain run.
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    /// `mail` or `submit`.
    pub submission: String,
    /// Body bytes per message.
    pub size: usize,
    /// Messages A accepted into its queue.
    pub queued: u64,
    /// Messages A refused while queueing.
    pub failures: u64,
    /// Queueing rate at A while B was down, messages per second.
    pub queue_per_sec: f64,
    /// A's queue depth once everything was queued and deferred.
    pub depth_before: f64,
    /// A's VmRSS before queueing, bytes.
    pub rss_before_queue: u64,
    /// A's VmRSS with the queue full, when the drain starts, bytes.
    pub rss_start: u64,
    /// Highest VmRSS sampled while draining, bytes.
    pub rss_peak: u64,
    /// A's VmRSS once the queue is empty, bytes.
    pub rss_end: u64,
    /// rss_peak − rss_start, bytes.
    pub rss_growth: i64,
    /// RSS samples taken.
    pub samples: u64,
    /// Seconds the start command (B's start, the retry) took.
    pub command_seconds: f64,
    /// First delivery counted → queue empty, seconds.
    pub drain_seconds: f64,
    /// Messages per second over `drain_seconds`.
    pub drain_per_sec: f64,
    /// Start command launched → queue empty, seconds.
    pub total_seconds: f64,
    /// A's CPU seconds while draining.
    pub a_cpu_s: Option<f64>,
    /// What changed in A's /metrics while draining (fsyncs, records, relay counters).
    pub a_metrics_delta: BTreeMap<String, f64>,
    /// Load average at the end.
    pub load_avg: Option<[f64; 3]>,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// How often A's metrics are polled while draining.
const POLL: Duration = Duration::from_millis(10);

/// Queues `count` messages with B down, then runs `start_b` (argv) and watches A drain.
pub async fn drain(cfg: &RelayConfig, count: u64, start_b: &[String]) -> Result<DrainReport> {
    let a_m = cfg.a_metrics()?;
    let pid = cfg.a.pid.context("drain needs A's pid (--a-pid)")?;
    let Some((prog, args)) = start_b.split_first() else {
        bail!("drain needs the command that starts B, after `--`");
    };
    let before = crate::metrics::fetch(a_m).await.context("A's metrics")?;
    let rss_before_queue = sys::vm_rss(pid).with_context(|| format!("VmRSS of pid {pid}"))?;
    let (sub, start, queued_at) = submit_all(cfg, Some(count), None).await?;
    if sub.ok == 0 {
        bail!("A queued nothing: {:?}", sub.errors);
    }
    // Every queued message must have had its failed attempt (B is down), so the drain
    // below is the retry, not a first attempt racing the queueing.
    let deadline = Instant::now() + cfg.complete_timeout;
    let deferred_target = sample(&before, A_DEFERRED) + sub.ok as f64;
    super::wait_for(a_m, A_DEFERRED, deferred_target, POLL, deadline)
        .await
        .context("waiting for A to defer every message (is B really down?)")?;
    let at_start = crate::metrics::fetch(a_m).await?;
    let depth_before = sample(&at_start, A_DEPTH);
    let delivered_before = sample(&at_start, A_DELIVERED);
    let rss_start = sys::vm_rss(pid)?;
    let cpu_before = sys::process_cpu_seconds(pid).ok();
    let sampler = RssSampler::start(pid, POLL);
    let launched = Instant::now();
    let status = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("run {prog}"));
    let command_done = Instant::now();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            sampler.finish();
            return Err(e);
        }
    };
    if !status.success() {
        sampler.finish();
        bail!("{prog} failed: {status}");
    }
    let deadline = Instant::now() + cfg.complete_timeout;
    let mut first = None;
    let (end, last) = loop {
        let m = crate::metrics::fetch(a_m).await?;
        let now = Instant::now();
        let delivered = sample(&m, A_DELIVERED) - delivered_before;
        if delivered > 0.0 && first.is_none() {
            first = Some(now);
        }
        if delivered >= sub.ok as f64 && sample(&m, A_DEPTH) <= 0.0 {
            break (now, m);
        }
        if now >= deadline {
            sampler.finish();
            bail!(
                "queue not drained within {:?}: {delivered} of {} delivered",
                cfg.complete_timeout,
                sub.ok
            );
        }
        tokio::time::sleep(POLL).await;
    };
    let samples = sampler.finish();
    let rss_end = sys::vm_rss(pid)?;
    let a_cpu_s = cpu_before.and_then(|b| Some(sys::process_cpu_seconds(pid).ok()? - b));
    let first = first.unwrap_or(end);
    let drain_seconds = (end - first).as_secs_f64();
    let peak = samples.peak.max(rss_start).max(rss_end);
    Ok(DrainReport {
        submission: cfg.how.name().into(),
        size: cfg.size,
        queued: sub.ok,
        failures: sub.failures,
        queue_per_sec: sub.ok as f64 / (queued_at - start).as_secs_f64(),
        depth_before,
        rss_before_queue,
        rss_start,
        rss_peak: peak,
        rss_end,
        rss_growth: peak as i64 - rss_start as i64,
        samples: samples.samples,
        command_seconds: (command_done - launched).as_secs_f64(),
        drain_seconds,
        drain_per_sec: drain_rate(sub.ok, drain_seconds),
        total_seconds: (end - launched).as_secs_f64(),
        a_cpu_s,
        a_metrics_delta: crate::metrics::delta(&at_start, &last)
            .into_iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .collect(),
        load_avg: sys::load_average(),
        errors: sub.errors,
    })
}

/// Messages per second; a drain faster than the poll period counts as one period.
pub fn drain_rate(messages: u64, seconds: f64) -> f64 {
    messages as f64 / seconds.max(POLL.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_rate_is_bounded_by_the_poll_period() {
        assert_eq!(drain_rate(1000, 2.0), 500.0);
        assert_eq!(drain_rate(10, 0.0), 1000.0);
        assert!(drain_rate(0, 1.0) == 0.0);
    }
}
