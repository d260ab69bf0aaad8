//! The server's configuration: one TOML file (every key optional, unknown keys refused),
//! overridden by command-line flags. Precedence: CLI > config file > defaults.
//!
//! Every default is documented in `cmtpd.example.toml` at the repository root, which is
//! also what `cmtpd config default` prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod federation;
mod store;
mod tls;
pub use federation::Federation;
pub use store::{DATABASE_URL_ENV, Store, StoreBackend, redacted_url};
pub use tls::{Protected, Tls};

/// The example configuration shipped with the server (every key with its default).
pub const EXAMPLE_CONFIG: &str = include_str!("../../../../cmtpd.example.toml");

/// Environment variable that replaces the default data directory (`./cmtp-data`).
pub const DATA_DIR_ENV: &str = "CMTPD_DATA_DIR";

/// Errors while loading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error underneath.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type, ...).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A value that parses but makes no sense (for example no domain at all).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// How addresses appear in the per-message log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogAddresses {
    /// `alice@example.org`.
    #[default]
    Plain,
    /// `h:` and 16 hex digits of a keyed BLAKE2b of the folded address.
    Hashed,
}

/// Whether plain LOGIN is served (`legacy_login`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegacyLogin {
    /// For accounts that have no OPAQUE login yet (never for those that have one).
    #[default]
    Allow,
    /// For no account.
    Deny,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the server key, users and mail live.
    pub data_dir: PathBuf,
    /// Local domains; the first is the primary one (greeting, empty `dest_domain`).
    pub domains: Vec<String>,
    /// CMTP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Metrics/health HTTP endpoint; `metrics_enabled = false` disables it.
    pub metrics_listen: SocketAddr,
    /// Whether the metrics/health endpoint runs at all.
    pub metrics_enabled: bool,
    /// Log format (`text` or `json`); `RUST_LOG` chooses the level (default `info`).
    pub log_format: LogFormat,
    /// How long, on SIGTERM/SIGINT, in-flight connections may finish their work.
    pub shutdown_grace_secs: u64,
    /// How many signatures of user keys are remembered (KEYREQUEST speed).
    pub key_signature_cache: usize,
    /// The account `postmaster@<any local domain>` reaches (RFC 5321 §4.5.1), e.g.
    /// `"alice"`; unset: an account named `postmaster` if there is one, else the server's
    /// own mailbox (`cmtpd mailbox list`).
    pub postmaster: Option<String>,
    /// How the per-message log line shows addresses: `plain`, or `hashed` (a keyed
    /// BLAKE2b of the address, the key kept in the data directory, so one address always
    /// gives the same token on this server and nothing elsewhere can recompute it).
    pub log_addresses: LogAddresses,
    /// Plain LOGIN (which hands out the xzibit to anyone): `allow` serves it for accounts
    /// without an OPAQUE login and refuses it for those with one; `deny` refuses it for
    /// every account (docs/protocol.md D8).
    pub legacy_login: LegacyLogin,
    /// Size and connection limits.
    pub limits: Limits,
    /// Per-IP rate limits (token buckets).
    pub rate: RateLimits,
    /// The metrics/health endpoint's own limits.
    pub http: HttpLimits,
    /// Relaying to other domains: routes, DNS, the queue's retry schedule, trust.
    pub federation: Federation,
    /// The storage backend (`embedded` or `postgres`).
    pub store: Store,
    /// Transport encryption (docs/protocol.md D7).
    pub tls: Tls,
}

/// Limits of the metrics/health HTTP endpoint, so held-open sockets cannot blind
/// monitoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Most simultaneous HTTP connections; a new one past it closes the oldest.
    pub max_connections: usize,
    /// A request must arrive and be answered within this many seconds.
    pub request_timeout_secs: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            request_timeout_secs: 5,
        }
    }
}

/// Size and connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message accepted (envelope + log + body + attachments), bytes.
    pub max_message_size: u64,
    /// Most attachments in one message.
    pub max_attachments: u32,
    /// Largest log in one message, bytes.
    pub max_log_size: u64,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_secs: u64,
    /// Most simultaneous connections (all addresses together).
    pub max_connections: usize,
    /// Most simultaneous connections from one client address (IPv4 address, or IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Most client addresses tracked at once (connection counts and rate buckets); a new
    /// address beyond it is refused with FAILURE until idle entries are swept.
    pub max_tracked_ips: usize,
    /// A command must arrive whole within this many seconds of its first byte (a client
    /// trickling bytes cannot hold a connection forever; MAIL has its own rule).
    pub command_timeout_secs: u64,
    /// After `transfer_grace_secs`, a MAIL must have arrived at this average rate (bytes
    /// per second since the command started) or it is answered FAILURE and the
    /// connection closed; 0 turns the rule off.
    pub min_transfer_rate: u64,
    /// Grace period of `min_transfer_rate`, seconds.
    pub transfer_grace_secs: u64,
    /// Most messages in one mailbox: a MAIL beyond it gets DELIVERYFAILURE. It also
    /// bounds the LIST payload the server builds.
    pub max_mailbox_messages: u64,
    /// Most stored bytes in one mailbox: a MAIL beyond it gets DELIVERYFAILURE.
    pub max_mailbox_bytes: u64,
    /// Client networks exempt from the per-address limits (connections per address and
    /// the `[rate]` buckets), still bounded by `max_connections`. Loopback by default.
    pub exempt_networks: Vec<ipnet::IpNet>,
}

