//! Finding a domain's CMTP servers (spec §1; docs/client.md, "Routing"):
//!
//! 1. SRV `_cmtp._tcp.<domain>`: by priority, RFC 2782 weighted random order within a
//!    priority, on the SRV port. A lone SRV with target "." means "no service here".
//! 2. Else MX: lowest preference first, equal preferences shuffled, on port 25. A null
//!    MX (RFC 7505: one MX with exchange ".") means "this domain accepts no mail".
//! 3. Else the implicit MX of RFC 5321 §5.1: the domain's own A/AAAA on port 25.
//!
//! [`Discovery::lookup`] stops at host names (what the client connects to and keeps in
//! its profile); [`Discovery::route`] resolves them to socket addresses (what the
//! server's relay dials). Failures are [`RouteError::Permanent`] (DNS says there is no
//! server) or [`RouteError::Temporary`] (DNS did not answer usefully now).
//!
//! The resolver address can be overridden (e.g. `127.0.0.1:5353` for tests);
//! otherwise the system configuration (`/etc/resolv.conf`) is used. `localhost` is
//! answered by the resolver itself (RFC 6761: loopback addresses, no other records), so
//! it routes by the implicit MX to `127.0.0.1:25` and `[::1]:25` without a query. An IP
//! address given as the domain (`127.0.0.1`, or RFC 5321's `[127.0.0.1]` and
//! `[IPv6:::1]`) is that address on port 25, without DNS.

mod answer;
mod order;

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{Resolver, TokioResolver};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use self::answer::{Missing, host_addresses, query};
use self::order::{SrvEntry, order_mx, order_srv};
use crate::error::{ClientError, Result};

/// Port MX hosts are contacted on (CMTP shares port 25 with SMTP).
pub const MX_PORT: u16 = 25;

/// At most this many SRV targets or MX hosts are kept (the first in routing order),
/// so that a hostile zone listing thousands cannot make a route resolve them all.
pub const MAX_TARGETS: usize = 16;

/// One candidate server for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Host name (without the trailing dot), or an IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// How it was found.
    pub source: CandidateSource,
}

/// Where a [`Candidate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateSource {
    /// An SRV record `_cmtp._tcp.<domain>`.
    Srv,
    /// An MX record (port 25).
    Mx,
    /// No SRV or MX: the domain itself (its A/AAAA, or an IP literal), port 25.
    Implicit,
}

impl Candidate {
    /// `host:port`, IPv6 literals bracketed.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a domain has no route now.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The domain has no CMTP server, and asking again will not change that
    /// (NXDOMAIN, null MX, SRV ".", no records at all).
    #[error("{domain}: {reason}")]
    Permanent {
        /// The domain routed.
        domain: String,
        /// What DNS said.
        reason: String,
    },
    /// DNS did not answer usefully now (timeout, SERVFAIL, unreachable resolver).
    #[error("{domain}: {reason} (temporary)")]
    Temporary {
        /// The domain routed.
        domain: String,
        /// What went wrong.
        reason: String,
    },
}

impl RouteError {
    /// True for [`RouteError::Permanent`]: a relay bounces instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(self, RouteError::Permanent { .. })
    }

    /// The domain that was routed.
    pub fn domain(&self) -> &str {
        match self {
            RouteError::Permanent { domain, .. } | RouteError::Temporary { domain, .. } => domain,
        }
    }
}

impl From<RouteError> for ClientError {
    fn from(e: RouteError) -> ClientError {
        let (domain, reason) = match e {
            RouteError::Permanent { domain, reason } => (domain, reason),
            RouteError::Temporary { domain, reason } => (domain, format!("{reason} (temporary)")),
        };
        ClientError::Discovery { domain, reason }
    }
}

/// Looks up CMTP servers by DNS.
pub struct Discovery {
    resolver: TokioResolver,
    timeout: Duration,
    /// For the SRV weights and MX ties; seeded from the OS unless [`Discovery::with_seed`].
    rng: Mutex<SmallRng>,
    /// Port of MX hosts and implicit MX ([`MX_PORT`] unless [`Discovery::with_mx_port`]).
    mx_port: u16,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A routing step's failure, before the domain is attached.
enum Verdict {
    Permanent(String),
    Temporary(String),
}

/// A routing step: its candidates, `None` to go on to the next step, or the end.
type Step = std::result::Result<Option<Vec<Candidate>>, Verdict>;

/// The domain as given, for errors: without a trailing dot.
fn shown(domain: &str) -> String {
    domain.trim_end_matches('.').to_owned()
}

/// An IP address standing for a domain: bare, or an RFC 5321 address literal.
fn ip_literal(domain: &str) -> Option<IpAddr> {
    let inner = match domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        Some(lit) => lit
            .strip_prefix("IPv6:")
            .or_else(|| lit.strip_prefix("ipv6:"))
            .unwrap_or(lit),
        None => domain,
    };
    inner.parse().ok()
}

