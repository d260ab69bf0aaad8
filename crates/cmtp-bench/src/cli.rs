//! Command line: subcommands, their options, and the human or JSON output.

pub use crate::args::{StopArgs, parse_seconds, parse_size_arg};
use crate::limits::{self, LimitsConfig};
use crate::load::{self, BigReport, IdleReport, KeyConfig, LoadReport, MailConfig, Stop, Target};
use crate::size::format_size;
use crate::spike::{self, Pattern, SpikeConfig, SpikeReport};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Load generator for CMTP servers and probe of this machine's ceilings.
#[derive(Debug, Parser)]
#[command(name = "cmtp-bench", version, about)]
pub struct Cli {
    /// Print one JSON object (for scripts) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Allow a server address that is not loopback.
    #[arg(long, global = true)]
    pub allow_remote: bool,
    /// Client runtime threads (1 leaves the other core to the server on 2 cores).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Seconds any one read, write or connect may go without progress before it fails.
    #[arg(long, global = true, default_value = "60", value_parser = parse_seconds)]
    pub timeout: Duration,
    /// What to measure.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N connections, each sending MAIL and waiting for SUCCESS before the next.
    Mail(MailArgs),
    /// KEYREQUEST throughput, pipelined in windows per connection.
    Keyrequest(KeyArgs),
    /// Open N idle connections (after OHAI) and read the server's RSS.
    Idle(IdleArgs),
    /// One message of a large size, streamed; samples the server's RSS every 10 ms.
    Big(BigArgs),
    /// This machine's ceilings: append/overwrite + fdatasync, sequential write, loopback TCP.
    Limits(LimitsArgs),
    /// A burst (stalled MAILs, or rounds of connections), then nothing: the server's RSS
    /// at the start, at the peak and once the load has ended and RSS has settled.
    Spike(SpikeArgs),
    /// Submit to a relaying server A, measure until server B has stored everything
    /// (rate, `--latency`, or `--drain` for A's memory while its queue drains).
    Relay(crate::relay::args::RelayArgs),
}

/// What the connections of a spike do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpikePattern {
    /// MAIL announcing --announce body bytes, then only --send of them; held, then closed.
    Stalled,
    /// --rounds times: open every connection (greeting + OHAI), then close them all.
    Rounds,
}

/// `spike` options.
#[derive(Debug, Args)]
pub struct SpikeArgs {
    /// Server address (loopback only, unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub server: String,
    /// The server's pid (its VmRSS and VmHWM are read from /proc/PID/status).
    #[arg(long)]
    pub server_pid: u32,
    /// The server's metrics address: "settled" then also waits until the server has read
    /// every byte sent, and until it counts no more open connections than before.
    #[arg(long)]
    pub metrics: Option<String>,
    /// What the connections do.
    #[arg(long, value_enum, default_value_t = SpikePattern::Stalled)]
    pub pattern: SpikePattern,
    /// Connections (per round for `rounds`).
    #[arg(long, short = 'c', default_value_t = 1000)]
    pub connections: usize,
    /// Body length the MAIL envelope announces (`stalled`).
    #[arg(long, default_value = "1M", value_parser = parse_size_arg)]
    pub announce: u64,
    /// Body bytes sent before stalling (`stalled`; less than --announce).
    #[arg(long, default_value = "100k", value_parser = parse_size_arg)]
    pub send: u64,
    /// Rounds (`rounds`).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub parallel: usize,
    /// Longest wait for the server's RSS to settle, while held and after the end.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    pub settle_seconds: Duration,
    /// RSS must stay within 1 MiB (or 1 %) for this long to count as settled.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub window_seconds: Duration,
}

/// Where the server is and what to read from it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Server address (loopback only, unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub server: String,
    /// The server's pid: report its CPU time and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's metrics address: report what changed in /metrics.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Upgrade every connection to TLS (TLSSTART, docs/protocol.md D7) before the load.
    #[arg(long)]
    pub tls: bool,
}

/// How long a keyrequest run lasts: exactly one of a count or a duration.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct KeyStopArgs {
    /// Stop after this many requests in total.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop after this many seconds (windows in flight complete).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<Duration>,
}

