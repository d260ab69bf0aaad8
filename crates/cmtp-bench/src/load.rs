//! The load modes against a running server: `mail`, `keyrequest`, `idle`, `big`.
//! Every loop is bounded: by a count, a duration, or a fixed size.

use crate::hist::Histogram;
use crate::sys::{self, FillRng, RssSampler};
use crate::wire::{self, Conn, KeyReply, MailHeader, MailReply};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// How a load run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many operations in total (all connections together).
    Count(u64),
    /// After this much wall time; operations started before the end complete.
    Duration(Duration),
}

/// Shared budget of operations: a counter or a deadline set when all connections
/// are ready.
struct Budget {
    remaining: Option<AtomicI64>,
    duration: Option<Duration>,
    deadline: OnceLock<Instant>,
}

impl Budget {
    fn new(stop: Stop) -> Self {
        match stop {
            Stop::Count(n) => Budget {
                remaining: Some(AtomicI64::new(n.min(i64::MAX as u64) as i64)),
                duration: None,
                deadline: OnceLock::new(),
            },
            Stop::Duration(d) => Budget {
                remaining: None,
                duration: Some(d),
                deadline: OnceLock::new(),
            },
        }
    }

    fn start(&self) {
        if let Some(d) = self.duration {
            let _ = self.deadline.set(Instant::now() + d);
        }
    }

    /// Claims up to `n` operations; 0 means the run is over.
    fn claim(&self, n: u64) -> u64 {
        match &self.remaining {
            Some(r) => {
                let before = r.fetch_sub(n as i64, Ordering::Relaxed);
                before.clamp(0, n as i64) as u64
            }
            None => match self.deadline.get() {
                Some(d) if Instant::now() < *d => n,
                _ => 0,
            },
        }
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// The quantiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            p50_ms: ms(h.quantile(0.5)),
            p90_ms: ms(h.quantile(0.9)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e6,
        }
    }
}

/// The server-side figures a run can read when given the server's pid or metrics.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerSide {
    /// Server CPU seconds (user + system) during the timed part.
    pub cpu_s: Option<f64>,
    /// Server CPU per successful operation, microseconds.
    pub cpu_us_per_op: Option<f64>,
    /// Server VmRSS before the timed part, bytes.
    pub rss_before: Option<u64>,
    /// Server VmRSS after the timed part, bytes.
    pub rss_after: Option<u64>,
    /// Metrics samples that changed during the run (after − before).
    pub metrics_delta: Option<BTreeMap<String, f64>>,
}

/// Result of `mail` or `keyrequest`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `mail` or `keyrequest`.
    pub mode: String,
    /// Server address.
    pub server: String,
    /// Connections used.
    pub connections: usize,
    /// Body size per message (mail).
    pub size: Option<u64>,
    /// Requests written before reading their replies, per connection (keyrequest).
    pub window: Option<usize>,
    /// Operations that succeeded (SUCCESS for MAIL, a key for KEYREQUEST).
    pub ok: u64,
    /// Operations that failed (FAILURE, DELIVERYFAILURE, I/O error).
    pub failures: u64,
    /// Wall time of the timed part (after every connection said OHAI).
    pub seconds: f64,
    /// Successful operations per second.
    pub per_sec: f64,
    /// Body megabytes (10^6) per second (mail).
    pub mb_per_sec: f64,
    /// Per-operation latency.
    pub latency: Latency,
    /// This tool's CPU seconds during the timed part.
    pub client_cpu_s: f64,
    /// Server-side figures.
    pub server_side: ServerSide,
    /// Load average at the end (1, 5, 15 min).
    pub load_avg: Option<[f64; 3]>,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// Options shared by the load modes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server address (loopback unless the caller allowed otherwise).
    pub server: SocketAddr,
    /// Server pid, for RSS and CPU from /proc.
    pub server_pid: Option<u32>,
    /// Server metrics address, for deltas of /metrics.
    pub metrics: Option<SocketAddr>,
    /// Longest wait for any one read or write to make progress.
    pub timeout: Duration,
    /// Upgrade every connection with TLSSTART before the load (docs/protocol.md D7).
    pub tls: bool,
}

