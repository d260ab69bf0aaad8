//! `relay`: load on a relaying server A, measured until server B has stored everything
//! (docs/federation.md). Three runs:
//! - rate: N connections submit to A (SUBMIT or trusted MAIL); the submission rate at
//!   A, and the end-to-end rate from the first submission until A counts B's verified
//!   SUCCESS for every message (`cmtpd_relay_delivered_total`, and B's
//!   `cmtpd_deliveries_total{result="ok"}` when B's metrics are given);
//! - latency ([`latency`]): one message at a time, A's SUCCESS → A's delivered counter;
//! - drain ([`drain`]): a queue built while B is down, drained, A's RSS sampled.

pub mod args;
pub mod drain;
pub mod latency;
pub mod submit;

use crate::hist::Histogram;
use crate::load::Latency;
use crate::sys;
use crate::wire::{self, Conn, MailReply};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use submit::{MessageMaker, Submission};

/// A's counter of messages B accepted (signed SUCCESS verified).
pub const A_DELIVERED: &str = "cmtpd_relay_delivered_total";
/// A's queue depth gauge.
pub const A_DEPTH: &str = "cmtpd_relay_queue_depth";
/// A's counter of failed (deferred) relay attempts.
pub const A_DEFERRED: &str = "cmtpd_relay_deferred_total";
/// B's counter of messages stored.
pub const B_STORED: &str = "cmtpd_deliveries_total{result=\"ok\"}";

/// One server of the pair: where to read its metrics and (optionally) its process.
#[derive(Debug, Clone, Copy)]
pub struct Side {
    /// Its /metrics address.
    pub metrics: Option<SocketAddr>,
    /// Its pid, for CPU and RSS from /proc.
    pub pid: Option<u32>,
}

/// What every relay run needs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A's CMTP address.
    pub server: SocketAddr,
    /// A's metrics (required) and pid.
    pub a: Side,
    /// B's metrics and pid (optional).
    pub b: Side,
    /// Plain MAIL or signed SUBMIT.
    pub how: Submission,
    /// Sender account and domain (for SUBMIT: the key's account, A's domain).
    pub from: (String, String),
    /// Recipient account and domain (B's).
    pub to: (String, String),
    /// Body bytes per message.
    pub size: usize,
    /// Concurrent submitting connections.
    pub connections: usize,
    /// Longest wait for one read or write.
    pub timeout: Duration,
    /// Longest wait for everything submitted to reach B.
    pub complete_timeout: Duration,
}

impl RelayConfig {
    fn a_metrics(&self) -> Result<SocketAddr> {
        self.a
            .metrics
            .context("relay needs A's metrics address (--a-metrics)")
    }

    fn maker(&self, seed: u64) -> Result<MessageMaker> {
        MessageMaker::new(
            self.how.clone(),
            (&self.from.0, &self.from.1),
            (&self.to.0, &self.to.1),
            self.size,
            seed,
        )
    }
}

