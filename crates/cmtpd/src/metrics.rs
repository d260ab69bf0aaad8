//! Server counters (lock-free atomics) and their Prometheus text rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Kinds of commands counted separately (`cmtpd_commands_total{command=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CommandKind {
    /// `OHAI`
    Ohai,
    /// `NOOP`
    Noop,
    /// `KEYREQUEST`
    KeyRequest,
    /// `LOGIN`
    Login,
    /// `MAIL`
    Mail,
    /// `SUBMIT` (MAIL with the sender's signature).
    Submit,
    /// `OBAI`
    Obai,
    /// `HELP`
    Help,
    /// `MBOXLIST`
    MboxList,
    /// `MBOXFETCH`
    MboxFetch,
    /// `MBOXDEL`
    MboxDel,
    /// An SMTP verb.
    Smtp,
    /// A lone NUL.
    Empty,
    /// `OPAQUE1` (D8).
    Opaque1,
    /// `OPAQUE2` (D8).
    Opaque2,
    /// `OPAQUEREG1` (D8).
    OpaqueReg1,
    /// `OPAQUEREG2` (D8).
    OpaqueReg2,
    /// `TLSSTART` (docs/protocol.md D7).
    TlsStart,
}

impl CommandKind {
    const ALL: [CommandKind; 18] = [
        Self::Ohai,
        Self::Noop,
        Self::KeyRequest,
        Self::Login,
        Self::Mail,
        Self::Submit,
        Self::Obai,
        Self::Help,
        Self::MboxList,
        Self::MboxFetch,
        Self::MboxDel,
        Self::Smtp,
        Self::Empty,
        Self::Opaque1,
        Self::Opaque2,
        Self::OpaqueReg1,
        Self::OpaqueReg2,
        Self::TlsStart,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ohai => "OHAI",
            Self::Noop => "NOOP",
            Self::KeyRequest => "KEYREQUEST",
            Self::Login => "LOGIN",
            Self::Mail => "MAIL",
            Self::Submit => "SUBMIT",
            Self::Obai => "OBAI",
            Self::Help => "HELP",
            Self::MboxList => "MBOXLIST",
            Self::MboxFetch => "MBOXFETCH",
            Self::MboxDel => "MBOXDEL",
            Self::Smtp => "SMTP",
            Self::Empty => "EMPTY",
            Self::Opaque1 => "OPAQUE1",
            Self::Opaque2 => "OPAQUE2",
            Self::OpaqueReg1 => "OPAQUEREG1",
            Self::OpaqueReg2 => "OPAQUEREG2",
            Self::TlsStart => "TLSSTART",
        }
    }
}

/// Why a FAILURE (or a refusal) was sent (`cmtpd_failures_total{reason=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum FailureReason {
    /// Unknown command word or malformed framing.
    Framing,
    /// An SMTP client.
    Smtp,
    /// A malformed message after MAIL.
    BadMessage,
    /// A message over the size / attachment / log limits.
    TooLarge,
    /// Per-IP command rate exceeded.
    RateLimited,
    /// Too many connections (total or per IP).
    ConnectionLimit,
    /// Idle timeout.
    IdleTimeout,
    /// Storage or other server-side error.
    Internal,
    /// Mailbox request refused (AUTHFAILURE).
    MboxAuth,
    /// MAIL refused because the recipient mailbox is full.
    OverQuota,
    /// MAIL refused because the recipient mailbox receives faster than its rate limit.
    MailboxRate,
    /// MAIL refused because a sender name breaks the name rule.
    BadSender,
    /// Mail for another domain without a valid signed submission or trusted network.
    RelayDenied,
    /// Mail whose log already has `max_hops` entries (a loop).
    HopLimit,
    /// Mail for a domain that DNS says has no server (permanent).
    NoRoute,
    /// Mail for another domain while the relay queue is full.
    QueueFull,
    /// An OPAQUE login or registration refused (AUTHFAILURE, D8).
    OpaqueAuth,
    /// Plain LOGIN refused by `legacy_login` (or for an account with an OPAQUE login).
    LegacyLoginRefused,
    /// LOGIN or a mailbox command without TLS where `[tls] require_for` names it; or
    /// TLSSTART refused (not offered, already TLS, bytes pipelined after it).
    TlsRefused,
    /// A TLS handshake that failed (the connection closes without a reply).
    TlsHandshake,
}

impl FailureReason {
    const ALL: [FailureReason; 20] = [
        Self::Framing,
        Self::Smtp,
        Self::BadMessage,
        Self::TooLarge,
        Self::RateLimited,
        Self::ConnectionLimit,
        Self::IdleTimeout,
        Self::Internal,
        Self::MboxAuth,
        Self::OverQuota,
        Self::MailboxRate,
        Self::BadSender,
        Self::RelayDenied,
        Self::HopLimit,
        Self::NoRoute,
        Self::QueueFull,
        Self::OpaqueAuth,
        Self::LegacyLoginRefused,
        Self::TlsRefused,
        Self::TlsHandshake,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Framing => "framing",
            Self::Smtp => "smtp",
            Self::BadMessage => "bad_message",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::ConnectionLimit => "connection_limit",
            Self::IdleTimeout => "idle_timeout",
            Self::Internal => "internal",
            Self::MboxAuth => "mbox_auth",
            Self::OverQuota => "over_quota",
            Self::MailboxRate => "mailbox_rate_limited",
            Self::BadSender => "bad_sender",
            Self::RelayDenied => "relay_denied",
            Self::HopLimit => "hop_limit",
            Self::NoRoute => "no_route",
            Self::QueueFull => "queue_full",
            Self::OpaqueAuth => "opaque_auth",
            Self::LegacyLoginRefused => "legacy_login_refused",
            Self::TlsRefused => "tls_refused",
            Self::TlsHandshake => "tls_handshake",
        }
    }
}