/// `mail` options.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// Where and what to read on the server.
    pub target: Target,
    /// Concurrent connections, each one message at a time.
    pub connections: usize,
    /// Body bytes per message.
    pub size: u64,
    /// When to stop.
    pub stop: Stop,
    /// Destination account ("" = the server's postmaster mailbox).
    pub to: String,
    /// Destination domain ("" = the server's own domain).
    pub domain: String,
}

/// `keyrequest` options.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Where and what to read on the server.
    pub target: Target,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests written per window before reading the replies.
    pub window: usize,
    /// When to stop.
    pub stop: Stop,
    /// Account whose key to ask for ("" = the server's key).
    pub user: String,
}

/// Per-connection tallies.
#[derive(Default)]
struct Tally {
    hist: Histogram,
    ok: u64,
    failures: u64,
    errors: Vec<String>,
}

impl Tally {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.failures += 1;
        let s = format!("{e:#}");
        if self.errors.len() < 5 && !self.errors.contains(&s) {
            self.errors.push(s);
        }
    }
}

/// Stops a connection after this many failures in a row (a refusing server would
/// otherwise be hammered until the budget ends).
const MAX_CONSECUTIVE_FAILURES: u32 = 50;

/// After a failed write, the server may already have answered (FAILURE for a message
/// over its size limit, then close): report that answer rather than the broken pipe.
async fn early_reply(c: &mut Conn, write_error: anyhow::Error) -> Result<MailReply> {
    match c.read_with(wire::decode_mail_reply).await {
        Ok(r) => Ok(r),
        Err(_) => Err(write_error),
    }
}

async fn ready(addr: SocketAddr, timeout: Duration, tls: bool) -> Result<Conn> {
    let mut c = Conn::connect(addr, timeout).await?;
    c.ohai().await?;
    if tls {
        c = c.start_tls().await?;
    }
    Ok(c)
}

struct Snapshot {
    cpu: Option<f64>,
    rss: Option<u64>,
    metrics: Option<BTreeMap<String, f64>>,
    own_cpu: f64,
}

async fn snapshot(t: &Target) -> Snapshot {
    Snapshot {
        cpu: t.server_pid.and_then(|p| sys::process_cpu_seconds(p).ok()),
        rss: t.server_pid.and_then(|p| sys::vm_rss(p).ok()),
        metrics: match t.metrics {
            Some(a) => crate::metrics::fetch(a).await.ok(),
            None => None,
        },
        own_cpu: sys::own_cpu_seconds(),
    }
}

fn server_side(before: &Snapshot, after: &Snapshot, ok: u64) -> ServerSide {
    let cpu_s = match (before.cpu, after.cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    ServerSide {
        cpu_s,
        cpu_us_per_op: cpu_s.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64),
        rss_before: before.rss,
        rss_after: after.rss,
        metrics_delta: match (&before.metrics, &after.metrics) {
            (Some(a), Some(b)) => Some(crate::metrics::delta(a, b)),
            _ => None,
        },
    }
}