/// `mail` options.
#[derive(Debug, Args)]
pub struct MailArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub connections: usize,
    /// Body size per message (k/M/G suffixes, binary).
    #[arg(long, short = 's', default_value = "10k", value_parser = parse_size_arg)]
    pub size: u64,
    #[command(flatten)]
    pub stop: StopArgs,
    /// Destination account (default: empty, the server's postmaster mailbox).
    #[arg(long, default_value = "")]
    pub to: String,
    /// Destination domain (default: empty, the server's own domain).
    #[arg(long, default_value = "")]
    pub domain: String,
}

/// `keyrequest` options.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub connections: usize,
    /// Requests written per window before reading their replies.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    #[command(flatten)]
    pub stop: KeyStopArgs,
    /// Account whose key to ask for (default: empty, the server's own key).
    #[arg(long, default_value = "")]
    pub user: String,
}

/// `idle` options.
#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Server address (loopback only, unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub server: String,
    /// Connections to hold open.
    #[arg(long, short = 'c')]
    pub connections: usize,
    /// The server's pid (its RSS is read from /proc/PID/status).
    #[arg(long)]
    pub server_pid: u32,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 128)]
    pub parallel: usize,
    /// Upgrade every connection to TLS (TLSSTART) while opening: `connections /
    /// open_seconds` is then TLS handshakes per second.
    #[arg(long)]
    pub tls: bool,
}

/// `big` options.
#[derive(Debug, Args)]
pub struct BigArgs {
    /// Server address (loopback only, unless --allow-remote).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub server: String,
    /// Body size (k/M/G suffixes, binary).
    #[arg(long, short = 's', default_value = "1G", value_parser = parse_size_arg)]
    pub size: u64,
    /// The server's pid (its RSS is sampled from /proc/PID/status).
    #[arg(long)]
    pub server_pid: u32,
    /// Destination account (default: the postmaster mailbox).
    #[arg(long, default_value = "")]
    pub to: String,
    /// Destination domain (default: the server's own).
    #[arg(long, default_value = "")]
    pub domain: String,
    /// Upgrade the connection to TLS (TLSSTART) before sending.
    #[arg(long)]
    pub tls: bool,
}

/// `limits` options.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Directory for the fdatasync files (use the server's data filesystem).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Bytes per append.
    #[arg(long, default_value = "10k", value_parser = parse_size_arg)]
    pub record_size: u64,
    /// Seconds per fdatasync measurement.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    pub fsync_seconds: Duration,
    /// Seconds per TCP measurement.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub tcp_seconds: Duration,
    /// Thread counts for fdatasync, comma-separated.
    #[arg(long, default_value = "1,4", value_delimiter = ',')]
    pub fsync_threads: Vec<usize>,
    /// Stream counts for loopback TCP, comma-separated.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    pub tcp_streams: Vec<usize>,
    /// Size of the sequential write + fdatasync measurement (0 skips it).
    #[arg(long, default_value = "1G", value_parser = parse_size_arg)]
    pub seq_size: u64,
}

fn target(s: &ServerArgs, allow_remote: bool, timeout: Duration) -> Result<Target> {
    Ok(Target {
        timeout,
        server: crate::resolve_target(&s.server, allow_remote)?,
        server_pid: s.server_pid,
        tls: s.tls,
        metrics: s
            .metrics
            .as_deref()
            .map(|m| crate::resolve_target(m, allow_remote))
            .transpose()
            .context("--metrics")?,
    })
}

fn stop_of(messages: Option<u64>, seconds: Option<Duration>) -> Stop {
    match (messages, seconds) {
        (Some(n), _) => Stop::Count(n),
        (None, Some(d)) => Stop::Duration(d),
        // clap's group makes one of them required; a default keeps this total.
        (None, None) => Stop::Duration(Duration::from_secs(5)),
    }
}

