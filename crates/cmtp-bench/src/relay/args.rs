//! `cmtp-bench relay` options, and its human-readable output.

use super::drain::{self, DrainReport};
use super::latency::{self, LatencyReport};
use super::submit::{Submission, read_secret_key};
use super::{RateReport, RelayConfig, Side};
use crate::args::{StopArgs, parse_seconds, parse_size_arg};
use crate::load::Latency;
use crate::size::format_size;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `relay` options.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Server A's CMTP address (the relaying server; loopback only, unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub server: String,
    /// A's metrics address (its relay counters and queue depth are watched).
    #[arg(long)]
    pub a_metrics: String,
    /// A's pid (CPU, and the RSS of a drain run).
    #[arg(long)]
    pub a_pid: Option<u32>,
    /// B's metrics address: also wait for B's stored-message counter.
    #[arg(long)]
    pub b_metrics: Option<String>,
    /// B's pid (CPU).
    #[arg(long)]
    pub b_pid: Option<u32>,
    /// Concurrent submitting connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub connections: usize,
    /// Body size per message (k/M/G suffixes, binary).
    #[arg(long, short = 's', default_value = "10k", value_parser = parse_size_arg)]
    pub size: u64,
    #[command(flatten)]
    pub stop: StopArgs,
    /// Recipient account at B.
    #[arg(long)]
    pub to: String,
    /// B's domain.
    #[arg(long)]
    pub domain: String,
    /// Sender account (with --submit-key: the key's account at A).
    #[arg(long, default_value = "cmtp-bench")]
    pub from: String,
    /// Sender domain (with --submit-key: A's domain).
    #[arg(long, default_value = "bench.invalid")]
    pub from_domain: String,
    /// Submit with SUBMIT signed by this 64-byte secret key (raw or hex, as a profile's
    /// secret.key); without it, plain MAIL (A must trust our network).
    #[arg(long, value_name = "FILE")]
    pub submit_key: Option<PathBuf>,
    /// Low-load latency: one message at a time, A's SUCCESS → A counts B's SUCCESS.
    #[arg(long, conflicts_with = "drain")]
    pub latency: bool,
    /// Warm-up messages of a latency run (not measured).
    #[arg(long, default_value_t = latency::DEFAULT_WARMUP)]
    pub warmup: u64,
    /// Drain: queue --messages with B down, then run the command after `--` (it starts
    /// B and asks A to retry), sampling A's RSS every 10 ms until the queue is empty.
    #[arg(long)]
    pub drain: bool,
    /// Longest wait for everything submitted to reach B (and for a drain).
    #[arg(long, default_value = "600", value_parser = parse_seconds)]
    pub complete_timeout: Duration,
    /// The command that starts B (drain runs), after `--`.
    #[arg(last = true)]
    pub start_b: Vec<String>,
}

/// Any relay report.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum RelayReport {
    /// A rate run.
    Rate(RateReport),
    /// A latency run.
    Latency(LatencyReport),
    /// A drain run.
    Drain(DrainReport),
}

/// Runs `relay` with the global options.
pub async fn run(a: RelayArgs, allow_remote: bool, timeout: Duration) -> Result<RelayReport> {
    let resolve = |s: &str, what: &str| {
        crate::resolve_target(s, allow_remote).with_context(|| what.to_string())
    };
    let how = match &a.submit_key {
        Some(p) => Submission::Submit(Arc::new(read_secret_key(p)?)),
        None => Submission::Mail,
    };
    let cfg = RelayConfig {
        server: resolve(&a.server, "--server")?,
        a: Side {
            metrics: Some(resolve(&a.a_metrics, "--a-metrics")?),
            pid: a.a_pid,
        },
        b: Side {
            metrics: a
                .b_metrics
                .as_deref()
                .map(|m| resolve(m, "--b-metrics"))
                .transpose()?,
            pid: a.b_pid,
        },
        how,
        from: (a.from, a.from_domain),
        to: (a.to, a.domain),
        size: usize::try_from(a.size).context("--size")?,
        connections: a.connections,
        timeout,
        complete_timeout: a.complete_timeout,
    };
    if a.latency {
        latency::count_only(a.stop.seconds)?;
        let n = a.stop.messages.unwrap_or(1);
        return Ok(RelayReport::Latency(
            latency::latency(&cfg, n, a.warmup).await?,
        ));
    }
    if a.drain {
        let n = a
            .stop
            .messages
            .context("--drain queues a count: use --messages")?;
        return Ok(RelayReport::Drain(drain::drain(&cfg, n, &a.start_b).await?));
    }
    Ok(RelayReport::Rate(
        super::rate(&cfg, a.stop.messages, a.stop.seconds).await?,
    ))
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ms",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    )
}