/// Runs `n` workers that each connect, wait for all to be ready, then loop; returns
/// the merged tallies and the timed wall time.
async fn run_workers<F, Fut>(
    n: usize,
    stop: Stop,
    target: &Target,
    work: F,
) -> Result<(Tally, f64, Snapshot, Snapshot)>
where
    F: Fn(usize, Arc<Budget>, Arc<Barrier>, Arc<Barrier>) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let budget = Arc::new(Budget::new(stop));
    let connected = Arc::new(Barrier::new(n + 1));
    let go = Arc::new(Barrier::new(n + 1));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        set.spawn(work(i, budget.clone(), connected.clone(), go.clone()));
    }
    connected.wait().await;
    let before = snapshot(target).await;
    let start = Instant::now();
    budget.start();
    go.wait().await;
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        let t = t.context("worker panicked")?;
        all.hist.merge(&t.hist);
        all.ok += t.ok;
        all.failures += t.failures;
        for e in t.errors {
            if all.errors.len() < 10 && !all.errors.contains(&e) {
                all.errors.push(e);
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = snapshot(target).await;
    Ok((all, seconds, before, after))
}

/// `mail`: each connection sends one MAIL and waits for its reply before the next.
pub async fn mail(cfg: &MailConfig) -> Result<LoadReport> {
    if cfg.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let header = MailHeader {
        version: 1,
        body_length: cfg.size,
        dest_account: cfg.to.clone(),
        dest_domain: cfg.domain.clone(),
        src_account: "cmtp-bench".into(),
        src_domain: "bench.invalid".into(),
    };
    let mut head = Vec::new();
    wire::encode_mail_head(&header, &mut head)?;
    let size = usize::try_from(cfg.size).context("size")?;
    // One message is kept in memory per connection: bound the total.
    if (size as u128) * (cfg.connections as u128) > 1 << 30 {
        bail!("connections × size above 1 GiB (one message is held per connection): use `big`");
    }
    let addr = cfg.target.server;
    let timeout = cfg.target.timeout;
    let tls = cfg.target.tls;
    let (t, seconds, before, after) = run_workers(
        cfg.connections,
        cfg.stop,
        &cfg.target,
        |i, budget, connected, go| {
            let head = head.clone();
            async move {
                let mut tally = Tally::default();
                let mut msg = Vec::with_capacity(head.len() + size);
                msg.extend_from_slice(&head);
                let body_at = msg.len();
                msg.resize(body_at + size, 0);
                FillRng::new(i as u64 + 1).fill(&mut msg[body_at..]);
                let conn = ready(addr, timeout, tls).await;
                connected.wait().await;
                go.wait().await;
                let mut conn = match conn {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tally.error(e);
                        None
                    }
                };
                let mut seq: u64 = 0;
                let mut consecutive = 0;
                while conn.is_some() && budget.claim(1) == 1 {
                    let c = conn.as_mut().expect("checked");
                    // Every body differs, so no layer can deduplicate them.
                    seq += 1;
                    let n = size.min(8);
                    msg[body_at..body_at + n].copy_from_slice(&seq.to_le_bytes()[..n]);
                    let t0 = Instant::now();
                    let r = match c.write_all(&msg).await {
                        Ok(()) => c.read_with(wire::decode_mail_reply).await,
                        Err(e) => early_reply(c, e).await,
                    };
                    let reconnect = match r {
                        Ok(MailReply::Success) => {
                            tally.hist.record(t0.elapsed().as_nanos() as u64);
                            tally.ok += 1;
                            consecutive = 0;
                            false
                        }
                        Ok(MailReply::Refused(t)) => {
                            tally.error(format!("MAIL refused: {t}"));
                            consecutive += 1;
                            false
                        }
                        Ok(MailReply::Failure) => {
                            tally.error("MAIL: FAILURE");
                            consecutive += 1;
                            true
                        }
                        Err(e) => {
                            tally.error(e);
                            consecutive += 1;
                            true
                        }
                    };
                    if consecutive >= MAX_CONSECUTIVE_FAILURES {
                        break;
                    }
                    if reconnect {
                        conn = match ready(addr, timeout, tls).await {
                            Ok(c) => Some(c),
                            Err(e) => {
                                tally.error(e);
                                None
                            }
                        };
                    }
                }
                tally
            }
        },
    )
    .await?;
    Ok(LoadReport {
        mode: "mail".into(),
        server: addr.to_string(),
        connections: cfg.connections,
        size: Some(cfg.size),
        window: None,
        ok: t.ok,
        failures: t.failures,
        seconds,
        per_sec: t.ok as f64 / seconds,
        mb_per_sec: t.ok as f64 * cfg.size as f64 / seconds / 1e6,
        latency: Latency::of(&t.hist),
        client_cpu_s: after.own_cpu - before.own_cpu,
        server_side: server_side(&before, &after, t.ok),
        load_avg: sys::load_average(),
        errors: t.errors,
    })
}

