//! `[federation]`: relaying to and from other domains.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, parse_host_port};

/// Relaying to and from other domains (docs/federation.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Federation {
    /// Static routes, domain → `host:port`; they win over DNS (private networks, tests).
    pub routes: std::collections::BTreeMap<String, String>,
    /// The DNS resolver to ask (`IP:PORT`, UDP and TCP); default: the system's
    /// (`/etc/resolv.conf`).
    pub dns: Option<SocketAddr>,
    /// Port MX hosts are contacted on: 25, the port CMTP shares with SMTP (spec §1).
    /// Private networks and tests, which cannot bind 25, may change it.
    pub mx_port: u16,
    /// Delays between delivery attempts, seconds; the last one repeats until
    /// `max_queue_age_secs`.
    pub retry_secs: Vec<u64>,
    /// A message still undelivered this long after it was queued is bounced.
    pub max_queue_age_secs: u64,
    /// Client networks allowed to relay with plain MAIL (no signed submission). Default:
    /// none — only a submission signed by a local account is relayed.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// A message whose log already has this many entries is not relayed again (loops).
    pub max_hops: usize,
    /// Most outgoing connections in total.
    pub max_connections: usize,
    /// Most outgoing connections to one domain.
    pub max_connections_per_domain: usize,
    /// Most MAILs sent on one connection before their replies are read (pipelining).
    pub pipeline: usize,
    /// Seconds to connect to a remote server (each address).
    pub connect_timeout_secs: u64,
    /// Seconds a remote server may take for a reply (or to read one message).
    pub reply_timeout_secs: u64,
    /// Seconds a DNS lookup may take before the attempt counts as a temporary failure.
    pub dns_timeout_secs: u64,
    /// Most messages in the relay queue; a submission beyond it gets a temporary FAILURE.
    /// Each queued message costs about 1.2 KiB of memory (its index entries).
    pub max_queue_messages: u64,
    /// Seconds a relayed key (KEYREQUEST for another domain) is remembered.
    pub key_cache_secs: u64,
    /// Seconds a relayed "no such key" is remembered.
    pub key_negative_cache_secs: u64,
    /// Seconds a relayed KEYREQUEST may take before we answer KEYNOTAVAILABLE.
    pub key_timeout_secs: u64,
    /// Seconds a node's claim on a queued message lasts (several nodes on one database,
    /// docs/scale-out.md): during an attempt, and past each deferred message's next
    /// attempt. A dead node's messages are taken over by the others this long after
    /// they were due; an attempt that outlasts it may be sent twice (the remote stores
    /// it once, by its relay id).
    pub queue_lease_secs: u64,
    /// Seconds between looks at the shared queue for messages other nodes queued (a
    /// node learns of its own at once). Cheap: only newer ids are read.
    pub queue_rescan_secs: u64,
}

impl Default for Federation {
    fn default() -> Self {
        Self {
            routes: Default::default(),
            dns: None,
            mx_port: 25,
            // Stalwart's schedule (2m … 3d); with the 5-day age limit the last delay
            // repeats once more (RFC 5321 §4.5.4.1: give up after 4–5 days).
            retry_secs: vec![120, 300, 600, 900, 1800, 3600, 7200, 86_400, 3 * 86_400],
            max_queue_age_secs: 5 * 86_400,
            trusted_networks: Vec::new(),
            max_hops: 25,
            max_connections: 64,
            max_connections_per_domain: 8,
            pipeline: 64,
            connect_timeout_secs: 10,
            reply_timeout_secs: 60,
            dns_timeout_secs: 5,
            max_queue_messages: 250_000,
            key_cache_secs: 3600,
            key_negative_cache_secs: 300,
            key_timeout_secs: 10,
            queue_lease_secs: 600,
            queue_rescan_secs: 30,
        }
    }
}

impl Federation {
    /// Checks the relay settings; lower-cases route domains (DNS names are
    /// case-insensitive).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let routes = std::mem::take(&mut self.routes);
        for (domain, target) in routes {
            if domain.is_empty() || domain.contains(['/', '\\', '\0', ' ']) {
                return bad(format!("[federation] routes: bad domain {domain:?}"));
            }
            if parse_host_port(&target).is_none() {
                return bad(format!(
                    "[federation] routes: {domain} = {target:?} is not HOST:PORT"
                ));
            }
            self.routes.insert(domain.to_ascii_lowercase(), target);
        }
        if self.retry_secs.is_empty() || self.retry_secs.contains(&0) {
            return bad("[federation] retry_secs needs at least one delay, each at least 1".into());
        }
        if self.max_hops == 0
            || self.max_connections == 0
            || self.max_connections_per_domain == 0
            || self.pipeline == 0
        {
            return bad(
                "[federation] max_hops, max_connections, max_connections_per_domain and \
                 pipeline must be at least 1"
                    .into(),
            );
        }
        if self.connect_timeout_secs == 0
            || self.reply_timeout_secs == 0
            || self.dns_timeout_secs == 0
            || self.key_timeout_secs == 0
            || self.queue_lease_secs == 0
            || self.queue_rescan_secs == 0
        {
            return bad(
                "[federation] timeouts, queue_lease_secs and queue_rescan_secs must be at \
                 least 1 second"
                    .into(),
            );
        }
        Ok(())
    }
}