/// Every counter of the server. Shared by all connections through an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open.
    pub connections_open: AtomicI64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    commands: [AtomicU64; CommandKind::ALL.len()],
    failures: [AtomicU64; FailureReason::ALL.len()],
    /// Messages stored durably (SUCCESS sent).
    pub deliveries_ok: AtomicU64,
    /// Messages refused with DELIVERYFAILURE (or lost to a storage error).
    pub deliveries_failed: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
}

/// A histogram snapshot to render (bucket upper bounds in seconds, cumulative counts).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// `(le, cumulative count)` pairs in increasing `le` order (without `+Inf`).
    pub buckets: Vec<(f64, u64)>,
    /// Total number of observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl Histogram {
    /// A histogram from per-bucket counts (`counts[i]` observations at most
    /// `bounds[i] * scale`; one more count past the last bound), `count` observations
    /// summing to `sum`.
    pub fn from_buckets(bounds: &[u64], scale: f64, counts: &[u64], count: u64, sum: f64) -> Self {
        let mut cum = 0;
        let buckets = bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cum += counts.get(i).copied().unwrap_or(0);
                (*b as f64 * scale, cum)
            })
            .collect();
        Histogram {
            buckets,
            count,
            sum,
        }
    }
}

impl Metrics {
    /// Counts one command.
    pub fn command(&self, kind: CommandKind) {
        self.commands[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts one failure.
    pub fn failure(&self, reason: FailureReason) {
        self.failures[reason as usize].fetch_add(1, Relaxed);
    }

    /// Commands of one kind so far.
    pub fn commands_of(&self, kind: CommandKind) -> u64 {
        self.commands[kind as usize].load(Relaxed)
    }

    /// Failures of one reason so far.
    pub fn failures_of(&self, reason: FailureReason) -> u64 {
        self.failures[reason as usize].load(Relaxed)
    }

    /// Renders everything in the Prometheus text format (version 0.0.4), plus the store's
    /// fsync latency histogram when given and `extra` series `(name, help, type, value)`.
    pub fn render(
        &self,
        hists: &[(&str, &str, Histogram)],
        extra: &[(&str, &str, &str, u64)],
    ) -> String {
        let mut o = String::with_capacity(4096);
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "cmtpd_connections_open",
            "Connections currently open.",
            "gauge",
            self.connections_open.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "cmtpd_connections_total",
            "Connections accepted since start.",
            "counter",
            self.connections_total.load(Relaxed).to_string(),
        );
        let _ = writeln!(
            o,
            "# HELP cmtpd_commands_total Commands received, by command.\n# TYPE cmtpd_commands_total counter"
        );
        for k in CommandKind::ALL {
            let _ = writeln!(
                o,
                "cmtpd_commands_total{{command=\"{}\"}} {}",
                k.label(),
                self.commands_of(k)
            );
        }
        let _ = writeln!(
            o,
            "# HELP cmtpd_deliveries_total Messages received, by outcome.\n# TYPE cmtpd_deliveries_total counter"
        );
        let _ = writeln!(
            o,
            "cmtpd_deliveries_total{{result=\"ok\"}} {}\ncmtpd_deliveries_total{{result=\"failed\"}} {}",
            self.deliveries_ok.load(Relaxed),
            self.deliveries_failed.load(Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP cmtpd_failures_total Refusals and failures, by reason.\n# TYPE cmtpd_failures_total counter"
        );
        for r in FailureReason::ALL {
            let _ = writeln!(
                o,
                "cmtpd_failures_total{{reason=\"{}\"}} {}",
                r.label(),
                self.failures_of(r)
            );
        }
        g(
            &mut o,
            "cmtpd_bytes_in_total",
            "Bytes read from clients.",
            "counter",
            self.bytes_in.load(Relaxed).to_string(),
        );
        g(
            &mut o,
            "cmtpd_bytes_out_total",
            "Bytes written to clients.",
            "counter",
            self.bytes_out.load(Relaxed).to_string(),
        );
        for (name, help, kind, v) in extra {
            g(&mut o, name, help, kind, v.to_string());
        }
        for (name, help, h) in hists {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (le, c) in &h.buckets {
                let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {c}");
            }
            let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.command(CommandKind::Noop);
        m.failure(FailureReason::Smtp);
        let h = Histogram {
            buckets: vec![(0.001, 3), (0.01, 5)],
            count: 6,
            sum: 0.05,
        };
        let t = m.render(
            &[(
                "cmtpd_store_fsync_seconds",
                "Latency of the store's fsync calls.",
                h,
            )],
            &[],
        );
        assert!(
            t.contains("cmtpd_commands_total{command=\"NOOP\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("cmtpd_failures_total{reason=\"smtp\"} 1\n"));
        assert!(t.contains("cmtpd_store_fsync_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(t.contains("cmtpd_connections_open 0\n"));
    }
}
