//! Finding a domain's CMTP server: DNS SRV `_cmtp._tcp.<domain>` (wins, carries a
//! port), else MX hosts on port 25, lowest preference first (spec §1).
//!
//! The resolver address can be overridden (e.g. `127.0.0.1:5353` for tests);
//! otherwise the system configuration (`/etc/resolv.conf`) is used.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::error::{ClientError, Result};

/// Port MX hosts are contacted on (CMTP shares port 25 with SMTP).
pub const MX_PORT: u16 = 25;

/// One candidate server for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Host name (without the trailing dot).
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

/// Looks up CMTP servers by DNS.
pub struct Discovery {
    resolver: TokioResolver,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Discovery")
    }
}

impl Discovery {
    /// A resolver: the system configuration, or `nameserver` (UDP and TCP on its port)
    /// when given. `timeout` bounds each query.
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
        builder.options_mut().attempts = 2;
        let resolver = builder.build().map_err(|e| err(&e))?;
        Ok(Discovery { resolver })
    }

    /// Candidates for `domain`: SRV records (by priority, then weight, heavier first)
    /// when any exist, else MX hosts on port 25 (lowest preference first).
    pub async fn lookup(&self, domain: &str) -> Result<Vec<Candidate>> {
        let fq = format!("{}.", domain.trim_end_matches('.'));
        let mut out = Vec::new();
        let srv_name = format!("_cmtp._tcp.{fq}");
        if let Ok(l) = self.resolver.srv_lookup(srv_name.as_str()).await {
            let mut srvs: Vec<_> = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_string())),
                    _ => None,
                })
                .collect();
            srvs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            for (_, _, port, target) in srvs {
                let host = target.trim_end_matches('.').to_owned();
                // "." as target means: the service is decidedly not available.
                if !host.is_empty() {
                    out.push(Candidate {
                        host,
                        port,
                        source: CandidateSource::Srv,
                    });
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        let mx =
            self.resolver
                .mx_lookup(fq.as_str())
                .await
                .map_err(|e| ClientError::Discovery {
                    domain: domain.to_owned(),
                    reason: format!("no SRV _cmtp._tcp record and no MX record ({e})"),
                })?;
        let mut mxs: Vec<_> = mx
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_string())),
                _ => None,
            })
            .collect();
        mxs.sort_by_key(|m| m.0);
        for (_, host) in mxs {
            let host = host.trim_end_matches('.').to_owned();
            if !host.is_empty() {
                out.push(Candidate {
                    host,
                    port: MX_PORT,
                    source: CandidateSource::Mx,
                });
            }
        }
        if out.is_empty() {
            return Err(ClientError::Discovery {
                domain: domain.to_owned(),
                reason: "no SRV _cmtp._tcp record and no MX record".into(),
            });
        }
        Ok(out)
    }
}