/// Per-IP token buckets: `*_per_sec` refill rate, `*_burst` bucket size; a rate of 0
/// disables that limit. A command over its limit gets a signed FAILURE (the connection
/// stays usable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Every command (any kind) from one IP.
    pub commands_per_sec: u32,
    /// Burst for `commands_per_sec`.
    pub commands_burst: u32,
    /// LOGIN from one IP (each LOGIN hands out an xzibit that can be attacked offline).
    pub login_per_sec: u32,
    /// Burst for `login_per_sec`.
    pub login_burst: u32,
    /// KEYREQUEST for a user (not the server key) from one IP (slows account enumeration).
    pub keyrequest_per_sec: u32,
    /// Burst for `keyrequest_per_sec`.
    pub keyrequest_burst: u32,
    /// Refused mailbox requests (AUTHFAILURE) from one IP; once spent, mailbox commands
    /// get FAILURE without the signature check (which is what an attacker makes us pay).
    pub mbox_auth_failures_per_sec: u32,
    /// Burst for `mbox_auth_failures_per_sec`.
    pub mbox_auth_failures_burst: u32,
    /// MAIL from one IP.
    pub mail_per_sec: u32,
    /// Burst for `mail_per_sec`.
    pub mail_burst: u32,
    /// MAIL to one local mailbox, from all senders together (exempt networks included).
    pub mailbox_mail_per_sec: u32,
    /// Burst for `mailbox_mail_per_sec`.
    pub mailbox_mail_burst: u32,
    /// OPAQUE logins (OPAQUE1) from one IP.
    pub opaque_per_sec: u32,
    /// Burst for `opaque_per_sec`.
    pub opaque_burst: u32,
    /// OPAQUE logins (OPAQUE1) for one account name, from all addresses together
    /// (exempt networks included), per minute: what bounds online password guessing by
    /// a guesser spread over many addresses. Names that are not accounts are limited the
    /// same way, so the limit does not tell them apart.
    pub opaque_account_per_min: u32,
    /// Burst for `opaque_account_per_min`.
    pub opaque_account_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            domains: vec!["localhost".to_owned()],
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 9001))],
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            metrics_enabled: true,
            log_format: LogFormat::Text,
            shutdown_grace_secs: 10,
            key_signature_cache: 65_536,
            postmaster: None,
            log_addresses: LogAddresses::Plain,
            legacy_login: LegacyLogin::Allow,
            limits: Limits::default(),
            rate: RateLimits::default(),
            http: HttpLimits::default(),
            federation: Federation::default(),
            store: Store::default(),
            tls: Tls::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024 * 1024,
            max_attachments: 64,
            max_log_size: 64 * 1024,
            idle_timeout_secs: 300,
            max_connections: 16_384,
            max_connections_per_ip: 64,
            max_tracked_ips: 65_536,
            command_timeout_secs: 60,
            min_transfer_rate: 16 * 1024,
            transfer_grace_secs: 60,
            max_mailbox_messages: 100_000,
            max_mailbox_bytes: 10 * 1024 * 1024 * 1024,
            exempt_networks: vec![
                ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                    std::net::Ipv4Addr::new(127, 0, 0, 0),
                    8,
                )),
                ipnet::IpNet::V6(ipnet::Ipv6Net::new_assert(
                    std::net::Ipv6Addr::LOCALHOST,
                    128,
                )),
            ],
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            commands_per_sec: 20_000,
            commands_burst: 100_000,
            login_per_sec: 20,
            login_burst: 100,
            keyrequest_per_sec: 1_000,
            keyrequest_burst: 5_000,
            mbox_auth_failures_per_sec: 10,
            mbox_auth_failures_burst: 50,
            mail_per_sec: 200,
            mail_burst: 2_000,
            mailbox_mail_per_sec: 100,
            mailbox_mail_burst: 2_000,
            opaque_per_sec: 5,
            opaque_burst: 30,
            opaque_account_per_min: 10,
            opaque_account_burst: 20,
        }
    }
}

/// `$CMTPD_DATA_DIR` when set (and not empty), else `./cmtp-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("./cmtp-data"),
    }
}

