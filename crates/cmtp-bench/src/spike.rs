//! `spike`: a burst the server must hold, then nothing. Reads the server's memory (VmRSS
//! and VmHWM of /proc/PID/status) at the start, at the peak, and once the load has ended
//! and RSS has settled, to show whether memory goes back to the operating system.
//!
//! Two patterns:
//! - `stalled`: each connection sends MAIL announcing `announce` body bytes, then only
//!   `send` of them, and stalls until every connection has done so; then all close.
//! - `rounds`: `rounds` times, open every connection (greeting + OHAI), then close them.
//!
//! Everything is bounded: the connection count, the rounds, each I/O's timeout and the
//! settle deadline. "Settled" is a condition polled with a deadline: RSS moved by at most
//! 1 MiB (or 1 %) over the last `window`, and, when the server's /metrics is given, the
//! server has read every byte sent (stalled) or counts no more open connections than
//! before (after closing).

use crate::sys::{self, FillRng, RssSampler};
use crate::wire::{self, Conn, MailHeader};
use anyhow::{Context, Result, bail};
use cmtp_proto::Command;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the connections of a spike do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// MAIL announcing `announce` body bytes, then only `send` of them; held, then closed.
    Stalled {
        /// Body length the envelope announces.
        announce: u64,
        /// Body bytes actually sent (less than `announce`).
        send: u64,
    },
    /// Open every connection (greeting + OHAI), close them all; `rounds` times.
    Rounds {
        /// How many times.
        rounds: u32,
    },
}

/// `spike` options.
#[derive(Debug, Clone)]
pub struct SpikeConfig {
    /// Server address (loopback unless the caller allowed otherwise).
    pub server: SocketAddr,
    /// The server's pid, whose memory is read from /proc.
    pub pid: u32,
    /// The server's metrics address: lets "settled" also wait for the server's counters.
    pub metrics: Option<SocketAddr>,
    /// Connections per spike (per round for `rounds`).
    pub connections: usize,
    /// What they do.
    pub pattern: Pattern,
    /// Connections being opened at once (so the listen backlog never overflows).
    pub parallel: usize,
    /// Longest wait for any one connect, read or write.
    pub timeout: Duration,
    /// Longest wait for the server's memory to settle (while held, and after the end).
    pub settle: Duration,
    /// RSS must stay within 1 MiB (or 1 %) for this long to count as settled.
    pub window: Duration,
}

/// Result of `spike`. Memory figures are bytes.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeReport {
    /// `stalled` or `rounds`.
    pub pattern: String,
    /// Server address.
    pub server: String,
    /// Connections asked for (per round).
    pub connections: usize,
    /// Rounds (1 for `stalled`).
    pub rounds: u32,
    /// Announced body length (`stalled`).
    pub announce: Option<u64>,
    /// Body bytes sent per connection (`stalled`).
    pub send: Option<u64>,
    /// Connections that got through their part, per round.
    pub opened: Vec<usize>,
    /// Server VmRSS before the load.
    pub rss_start: u64,
    /// Server VmHWM before the load.
    pub hwm_start: u64,
    /// Highest server VmRSS seen during the load (sampled every 10 ms).
    pub rss_peak: u64,
    /// Server VmHWM after the load: the kernel's high-water mark since the server started
    /// (updated lazily, so it can lag a peak that `rss_peak` sampled).
    pub hwm_peak: u64,
    /// Server VmRSS with the connections held, once settled (`stalled`), or with the last
    /// round's connections open (`rounds`).
    pub rss_loaded: u64,
    /// Server VmRSS once the load had ended and RSS settled (or at the deadline).
    pub rss_after: u64,
    /// Whether RSS settled before the deadline (if not, `rss_after` is the last sample).
    pub settled: bool,
    /// Seconds from closing the last connection to `rss_after`.
    pub settle_seconds: f64,
    /// Seconds from the first connect to the last close.
    pub load_seconds: f64,
    /// Load average at the end (1, 5, 15 min).
    pub load_avg: Option<[f64; 3]>,
    /// The first few distinct errors.
    pub errors: Vec<String>,
}

/// A condition on the server's /metrics that must hold before RSS can count as settled.
#[derive(Debug, Clone, Copy)]
enum Counter {
    /// `cmtpd_bytes_in_total` at least this.
    BytesInAtLeast(f64),
    /// `cmtpd_connections_open` at most this.
    OpenAtMost(f64),
}