fn load(l: Option<[f64; 3]>) -> String {
    l.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
        .unwrap_or_else(|| "?".into())
}

/// The report as a few lines of text.
pub fn table(r: &RelayReport) -> String {
    match r {
        RelayReport::Rate(r) => {
            let mut o = format!(
                "relay {} via {} x{} ({}): {} ok, {} failed\n",
                r.submission,
                r.server,
                r.connections,
                format_size(r.size as u64),
                r.ok,
                r.failures
            );
            o += &format!(
                "submitted {:.0}/s in {:.2} s (latency {}); end to end {:.0}/s in {:.2} s (tail {:.2} s)\n",
                r.submit_per_sec,
                r.submit_seconds,
                lat(&r.submit_latency),
                r.e2e_per_sec,
                r.e2e_seconds,
                r.tail_seconds
            );
            let c = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2} s"));
            o += &format!(
                "CPU A {}, B {}, client {:.2} s; A RSS {}; load {}\n",
                c(r.cpu_s.a),
                c(r.cpu_s.b),
                r.cpu_s.client,
                r.a_rss_after.map_or("?".into(), mib),
                load(r.load_avg)
            );
            for (k, v) in r
                .a_metrics_delta
                .iter()
                .filter(|(k, _)| k.contains("relay"))
            {
                o += &format!("  A metrics Δ {k} {v}\n");
            }
            for e in &r.errors {
                o += &format!("  error: {e}\n");
            }
            o
        }
        RelayReport::Latency(r) => format!(
            "relay latency {} via {} ({}, {} messages after {} warm-up)\n\
             A SUCCESS → B SUCCESS counted at A: {}\n\
             submission (write → A SUCCESS): {}\n\
             metrics poll (resolution): {}; load {}\n",
            r.submission,
            r.server,
            format_size(r.size as u64),
            r.messages,
            r.warmup,
            lat(&r.relay),
            lat(&r.submit),
            lat(&r.poll),
            load(r.load_avg)
        ),
        RelayReport::Drain(r) => {
            let mut o = format!(
                "relay drain {} ({}): {} queued at {:.0}/s with B down (depth {}), {} refused\n",
                r.submission,
                format_size(r.size as u64),
                r.queued,
                r.queue_per_sec,
                r.depth_before,
                r.failures
            );
            o += &format!(
                "drained in {:.2} s ({:.0}/s; {:.2} s from the start command, which took {:.2} s)\n",
                r.drain_seconds, r.drain_per_sec, r.total_seconds, r.command_seconds
            );
            o += &format!(
                "A RSS before queueing {}, start {}, peak {}, end {}, growth {} ({} samples); A CPU {}; load {}\n",
                mib(r.rss_before_queue),
                mib(r.rss_start),
                mib(r.rss_peak),
                mib(r.rss_end),
                mib(r.rss_growth.max(0) as u64),
                r.samples,
                r.a_cpu_s.map_or("?".into(), |c| format!("{c:.2} s")),
                load(r.load_avg)
            );
            for (k, v) in &r.a_metrics_delta {
                o += &format!("  A metrics Δ {k} {v}\n");
            }
            for e in &r.errors {
                o += &format!("  error: {e}\n");
            }
            o
        }
    }
}
