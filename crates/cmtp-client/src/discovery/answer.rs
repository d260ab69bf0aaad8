//! What a DNS answer means for routing: records, a definite "none" (NXDOMAIN, or the
//! name exists without that type), or a failure that may pass (timeout, SERVFAIL,
//! REFUSED, I/O). Every query is bounded by the discovery timeout.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record};

/// Why a query gave no usable records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Missing {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no record of the type asked for (NOERROR, no answer).
    NoData,
    /// No answer to rely on now; asking later may give one.
    Temporary(String),
}

impl Missing {
    /// A short text for error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Missing::NxDomain => "no such domain (NXDOMAIN)".into(),
            Missing::NoData => "no address record".into(),
            Missing::Temporary(r) => r.clone(),
        }
    }
}

fn classify(e: &NetError) -> Missing {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            Missing::NxDomain
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => Missing::NoData,
        NetError::Dns(DnsError::ResponseCode(code)) => {
            Missing::Temporary(format!("the DNS server answered {code}"))
        }
        NetError::Timeout => Missing::Temporary("the DNS query timed out".into()),
        NetError::Io(e) => Missing::Temporary(format!("DNS I/O error: {e}")),
        NetError::NoConnections => Missing::Temporary("no DNS server could be reached".into()),
        other => Missing::Temporary(format!("DNS error: {other}")),
    }
}

/// Runs one query, bounded by `timeout` whatever the resolver's own retries do, and
/// keeps the answer records (CNAMEs already followed by the resolver).
pub(super) async fn query<F>(timeout: Duration, fut: F) -> Result<Vec<Record>, Missing>
where
    F: Future<Output = Result<hickory_resolver::lookup::Lookup, NetError>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Missing::Temporary("the DNS query timed out".into())),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok(l)) => Ok(l.answers().to_vec()),
    }
}

/// `name`'s A then AAAA addresses, asked at the same time. One family answering is
/// enough; with none, a temporary failure of either wins over "none" (the other may
/// have had addresses).
pub(super) async fn host_addresses(
    resolver: &TokioResolver,
    name: &Name,
    timeout: Duration,
) -> Result<Vec<IpAddr>, Missing> {
    let (v4, v6) = tokio::join!(
        query(timeout, resolver.ipv4_lookup(name.clone())),
        query(timeout, resolver.ipv6_lookup(name.clone())),
    );
    let ips = |r: &Result<Vec<Record>, Missing>| -> Vec<IpAddr> {
        r.as_ref()
            .map(|recs| {
                recs.iter()
                    .filter_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = ips(&v4);
    out.extend(ips(&v6));
    if !out.is_empty() {
        return Ok(out);
    }
    match (v4, v6) {
        (Err(Missing::Temporary(r)), _) | (_, Err(Missing::Temporary(r))) => {
            Err(Missing::Temporary(r))
        }
        (Err(Missing::NxDomain), Err(Missing::NxDomain)) => Err(Missing::NxDomain),
        _ => Err(Missing::NoData),
    }
}