/// Runs the parsed command line, printing the result; the caller owns the runtime.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Mail(a) => {
            let cfg = MailConfig {
                target: target(&a.server, cli.allow_remote, cli.timeout)?,
                connections: a.connections,
                size: a.size,
                stop: stop_of(a.stop.messages, a.stop.seconds),
                to: a.to,
                domain: a.domain,
            };
            let r = load::mail(&cfg).await?;
            print(cli.json, &r, || load_table(&r))
        }
        Command::Keyrequest(a) => {
            let cfg = KeyConfig {
                target: target(&a.server, cli.allow_remote, cli.timeout)?,
                connections: a.connections,
                window: a.window,
                stop: stop_of(a.stop.requests, a.stop.seconds),
                user: a.user,
            };
            let r = load::keyrequest(&cfg).await?;
            print(cli.json, &r, || load_table(&r))
        }
        Command::Idle(a) => {
            let server = crate::resolve_target(&a.server, cli.allow_remote)?;
            let r = load::idle(
                server,
                a.connections,
                a.server_pid,
                a.parallel,
                cli.timeout,
                a.tls,
            )
            .await?;
            print(cli.json, &r, || idle_table(&r))
        }
        Command::Big(a) => {
            let cfg = MailConfig {
                target: Target {
                    server: crate::resolve_target(&a.server, cli.allow_remote)?,
                    server_pid: Some(a.server_pid),
                    metrics: None,
                    timeout: cli.timeout,
                    tls: a.tls,
                },
                connections: 1,
                size: a.size,
                stop: Stop::Count(1),
                to: a.to,
                domain: a.domain,
            };
            let r = load::big(&cfg, a.server_pid).await?;
            print(cli.json, &r, || big_table(&r))
        }
        Command::Spike(a) => {
            let cfg = SpikeConfig {
                server: crate::resolve_target(&a.server, cli.allow_remote)?,
                pid: a.server_pid,
                metrics: a
                    .metrics
                    .as_deref()
                    .map(|m| crate::resolve_target(m, cli.allow_remote))
                    .transpose()
                    .context("--metrics")?,
                connections: a.connections,
                pattern: match a.pattern {
                    SpikePattern::Stalled => Pattern::Stalled {
                        announce: a.announce,
                        send: a.send,
                    },
                    SpikePattern::Rounds => Pattern::Rounds { rounds: a.rounds },
                },
                parallel: a.parallel,
                timeout: cli.timeout,
                settle: a.settle_seconds,
                window: a.window_seconds,
            };
            let r = spike::spike(&cfg).await?;
            print(cli.json, &r, || spike_table(&r))
        }
        Command::Relay(a) => {
            let r = crate::relay::args::run(a, cli.allow_remote, cli.timeout).await?;
            print(cli.json, &r, || crate::relay::args::table(&r))
        }
        Command::Limits(a) => {
            let cfg = LimitsConfig {
                dir: a.dir.unwrap_or_else(std::env::temp_dir),
                record_size: usize::try_from(a.record_size).context("--record-size")?,
                fsync_duration: a.fsync_seconds,
                fsync_threads: a.fsync_threads,
                tcp_duration: a.tcp_seconds,
                tcp_streams: a.tcp_streams,
                seq_size: a.seq_size,
            };
            let r = limits::run(&cfg).await?;
            print(cli.json, &r, || limits_table(&r))
        }
    }
}