/// `keyrequest`: each connection writes a window of requests, then reads their
/// replies; latency is from the window's write to each reply.
pub async fn keyrequest(cfg: &KeyConfig) -> Result<LoadReport> {
    if cfg.connections == 0 || cfg.window == 0 {
        bail!("--connections and --window must be at least 1");
    }
    let one = wire::keyrequest_bytes(&cfg.user, "");
    let window = cfg.window;
    let addr = cfg.target.server;
    let timeout = cfg.target.timeout;
    let tls = cfg.target.tls;
    let (t, seconds, before, after) = run_workers(
        cfg.connections,
        cfg.stop,
        &cfg.target,
        |_, budget, connected, go| {
            let batch: Vec<u8> = one.repeat(window);
            let one_len = one.len();
            async move {
                let mut tally = Tally::default();
                let conn = ready(addr, timeout, tls).await;
                connected.wait().await;
                go.wait().await;
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tally.error(e);
                        return tally;
                    }
                };
                loop {
                    let k = budget.claim(window as u64) as usize;
                    if k == 0 {
                        break;
                    }
                    let t0 = Instant::now();
                    if let Err(e) = conn.write_all(&batch[..k * one_len]).await {
                        tally.error(e);
                        break;
                    }
                    let mut broken = false;
                    for _ in 0..k {
                        match conn.read_with(wire::decode_key_reply).await {
                            Ok(KeyReply::Key) => {
                                tally.hist.record(t0.elapsed().as_nanos() as u64);
                                tally.ok += 1;
                            }
                            Ok(KeyReply::Text(t)) => tally.error(format!("KEYREQUEST: {t}")),
                            Ok(KeyReply::General(t)) => {
                                tally.error(format!("KEYREQUEST: {t}"));
                                broken = true;
                                break;
                            }
                            Err(e) => {
                                tally.error(e);
                                broken = true;
                                break;
                            }
                        }
                    }
                    if broken {
                        break;
                    }
                }
                tally
            }
        },
    )
    .await?;
    Ok(LoadReport {
        mode: "keyrequest".into(),
        server: addr.to_string(),
        connections: cfg.connections,
        size: None,
        window: Some(window),
        ok: t.ok,
        failures: t.failures,
        seconds,
        per_sec: t.ok as f64 / seconds,
        mb_per_sec: 0.0,
        latency: Latency::of(&t.hist),
        client_cpu_s: after.own_cpu - before.own_cpu,
        server_side: server_side(&before, &after, t.ok),
        load_avg: sys::load_average(),
        errors: t.errors,
    })
}

/// Result of `idle`.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Server address.
    pub server: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections that completed greeting + OHAI and were held.
    pub opened: usize,
    /// Seconds to open them all.
    pub open_seconds: f64,
    /// Server VmRSS before opening, bytes.
    pub rss_before: u64,
    /// Server VmRSS with every connection open (the highest of a few samples), bytes.
    pub rss_idle: u64,
    /// Growth per open connection, bytes.
    pub per_connection: f64,
    /// Server VmRSS shortly after closing them, bytes.
    pub rss_after_close: u64,
    /// Our RLIMIT_NOFILE after raising it.
    pub nofile_limit: u64,
    /// Load average at the end.
    pub load_avg: Option<[f64; 3]>,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// `idle`: opens `n` connections (greeting + OHAI each, and with `tls` TLSSTART, the