/// Command-line values that override the file (None / empty = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--domain` (repeatable).
    pub domains: Vec<String>,
    /// `--listen` (repeatable).
    pub listen: Vec<SocketAddr>,
    /// `--metrics-listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `--no-metrics`.
    pub no_metrics: bool,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--route DOMAIN=HOST:PORT` (repeatable), added to `[federation] routes`.
    pub routes: Vec<(String, String)>,
    /// `--dns IP:PORT`.
    pub dns: Option<SocketAddr>,
}

impl Config {
    /// Parses a TOML text.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Loads `path` (or the defaults when `None`), applies the overrides, and validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_owned(),
                    source: e,
                })?;
                Self::from_toml(&text, p)?
            }
            None => Self::default(),
        };
        cfg.apply(overrides);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies command-line overrides (CLI wins over the file).
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if !o.domains.is_empty() {
            self.domains = o.domains.clone();
        }
        if !o.listen.is_empty() {
            self.listen = o.listen.clone();
        }
        if let Some(m) = o.metrics_listen {
            self.metrics_listen = m;
            self.metrics_enabled = true;
        }
        if o.no_metrics {
            self.metrics_enabled = false;
        }
        if let Some(f) = o.log_format {
            self.log_format = f;
        }
        for (domain, target) in &o.routes {
            self.federation
                .routes
                .insert(domain.clone(), target.clone());
        }
        if let Some(dns) = o.dns {
            self.federation.dns = Some(dns);
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.domains.is_empty() {
            return Err(ConfigError::Invalid("at least one domain is needed".into()));
        }
        // Domains are compared case-insensitively (docs/protocol.md §4); kept as
        // configured (the primary one is the greeting's).
        for d in &self.domains {
            if d.is_empty()
                || d.len() > 255
                || d.contains(['/', '\\', '\0'])
                || d == "."
                || d == ".."
                || d.chars().any(char::is_control)
            {
                return Err(ConfigError::Invalid(format!("bad domain name {d:?}")));
            }
        }
        if let Some(p) = &self.postmaster {
            let canonical = cmtp_proto::canonical_account(p)
                .map_err(|e| ConfigError::Invalid(format!("postmaster = {p:?}: {e}")))?;
            self.postmaster = Some(canonical);
        }
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid(
                "at least one listen address is needed".into(),
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "connection limits must be at least 1".into(),
            ));
        }
        if self.limits.max_tracked_ips == 0 || self.limits.command_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "max_tracked_ips and command_timeout_secs must be at least 1".into(),
            ));
        }
        if self.limits.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "idle_timeout_secs must be at least 1".into(),
            ));
        }
        self.store.validate()?;
        self.federation.validate()
    }
}

/// Settings a SIGHUP cannot change (read once at start): their names, and a function
/// that copies the running value into the reloaded configuration.
type Fixed = (&'static str, fn(&mut Config, &Config) -> bool);

const RESTART_ONLY: &[Fixed] = &[
    ("data_dir", |n, o| keep(&mut n.data_dir, &o.data_dir)),
    ("store", |n, o| keep(&mut n.store, &o.store)),
    ("domains", |n, o| keep(&mut n.domains, &o.domains)),
    ("listen", |n, o| keep(&mut n.listen, &o.listen)),
    ("metrics_listen", |n, o| {
        keep(&mut n.metrics_listen, &o.metrics_listen)
    }),
    ("metrics_enabled", |n, o| {
        keep(&mut n.metrics_enabled, &o.metrics_enabled)
    }),
    ("log_format", |n, o| keep(&mut n.log_format, &o.log_format)),
    ("key_signature_cache", |n, o| {
        keep(&mut n.key_signature_cache, &o.key_signature_cache)
    }),
    ("limits.max_connections", |n, o| {
        keep(&mut n.limits.max_connections, &o.limits.max_connections)
    }),
    ("limits.max_tracked_ips", |n, o| {
        keep(&mut n.limits.max_tracked_ips, &o.limits.max_tracked_ips)
    }),
    ("http", |n, o| keep(&mut n.http, &o.http)),
    ("federation.key_cache_secs", |n, o| {
        keep(
            &mut n.federation.key_cache_secs,
            &o.federation.key_cache_secs,
        )
    }),
    ("federation.key_negative_cache_secs", |n, o| {
        keep(
            &mut n.federation.key_negative_cache_secs,
            &o.federation.key_negative_cache_secs,
        )
    }),
];

/// Puts `old` back into `new`; true when they differed.
fn keep<T: PartialEq + Clone>(new: &mut T, old: &T) -> bool {
    let differs = new != old;
    if differs {
        *new = old.clone();
    }
    differs
}

impl Config {
    /// The configuration a SIGHUP puts in force: `self` (freshly loaded and validated)
    /// with every restart-only setting kept at its `running` value. Returns it and the
    /// names of the restart-only settings that differed (to log).
    pub fn for_reload(mut self, running: &Config) -> (Config, Vec<&'static str>) {
        let mut kept = Vec::new();
        for (name, restore) in RESTART_ONLY {
            if restore(&mut self, running) {
                kept.push(*name);
            }
        }
        (self, kept)
    }

    /// The primary domain (the first).
    pub fn primary_domain(&self) -> &str {
        &self.domains[0]
    }

    /// Idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.idle_timeout_secs)
    }

    /// Command timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.command_timeout_secs)
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals); `None` if the port is missing or
/// not a number.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests;