fn print<T: serde::Serialize>(json: bool, v: &T, table: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn load_avg(l: Option<[f64; 3]>) -> String {
    l.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
        .unwrap_or_else(|| "?".into())
}

fn load_table(r: &LoadReport) -> String {
    let what = match (r.size, r.window) {
        (Some(s), _) => format!("size {}", format_size(s)),
        (_, Some(w)) => format!("window {w}"),
        _ => String::new(),
    };
    let mut o = format!(
        "{} {} x{} ({what})\n{:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        r.mode,
        r.server,
        r.connections,
        "ops/s",
        "MB/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "ok",
        "failed"
    );
    o += &format!(
        "{:>12.0} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>8}\n",
        r.per_sec,
        r.mb_per_sec,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.ok,
        r.failures
    );
    o += &format!(
        "wall {:.2} s, client CPU {:.2} s",
        r.seconds, r.client_cpu_s
    );
    if let (Some(c), Some(per)) = (r.server_side.cpu_s, r.server_side.cpu_us_per_op) {
        o += &format!(", server CPU {c:.2} s ({per:.1} us/op)");
    }
    if let Some(rss) = r.server_side.rss_after {
        o += &format!(", server RSS {}", mib(rss));
    }
    if let Some(m) = &r.server_side.metrics_delta {
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        let (records, fsyncs) = (
            get("cmtpd_store_records_total"),
            get("cmtpd_store_fsync_seconds_count"),
        );
        if fsyncs > 0.0 {
            o += &format!(", {:.1} records per fsync", records / fsyncs);
        }
    }
    o += &format!(", load {}\n", load_avg(r.load_avg));
    if let Some(m) = &r.server_side.metrics_delta {
        // Histogram buckets are in the JSON; the table keeps counts and sums.
        for (k, v) in m.iter().filter(|(k, _)| !k.contains("_bucket")) {
            o += &format!("  metrics Δ {k} {v}\n");
        }
    }
    for e in &r.errors {
        o += &format!("  error: {e}\n");
    }
    o
}

fn idle_table(r: &IdleReport) -> String {
    let mut o = format!(
        "idle {}: {} of {} connections open in {:.2} s (RLIMIT_NOFILE {})\n\
         server RSS before {}, with connections {}, per connection {:.1} KiB, after close {}, load {}\n",
        r.server,
        r.opened,
        r.requested,
        r.open_seconds,
        r.nofile_limit,
        mib(r.rss_before),
        mib(r.rss_idle),
        r.per_connection / 1024.0,
        mib(r.rss_after_close),
        load_avg(r.load_avg)
    );
    for e in &r.errors {
        o += &format!("  error: {e}\n");
    }
    o
}

fn big_table(r: &BigReport) -> String {
    format!(
        "big {}: {} body → {} in {:.2} s ({:.1} MB/s, last byte → reply {:.1} ms)\n\
         server RSS before {}, peak {}, after {}, growth {} ({} samples); server CPU {}, client CPU {:.2} s, load {}\n",
        r.server,
        format_size(r.size),
        r.reply,
        r.seconds,
        r.mb_per_sec,
        r.tail_ms,
        mib(r.rss_before),
        mib(r.rss_peak),
        mib(r.rss_after),
        mib(r.rss_growth.max(0) as u64),
        r.samples,
        r.server_cpu_s
            .map(|c| format!("{c:.2} s"))
            .unwrap_or_else(|| "?".into()),
        r.client_cpu_s,
        load_avg(r.load_avg)
    )
}

fn spike_table(r: &SpikeReport) -> String {
    let what = match (r.announce, r.send) {
        (Some(a), Some(s)) => format!(
            "MAIL announcing {}, {} sent, held",
            format_size(a),
            format_size(s)
        ),
        _ => format!("{} round(s) of open + OHAI + close", r.rounds),
    };
    let mut o = format!(
        "spike {} {}: {} connection(s) ({what}); opened {:?} in {:.2} s\n",
        r.pattern, r.server, r.connections, r.opened, r.load_seconds
    );
    o += &format!(
        "server RSS start {}, peak {} (VmHWM {}), loaded {}, after {} ({} in {:.1} s), load {}\n",
        mib(r.rss_start),
        mib(r.rss_peak),
        mib(r.hwm_peak),
        mib(r.rss_loaded),
        mib(r.rss_after),
        if r.settled { "settled" } else { "NOT settled" },
        r.settle_seconds,
        load_avg(r.load_avg)
    );
    for e in &r.errors {
        o += &format!("  error: {e}\n");
    }
    o
}

fn limits_table(r: &limits::LimitsReport) -> String {
    let mut o = format!("limits (fdatasync files in {})\n", r.dir);
    o += &format!(
        "{:<34} {:>10} {:>9} {:>8} {:>8}\n",
        "write+fdatasync", "ops/s", "MB/s", "p50 ms", "p99 ms"
    );
    for f in &r.fsync {
        o += &format!(
            "{:<34} {:>10.0} {:>9.1} {:>8.3} {:>8.3}\n",
            format!("{:?} {} B, {} thread(s)", f.mode, f.record_size, f.threads),
            f.ops_per_sec,
            f.mb_per_sec,
            f.p50_ms,
            f.p99_ms
        );
    }
    if let Some(s) = &r.seq {
        o += &format!(
            "sequential write {} then fdatasync: {:.0} MB/s durable ({:.0} MB/s into the page cache, fdatasync {:.2} s)\n",
            format_size(s.bytes),
            s.mb_per_sec,
            s.write_mb_per_sec,
            s.fsync_seconds
        );
    }
    o += &format!("{:<34} {:>10} {:>9}\n", "loopback TCP", "MB/s", "Gbit/s");
    for t in &r.tcp {
        o += &format!(
            "{:<34} {:>10.0} {:>9.2}\n",
            format!("{} stream(s)", t.streams),
            t.mb_per_sec,
            t.gbit_per_sec
        );
    }
    o
}