/// handshake, greeting and OHAI again), reads the server's RSS, closes. `n /
/// open_seconds` is the rate of connection setups (handshakes per second with `tls`).
pub async fn idle(
    server: SocketAddr,
    n: usize,
    pid: u32,
    parallel: usize,
    timeout: Duration,
    tls: bool,
) -> Result<IdleReport> {
    let nofile_limit = sys::raise_nofile_limit().context("raise RLIMIT_NOFILE")?;
    if (n as u64) + 64 > nofile_limit {
        bail!("{n} connections need more than RLIMIT_NOFILE {nofile_limit} descriptors");
    }
    let rss_before = sys::vm_rss(pid).with_context(|| format!("VmRSS of pid {pid}"))?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut errors: Vec<String> = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let mut launched = 0;
    // At most `parallel` handshakes in flight, so the listen backlog never overflows.
    while launched < n || !set.is_empty() {
        while launched < n && set.len() < parallel.max(1) {
            set.spawn(ready(server, timeout, tls));
            launched += 1;
        }
        if let Some(r) = set.join_next().await {
            match r.context("connect task")? {
                Ok(c) => conns.push(c),
                Err(e) => {
                    let s = format!("{e:#}");
                    if errors.len() < 10 && !errors.contains(&s) {
                        errors.push(s);
                    }
                }
            }
        }
    }
    let open_seconds = start.elapsed().as_secs_f64();
    // Several samples a little apart: the server may still be settling its buffers.
    let mut rss_idle = 0;
    for _ in 0..10 {
        rss_idle = rss_idle.max(sys::vm_rss(pid)?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = conns.len();
    drop(conns);
    let mut rss_after_close = sys::vm_rss(pid)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_after_close = sys::vm_rss(pid)?;
    }
    Ok(IdleReport {
        server: server.to_string(),
        requested: n,
        opened,
        open_seconds,
        rss_before,
        rss_idle,
        per_connection: if opened > 0 {
            (rss_idle as f64 - rss_before as f64) / opened as f64
        } else {
            0.0
        },
        rss_after_close,
        nofile_limit,
        load_avg: sys::load_average(),
        errors,
    })
}

/// Result of `big`.
#[derive(Debug, Clone, Serialize)]
pub struct BigReport {
    /// Server address.
    pub server: String,
    /// Body bytes sent.
    pub size: u64,
    /// The server's answer.
    pub reply: String,
    /// First byte written → reply read, seconds.
    pub seconds: f64,
    /// Last byte written → reply read (storage finishing), ms.
    pub tail_ms: f64,
    /// Body MB/s (10^6).
    pub mb_per_sec: f64,
    /// Server VmRSS before, bytes.
    pub rss_before: u64,
    /// Highest server VmRSS while sending (sampled every 10 ms), bytes.
    pub rss_peak: u64,
    /// Server VmRSS after the reply, bytes.
    pub rss_after: u64,
    /// rss_peak − rss_before, bytes.
    pub rss_growth: i64,
    /// RSS samples taken.
    pub samples: u64,
    /// Server CPU seconds during the transfer.
    pub server_cpu_s: Option<f64>,
    /// This tool's CPU seconds during the transfer.
    pub client_cpu_s: f64,
    /// Load average at the end.
    pub load_avg: Option<[f64; 3]>,
}

/// `big`: one message of `size` body bytes, generated chunk by chunk (constant memory).
pub async fn big(cfg: &MailConfig, pid: u32) -> Result<BigReport> {
    let addr = cfg.target.server;
    let mut conn = ready(addr, cfg.target.timeout, cfg.target.tls).await?;
    let header = MailHeader {
        version: 1,
        body_length: cfg.size,
        dest_account: cfg.to.clone(),
        dest_domain: cfg.domain.clone(),
        src_account: "cmtp-bench".into(),
        src_domain: "bench.invalid".into(),
    };
    let mut head = Vec::new();
    wire::encode_mail_head(&header, &mut head)?;
    let mut chunk = vec![0u8; 256 * 1024];
    FillRng::new(42).fill(&mut chunk);
    let rss_before = sys::vm_rss(pid).with_context(|| format!("VmRSS of pid {pid}"))?;
    let cpu_before = sys::process_cpu_seconds(pid).ok();
    let own_before = sys::own_cpu_seconds();
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let start = Instant::now();
    let sent = async {
        conn.write_all(&head).await?;
        let mut left = cfg.size;
        let mut seq: u64 = 0;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            seq += 1;
            chunk[..8].copy_from_slice(&seq.to_le_bytes());
            conn.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        Ok::<_, anyhow::Error>(Instant::now())
    }
    .await;
    let last_byte = sent.as_ref().ok().copied();
    let reply = match sent {
        Ok(_) => conn.read_with(wire::decode_mail_reply).await,
        Err(e) => early_reply(&mut conn, e).await,
    };
    let end = Instant::now();
    let samples = sampler.finish();
    let reply = match reply {
        Ok(MailReply::Success) => "SUCCESS".to_string(),
        Ok(MailReply::Failure) => "FAILURE".to_string(),
        Ok(MailReply::Refused(t)) => t,
        Err(e) => format!("error: {e:#}"),
    };
    let rss_after = sys::vm_rss(pid).unwrap_or(0);
    let seconds = (end - start).as_secs_f64();
    let peak = samples.peak.max(rss_before);
    Ok(BigReport {
        server: addr.to_string(),
        size: cfg.size,
        reply,
        seconds,
        tail_ms: (end - last_byte.unwrap_or(end)).as_secs_f64() * 1e3,
        mb_per_sec: cfg.size as f64 / seconds / 1e6,
        rss_before,
        rss_peak: peak,
        rss_after,
        rss_growth: peak as i64 - rss_before as i64,
        samples: samples.samples,
        server_cpu_s: cpu_before.and_then(|b| sys::process_cpu_seconds(pid).ok().map(|a| a - b)),
        client_cpu_s: sys::own_cpu_seconds() - own_before,
        load_avg: sys::load_average(),
    })
}