/// The value of one sample of a metrics page (0 when absent: a counter not yet set).
pub fn sample(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// Reads one sample of `addr`'s /metrics.
pub async fn read_sample(addr: SocketAddr, name: &str) -> Result<f64> {
    Ok(sample(&crate::metrics::fetch(addr).await?, name))
}

/// Unix seconds now (a SUBMIT's timestamp).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Tallies of the submitting connections.
#[derive(Default)]
pub struct Submitted {
    /// SUCCESS replies.
    pub ok: u64,
    /// Everything else.
    pub failures: u64,
    /// Submission latency (write → SUCCESS), ns.
    pub hist: Histogram,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

impl Submitted {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.failures += 1;
        let s = format!("{e:#}");
        if self.errors.len() < 10 && !self.errors.contains(&s) {
            self.errors.push(s);
        }
    }

    fn merge(&mut self, o: Submitted) {
        self.ok += o.ok;
        self.failures += o.failures;
        self.hist.merge(&o.hist);
        for e in o.errors {
            if self.errors.len() < 10 && !self.errors.contains(&e) {
                self.errors.push(e);
            }
        }
    }
}

/// Sends one message and reads A's reply.
pub async fn submit_one(c: &mut Conn, maker: &mut MessageMaker, buf: &mut Vec<u8>) -> Result<()> {
    maker.next(unix_now(), buf);
    c.write_all(buf).await?;
    match c.read_with(wire::decode_mail_reply).await? {
        MailReply::Success => Ok(()),
        MailReply::Failure => bail!("FAILURE"),
        MailReply::Refused(t) => bail!("refused: {t}"),
    }
}

/// Opens a connection to A and says OHAI.
pub async fn connect(cfg: &RelayConfig) -> Result<Conn> {
    let mut c = Conn::connect(cfg.server, cfg.timeout).await?;
    c.ohai().await?;
    Ok(c)
}

/// Submits `count` messages (or for `seconds`) over `cfg.connections` connections,
/// each one message at a time; returns the tallies and the time of the first write.
pub async fn submit_all(
    cfg: &RelayConfig,
    count: Option<u64>,
    seconds: Option<Duration>,
) -> Result<(Submitted, Instant, Instant)> {
    if cfg.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if (cfg.size as u128) * (cfg.connections as u128) > 1 << 30 {
        bail!("connections × size above 1 GiB (one message is held per connection)");
    }
    let mut conns = Vec::with_capacity(cfg.connections);
    for i in 0..cfg.connections {
        let c = connect(cfg)
            .await
            .with_context(|| format!("connection {i} to A"))?;
        conns.push((c, cfg.maker(i as u64)?));
    }
    let budget = Arc::new(AtomicI64::new(count.map_or(i64::MAX, |n| n as i64)));
    let start = Instant::now();
    let deadline = seconds.map(|s| start + s);
    let mut set = tokio::task::JoinSet::new();
    for (mut c, mut maker) in conns {
        let budget = budget.clone();
        set.spawn(async move {
            let mut t = Submitted::default();
            let mut buf = Vec::new();
            let mut consecutive = 0;
            while budget.fetch_sub(1, Ordering::Relaxed) > 0
                && deadline.is_none_or(|d| Instant::now() < d)
            {
                let t0 = Instant::now();
                match submit_one(&mut c, &mut maker, &mut buf).await {
                    Ok(()) => {
                        t.hist.record(t0.elapsed().as_nanos() as u64);
                        t.ok += 1;
                        consecutive = 0;
                    }
                    Err(e) => {
                        t.error(e);
                        consecutive += 1;
                        // A refusing or broken server ends this connection's share.
                        if consecutive >= 50 {
                            break;
                        }
                    }
                }
            }
            t
        });
    }
    let mut all = Submitted::default();
    while let Some(t) = set.join_next().await {
        all.merge(t.context("submitter panicked")?);
    }
    Ok((all, start, Instant::now()))
}

/// Polls `addr`'s metric `name` every `every` until it reaches `target`, or fails at
/// `deadline`. Returns when it was first seen there and the last value read.
pub async fn wait_for(
    addr: SocketAddr,
    name: &str,
    target: f64,
    every: Duration,
    deadline: Instant,
) -> Result<(Instant, f64)> {
    loop {
        let v = read_sample(addr, name).await?;
        if v >= target {
            return Ok((Instant::now(), v));
        }
        if Instant::now() >= deadline {
            bail!("{name} at {addr} reached {v}, not {target}, before the deadline");
        }
        tokio::time::sleep(every).await;
    }
}

/// Result of a rate run.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// `mail` or `submit`.
    pub submission: String,
    /// A's address.
    pub server: String,
    /// Submitting connections.
    pub connections: usize,
    /// Body bytes per message.
    pub size: usize,
    /// Messages A accepted.
    pub ok: u64,
    /// Messages A did not accept.
    pub failures: u64,
    /// First write → last submission reply, seconds.
    pub submit_seconds: f64,
    /// Accepted messages per second at A.
    pub submit_per_sec: f64,
    /// Submission latency at A (write → SUCCESS).
    pub submit_latency: Latency,
    /// First write → A counted B's SUCCESS for every accepted message, seconds.
    pub e2e_seconds: f64,
    /// Messages per second end to end.
    pub e2e_per_sec: f64,
    /// Last submission reply → everything at B, seconds (the queue's tail).
    pub tail_seconds: f64,
    /// B's stored-message counter delta (when B's metrics were given).
    pub b_stored: Option<f64>,
    /// A's and B's CPU seconds, and this tool's, over the whole run.
    pub cpu_s: CpuSeconds,
    /// A's VmRSS at the end, bytes.
    pub a_rss_after: Option<u64>,
    /// What changed in A's /metrics (relay counters, fsyncs).
    pub a_metrics_delta: BTreeMap<String, f64>,
    /// Load average at the end.
    pub load_avg: Option<[f64; 3]>,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// CPU seconds of the three processes over a run.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CpuSeconds {
    /// Server A (when its pid was given).
    pub a: Option<f64>,
    /// Server B (when its pid was given).
    pub b: Option<f64>,
    /// This tool.
    pub client: f64,
}