const BYTES_IN: &str = "cmtpd_bytes_in_total";
const OPEN: &str = "cmtpd_connections_open";

/// How often RSS (and /metrics) is polled while settling.
const POLL: Duration = Duration::from_millis(50);

async fn counter_holds(metrics: Option<SocketAddr>, c: Option<Counter>) -> bool {
    let (Some(addr), Some(c)) = (metrics, c) else {
        return true;
    };
    let Ok(m) = crate::metrics::fetch(addr).await else {
        return false;
    };
    match c {
        Counter::BytesInAtLeast(v) => m.get(BYTES_IN).is_some_and(|&x| x >= v),
        Counter::OpenAtMost(v) => m.get(OPEN).is_some_and(|&x| x <= v),
    }
}

/// What [`settle`] saw.
struct Settled {
    rss: u64,
    settled: bool,
    seconds: f64,
}

/// Polls the server's RSS until it moved by at most max(1 MiB, 1 %) over the last
/// `window` (counted from when `counter` holds), or `max_wait` passes.
async fn settle(
    pid: u32,
    metrics: Option<SocketAddr>,
    counter: Option<Counter>,
    window: Duration,
    max_wait: Duration,
) -> Result<Settled> {
    let start = Instant::now();
    let deadline = start + max_wait;
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut counter_ok = false;
    loop {
        let now = Instant::now();
        let (rss, _) = sys::vm_rss_hwm(pid).with_context(|| format!("memory of pid {pid}"))?;
        if !counter_ok {
            counter_ok = counter_holds(metrics, counter).await;
        }
        if counter_ok {
            samples.push((now, rss));
            samples.retain(|(t, _)| now.duration_since(*t) <= window);
            let first = samples[0].0;
            let covered = now.duration_since(first) + POLL >= window;
            let (lo, hi) = samples
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &(_, r)| (lo.min(r), hi.max(r)));
            let tolerance = (1u64 << 20).max(hi / 100);
            // A window that starts with the condition: older samples were dropped above,
            // so `covered` means RSS stayed in range for the whole window.
            if covered && hi - lo <= tolerance {
                return Ok(Settled {
                    rss,
                    settled: true,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
        }
        if now >= deadline {
            return Ok(Settled {
                rss,
                settled: false,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        // Polling a condition with a deadline, not synchronisation.
        tokio::time::sleep(POLL).await;
    }
}

/// Opens `n` connections, at most `parallel` at a time, each running `setup` after the
/// greeting; returns the sockets of those that succeeded and the first errors.
async fn open_all<F, Fut>(
    n: usize,
    parallel: usize,
    errors: &mut Vec<String>,
    setup: F,
) -> Result<Vec<cmtp_client::tls::Stream>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<cmtp_client::tls::Stream>> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut launched = 0;
    while launched < n || !set.is_empty() {
        while launched < n && set.len() < parallel.max(1) {
            set.spawn(setup());
            launched += 1;
        }
        if let Some(r) = set.join_next().await {
            match r.context("connection task")? {
                Ok(s) => out.push(s),
                Err(e) => note(errors, e),
            }
        }
    }
    Ok(out)
}

fn note(errors: &mut Vec<String>, e: anyhow::Error) {
    let s = format!("{e:#}");
    if errors.len() < 10 && !errors.contains(&s) {
        errors.push(s);
    }
}

async fn open_counter(metrics: Option<SocketAddr>) -> Option<f64> {
    let m = crate::metrics::fetch(metrics?).await.ok()?;
    m.get(OPEN).copied()
}

/// Runs one spike and reports the server's memory before, at the peak, and after.
pub async fn spike(cfg: &SpikeConfig) -> Result<SpikeReport> {
    if cfg.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let nofile = sys::raise_nofile_limit().context("raise RLIMIT_NOFILE")?;
    if (cfg.connections as u64) + 64 > nofile {
        bail!(
            "{} connections need more than RLIMIT_NOFILE {nofile} descriptors",
            cfg.connections
        );
    }
    let pid = cfg.pid;
    let (rss_start, hwm_start) =
        sys::vm_rss_hwm(pid).with_context(|| format!("memory of pid {pid}"))?;
    let open_before = open_counter(cfg.metrics).await;
    let closed = open_before.map(Counter::OpenAtMost);
    let mut errors = Vec::new();
    let mut opened = Vec::new();
    let sampler = RssSampler::start(pid, Duration::from_millis(10));
    let load_start = Instant::now();
    let (addr, timeout) = (cfg.server, cfg.timeout);
    let (rounds, rss_loaded) = match cfg.pattern {
        Pattern::Stalled { announce, send } => {
            if send >= announce {
                bail!(
                    "--send ({send}) must be less than --announce ({announce}): the message must stay incomplete"
                );
            }
            let mut msg = Vec::new();
            wire::encode_mail_head(
                &MailHeader {
                    version: 1,
                    body_length: announce,
                    dest_account: String::new(),
                    dest_domain: String::new(),
                    src_account: "cmtp-bench".into(),
                    src_domain: "bench.invalid".into(),
                },
                &mut msg,
            )?;
            let head = msg.len();
            msg.resize(head + usize::try_from(send).context("--send")?, 0);
            FillRng::new(7).fill(&mut msg[head..]);
            let msg: Arc<[u8]> = msg.into();
            let per_conn = (Command::Ohai.to_bytes().len() + msg.len()) as f64;
            let bytes_before = match cfg.metrics {
                Some(m) => crate::metrics::fetch(m)
                    .await
                    .ok()
                    .and_then(|m| m.get(BYTES_IN).copied()),
                None => None,
            };
            let held = open_all(cfg.connections, cfg.parallel, &mut errors, || {
                let msg = msg.clone();
                async move {
                    let mut c = Conn::connect(addr, timeout).await?;
                    c.ohai().await?;
                    c.write_all(&msg).await?;
                    Ok(c.into_stream())
                }
            })
            .await?;
            opened.push(held.len());
            // Held until the server has read every byte and its RSS stopped moving.
            let all_read =
                bytes_before.map(|b| Counter::BytesInAtLeast(b + per_conn * held.len() as f64));
            let s = settle(pid, cfg.metrics, all_read, cfg.window, cfg.settle).await?;
            drop(held);
            (1, s.rss)
        }
        Pattern::Rounds { rounds } => {
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let mut loaded = 0;
            for r in 0..rounds {
                let conns = open_all(cfg.connections, cfg.parallel, &mut errors, || async move {
                    let mut c = Conn::connect(addr, timeout).await?;
                    c.ohai().await?;
                    Ok(c.into_stream())
                })
                .await?;
                opened.push(conns.len());
                loaded = sys::vm_rss_hwm(pid)?.0;
                drop(conns);
                if r + 1 < rounds {
                    // The next round starts once the server has let go of this one (the
                    // connection limits count open connections), as far as /metrics says.
                    let s = settle(pid, cfg.metrics, closed, Duration::ZERO, cfg.settle).await?;
                    if !s.settled {
                        note(
                            &mut errors,
                            anyhow::anyhow!(
                                "round {}: connections still open after {:?}",
                                r + 1,
                                cfg.settle
                            ),
                        );
                    }
                }
            }
            (rounds, loaded)
        }
    };
    let load_seconds = load_start.elapsed().as_secs_f64();
    let peak = sampler.finish().peak;
    let (_, hwm_peak) = sys::vm_rss_hwm(pid)?;
    let after = settle(pid, cfg.metrics, closed, cfg.window, cfg.settle).await?;
    Ok(SpikeReport {
        pattern: match cfg.pattern {
            Pattern::Stalled { .. } => "stalled".into(),
            Pattern::Rounds { .. } => "rounds".into(),
        },
        server: cfg.server.to_string(),
        connections: cfg.connections,
        rounds,
        announce: match cfg.pattern {
            Pattern::Stalled { announce, .. } => Some(announce),
            Pattern::Rounds { .. } => None,
        },
        send: match cfg.pattern {
            Pattern::Stalled { send, .. } => Some(send),
            Pattern::Rounds { .. } => None,
        },
        opened,
        rss_start,
        hwm_start,
        rss_peak: peak.max(rss_loaded),
        hwm_peak,
        rss_loaded,
        rss_after: after.rss,
        settled: after.settled,
        settle_seconds: after.seconds,
        load_seconds,
        load_avg: sys::load_average(),
        errors,
    })
}