/// A host name from DNS data, for [`Candidate::host`]: ASCII (punycode), as the
/// system's resolver expects when the client connects to it.
fn host_of(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

impl Discovery {
    /// A resolver: the system configuration, or `nameserver` (UDP and TCP on its port)
    /// when given. `timeout` bounds each query, retries included, so a resolver that
    /// never answers makes [`route`](Self::route) fail (temporarily) after about
    /// `timeout`.
    pub fn new(nameserver: Option<SocketAddr>, timeout: Duration) -> Result<Discovery> {
        let err = |e: &dyn std::fmt::Display| ClientError::Discovery {
            domain: String::new(),
            reason: format!("cannot set up the DNS resolver: {e}"),
        };
        let mut builder = match nameserver {
            Some(ns) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                let cfg = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                    ns.ip(),
                    true,
                    vec![udp, tcp],
                )]);
                Resolver::builder_with_config(cfg, TokioRuntimeProvider::default())
            }
            None => Resolver::builder_tokio().map_err(|e| err(&e))?,
        };
        builder.options_mut().timeout = timeout;
        // One attempt: within it hickory already resends over UDP; a second attempt
        // would double the time a dead resolver costs. Each query is also cut off at
        // `timeout` by `answer::query`.
        builder.options_mut().attempts = 1;
        let resolver = builder.build().map_err(|e| err(&e))?;
        Ok(Discovery {
            resolver,
            timeout,
            rng: Mutex::new(rand::make_rng()),
            mx_port: MX_PORT,
        })
    }

    /// The same discovery contacting MX hosts (and implicit MX) on `port` instead of 25:
    /// for private networks and tests, which cannot bind port 25.
    pub fn with_mx_port(self, port: u16) -> Discovery {
        Discovery {
            mx_port: port,
            ..self
        }
    }

    /// The same discovery with its random choices (SRV weights, MX ties) drawn from a
    /// generator seeded with `seed`: the same zone then gives the same order.
    pub fn with_seed(self, seed: u64) -> Discovery {
        Discovery {
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            ..self
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, SmallRng> {
        // The generator has no invariant a panicking holder could break.
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Candidates for `domain`, in the order to try them: SRV targets on their ports,
    /// else MX hosts on port 25, else the domain itself on port 25 (see the module
    /// documentation). At most [`MAX_TARGETS`].
    pub async fn candidates(
        &self,
        domain: &str,
    ) -> std::result::Result<Vec<Candidate>, RouteError> {
        let fail = |v: Verdict| match v {
            Verdict::Permanent(reason) => RouteError::Permanent {
                domain: shown(domain),
                reason,
            },
            Verdict::Temporary(reason) => RouteError::Temporary {
                domain: shown(domain),
                reason,
            },
        };
        if let Some(ip) = ip_literal(domain) {
            return Ok(vec![Candidate {
                host: ip.to_string(),
                port: self.mx_port,
                source: CandidateSource::Implicit,
            }]);
        }
        let mut name = Name::from_utf8(domain)
            .map_err(|e| fail(Verdict::Permanent(format!("not a valid domain name ({e})"))))?;
        name.set_fqdn(true);
        if name.is_root() {
            return Err(fail(Verdict::Permanent(
                "not a valid domain name (empty)".into(),
            )));
        }
        if let Some(found) = self.srv_step(&name).await.map_err(fail)? {
            return Ok(found);
        }
        if let Some(found) = self.mx_step(&name).await.map_err(fail)? {
            return Ok(found);
        }
        self.implicit_step(&name).await.map_err(fail)
    }

    /// Step 1, SRV: the targets, or `None` to go on to MX. NXDOMAIN here is about
    /// `_cmtp._tcp.<domain>`, not the domain.
    async fn srv_step(&self, name: &Name) -> Step {
        // A domain so long that the SRV name would pass 255 bytes can have no SRV.
        let Ok(srv_name) = Name::from_ascii("_cmtp._tcp").and_then(|n| n.append_domain(name))
        else {
            return Ok(None);
        };
        let records = match query(self.timeout, self.resolver.srv_lookup(srv_name)).await {
            Ok(records) => records,
            Err(Missing::NxDomain | Missing::NoData) => return Ok(None),
            Err(Missing::Temporary(r)) => {
                return Err(Verdict::Temporary(format!("SRV lookup: {r}")));
            }
        };
        let srvs: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        // RFC 2782 gives "." its meaning for a lone record; several "." name no host
        // either, and falling back to MX would defy the zone's intent.
        if !srvs.is_empty() && srvs.iter().all(|s| s.target.is_root()) {
            return Err(Verdict::Permanent(
                "no CMTP service here (SRV _cmtp._tcp target \".\")".into(),
            ));
        }
        let entries: Vec<_> = srvs
            .into_iter()
            // "." among real targets is meaningless: skip it.
            .filter(|s| !s.target.is_root())
            .map(|s| SrvEntry {
                priority: s.priority,
                weight: s.weight,
                target: (host_of(&s.target), s.port),
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        let ordered = order_srv(entries, &mut *self.rng());
        Ok(Some(
            ordered
                .into_iter()
                .take(MAX_TARGETS)
                .map(|(host, port)| Candidate {
                    host,
                    port,
                    source: CandidateSource::Srv,
                })
                .collect(),
        ))
    }

    /// Step 2, MX: the hosts, or `None` to go on to the implicit MX. NXDOMAIN here is
    /// the domain itself.
    async fn mx_step(&self, name: &Name) -> Step {
        let records = match query(self.timeout, self.resolver.mx_lookup(name.clone())).await {
            Ok(records) => records,
            Err(Missing::NxDomain) => {
                return Err(Verdict::Permanent("no such domain (NXDOMAIN)".into()));
            }
            Err(Missing::NoData) => return Ok(None),
            Err(Missing::Temporary(r)) => {
                return Err(Verdict::Temporary(format!("MX lookup: {r}")));
            }
        };
        let mxs: Vec<_> = records
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(m) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let hosts: Vec<_> = mxs
            .iter()
            .filter(|m| !m.exchange.is_root())
            .map(|m| (m.preference, host_of(&m.exchange)))
            .collect();
        if hosts.is_empty() {
            if mxs.is_empty() {
                return Ok(None);
            }
            // RFC 7505 wants exactly one MX "." with preference 0; any MX set that
            // names only the root names no host either.
            return Err(Verdict::Permanent(
                "the domain accepts no mail (null MX, RFC 7505)".into(),
            ));
        }
        let ordered = order_mx(hosts, &mut *self.rng());
        Ok(Some(
            ordered
                .into_iter()
                .take(MAX_TARGETS)
                .map(|host| Candidate {
                    host,
                    port: self.mx_port,
                    source: CandidateSource::Mx,
                })
                .collect(),
        ))
    }

    /// Step 3, the implicit MX: the domain itself when it has an address.
    async fn implicit_step(&self, name: &Name) -> std::result::Result<Vec<Candidate>, Verdict> {
        match host_addresses(&self.resolver, name, self.timeout).await {
            Ok(_) => Ok(vec![Candidate {
                host: host_of(name),
                port: self.mx_port,
                source: CandidateSource::Implicit,
            }]),
            Err(Missing::NxDomain) => Err(Verdict::Permanent("no such domain (NXDOMAIN)".into())),
            Err(Missing::NoData) => Err(Verdict::Permanent(
                "no SRV _cmtp._tcp, MX, A or AAAA record: the domain has no mail server".into(),
            )),
            Err(Missing::Temporary(r)) => Err(Verdict::Temporary(format!("address lookup: {r}"))),
        }
    }

    /// Candidates for `domain` (see [`candidates`](Self::candidates)), with a failure as
    /// a [`ClientError::Discovery`] (its reason ends in "(temporary)" for a temporary
    /// one).
    pub async fn lookup(&self, domain: &str) -> Result<Vec<Candidate>> {
        Ok(self.candidates(domain).await?)
    }

    /// The socket addresses to try for `domain`, in order: each candidate's A then AAAA
    /// addresses on its port (an address already listed is not repeated). A target that
    /// does not resolve is skipped; when none resolves the failure is temporary, as the
    /// targets' own zone may be down. The targets are resolved at the same time, so
    /// this takes about one query's time however many there are.
    pub async fn route(&self, domain: &str) -> std::result::Result<Vec<SocketAddr>, RouteError> {
        let candidates = self.candidates(domain).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, c) in candidates.iter().enumerate() {
            let resolver = self.resolver.clone();
            let host = c.host.clone();
            let timeout = self.timeout;
            tasks.spawn(async move {
                let result = match host.parse::<IpAddr>() {
                    Ok(ip) => Ok(vec![ip]),
                    Err(_) => match Name::from_utf8(&host) {
                        Ok(mut name) => {
                            name.set_fqdn(true);
                            host_addresses(&resolver, &name, timeout).await
                        }
                        Err(e) => Err(Missing::Temporary(format!("bad host name ({e})"))),
                    },
                };
                (i, result)
            });
        }
        let mut results: Vec<Option<std::result::Result<Vec<IpAddr>, Missing>>> =
            vec![None; candidates.len()];
        while let Some(done) = tasks.join_next().await {
            // A resolving task only panics if hickory does; count it as no answer.
            if let Ok((i, r)) = done {
                results[i] = Some(r);
            }
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        let mut failures = Vec::new();
        for (c, r) in candidates.iter().zip(results) {
            match r {
                Some(Ok(ips)) => {
                    for ip in ips {
                        let addr = SocketAddr::new(ip, c.port);
                        if !out.contains(&addr) {
                            out.push(addr);
                        }
                    }
                }
                Some(Err(m)) => failures.push(format!("{}: {}", c.host, m.describe())),
                None => failures.push(format!("{}: resolution failed", c.host)),
            }
        }
        if out.is_empty() {
            // Enough to see what happened; a long list helps no one reading a log.
            let more = failures.len().saturating_sub(3);
            failures.truncate(3);
            let mut reason = format!(
                "none of its mail hosts has an address (their zone may be down): {}",
                failures.join("; ")
            );
            if more > 0 {
                reason.push_str(&format!("; and {more} more"));
            }
            return Err(RouteError::Temporary {
                domain: shown(domain),
                reason,
            });
        }
        Ok(out)
    }
}