struct CpuMark(Option<f64>, Option<f64>, f64);

impl CpuMark {
    fn now(cfg: &RelayConfig) -> Self {
        let cpu = |p: Option<u32>| p.and_then(|p| sys::process_cpu_seconds(p).ok());
        CpuMark(cpu(cfg.a.pid), cpu(cfg.b.pid), sys::own_cpu_seconds())
    }

    fn since(&self, cfg: &RelayConfig) -> CpuSeconds {
        let now = CpuMark::now(cfg);
        let d = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        CpuSeconds {
            a: d(self.0, now.0),
            b: d(self.1, now.1),
            client: now.2 - self.2,
        }
    }
}

/// The rate run: submit (count or duration), then wait until B has everything.
pub async fn rate(
    cfg: &RelayConfig,
    count: Option<u64>,
    seconds: Option<Duration>,
) -> Result<RateReport> {
    let a_m = cfg.a_metrics()?;
    let a_before = crate::metrics::fetch(a_m).await.context("A's metrics")?;
    let b_before = match cfg.b.metrics {
        Some(b) => Some(read_sample(b, B_STORED).await.context("B's metrics")?),
        None => None,
    };
    let cpu = CpuMark::now(cfg);
    let (sub, start, submitted) = submit_all(cfg, count, seconds).await?;
    let deadline = Instant::now() + cfg.complete_timeout;
    let poll = Duration::from_millis(10);
    let target = sample(&a_before, A_DELIVERED) + sub.ok as f64;
    // B stores each message before it answers SUCCESS, and A counts only a verified
    // SUCCESS: A's counter reaching the total is the moment B has everything.
    let (done, _) = wait_for(a_m, A_DELIVERED, target, poll, deadline).await?;
    let mut b_stored = None;
    if let (Some(b), Some(before)) = (cfg.b.metrics, b_before) {
        let (_, v) = wait_for(b, B_STORED, before + sub.ok as f64, poll, deadline).await?;
        b_stored = Some(v - before);
    }
    let cpu_s = cpu.since(cfg);
    let a_after = crate::metrics::fetch(a_m).await.context("A's metrics")?;
    let submit_seconds = (submitted - start).as_secs_f64();
    let e2e_seconds = (done - start).as_secs_f64();
    Ok(RateReport {
        submission: cfg.how.name().into(),
        server: cfg.server.to_string(),
        connections: cfg.connections,
        size: cfg.size,
        ok: sub.ok,
        failures: sub.failures,
        submit_seconds,
        submit_per_sec: sub.ok as f64 / submit_seconds,
        submit_latency: Latency::of(&sub.hist),
        e2e_seconds,
        e2e_per_sec: sub.ok as f64 / e2e_seconds,
        tail_seconds: (done - submitted).as_secs_f64().max(0.0),
        b_stored,
        cpu_s,
        a_rss_after: cfg.a.pid.and_then(|p| sys::vm_rss(p).ok()),
        a_metrics_delta: crate::metrics::delta(&a_before, &a_after)
            .into_iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .collect(),
        load_avg: sys::load_average(),
        errors: sub.errors,
    })
}
