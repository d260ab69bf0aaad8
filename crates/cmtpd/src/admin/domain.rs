//! `cmtpd domain keys | trust`: the pinned keys of other domains' servers. The server
//! reads them (files, or rows of the database) on every use, so a trust takes effect at
//! once, on every node.

use cmtp_client::terminal::{Layout, sanitize};
use cmtp_crypto::PublicKey;
use cmtp_store::PeerStore;
use serde::Serialize;
use std::fmt::Write as _;

use super::{AdminError, Result};

#[derive(Serialize)]
struct PeerJson {
    domain: String,
    fingerprint: String,
    public_key: String,
    pinned_at: u64,
    offered: Option<OfferedJson>,
}

#[derive(Serialize)]
struct OfferedJson {
    fingerprint: String,
    public_key: String,
    seen_at: u64,
}

fn fingerprint(k: &[u8; 32]) -> String {
    PublicKey::from_bytes(k)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| hex::encode(k))
}

/// `domain keys [--json]`.
pub fn keys(peers: &impl PeerStore, json: bool) -> Result<String> {
    let peers = peers.list_peer_keys()?;
    let rows: Vec<PeerJson> = peers
        .into_iter()
        .map(|p| PeerJson {
            fingerprint: fingerprint(&p.key),
            public_key: hex::encode(p.key),
            pinned_at: p.pinned_at,
            offered: p.offered.map(|(k, t)| OfferedJson {
                fingerprint: fingerprint(&k),
                public_key: hex::encode(k),
                seen_at: t,
            }),
            domain: p.domain,
        })
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n");
    }
    if rows.is_empty() {
        return Ok("no remote server key pinned yet\n".into());
    }
    let mut o = String::new();
    for r in &rows {
        let _ = writeln!(
            o,
            "{}  pinned {}  since {}",
            sanitize(&r.domain, Layout::Line),
            r.fingerprint,
            r.pinned_at
        );
        if let Some(off) = &r.offered {
            let _ = writeln!(
                o,
                "    REFUSED a different key {} (seen {}); accept it with `cmtpd domain trust {}`",
                off.fingerprint,
                off.seen_at,
                sanitize(&r.domain, Layout::Line)
            );
        }
    }
    Ok(o)
}

/// `domain trust DOMAIN`: pins the key the domain's server last presented.
pub fn trust(peers: &impl PeerStore, domain: &str) -> Result<String> {
    let domain = domain.to_ascii_lowercase();
    cmtp_store::ensure_path_safe(&domain)?;
    let Some(p) = peers.peer_key(&domain)? else {
        return Err(AdminError::BadImport(format!(
            "no key known for {domain}: it is pinned on first contact"
        )));
    };
    let Some((key, _)) = p.offered else {
        return Err(AdminError::BadImport(format!(
            "{domain}'s server has presented no other key than the pinned {}",
            fingerprint(&p.key)
        )));
    };
    peers.pin_peer_key(&domain, &key)?;
    Ok(format!(
        "{domain}: now trusting {} (was {})\n",
        fingerprint(&key),
        fingerprint(&p.key)
    ))
}
