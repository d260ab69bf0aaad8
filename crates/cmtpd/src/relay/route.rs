//! Where another domain's server is: a static route from the configuration wins, else
//! DNS (SRV, MX, implicit MX — cmtp-client's discovery, shared with the client).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cmtp_client::{Discovery, RouteError};

use crate::config::{Federation, parse_host_port};

/// Finds the addresses to try for a domain, in order.
pub struct Router {
    routes: BTreeMap<String, (String, u16)>,
    discovery: Discovery,
}

impl Router {
    /// Static routes and a resolver from `[federation]`.
    pub fn new(cfg: &Federation) -> Result<Router, String> {
        let routes = cfg
            .routes
            .iter()
            .filter_map(|(d, t)| Some((d.to_ascii_lowercase(), parse_host_port(t)?)))
            .collect();
        let discovery = Discovery::new(cfg.dns, Duration::from_secs(cfg.dns_timeout_secs))
            .map_err(|e| e.to_string())?
            .with_mx_port(cfg.mx_port);
        Ok(Router { routes, discovery })
    }

    /// Whether `domain` has a static route.
    pub fn has_static_route(&self, domain: &str) -> bool {
        self.routes.contains_key(&domain.to_ascii_lowercase())
    }

    /// The addresses of `domain`'s servers, best first. A static route's host name is
    /// resolved by the system resolver; its failure is temporary.
    pub async fn resolve(&self, domain: &str) -> Result<Vec<SocketAddr>, RouteError> {
        let domain = domain.to_ascii_lowercase();
        if let Some((host, port)) = self.routes.get(&domain) {
            if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, *port)]);
            }
            return match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(a) => Ok(a.collect()),
                Err(e) => Err(RouteError::Temporary {
                    domain,
                    reason: format!("static route host {host}: {e}"),
                }),
            };
        }
        self.discovery.route(&domain).await
    }
}
