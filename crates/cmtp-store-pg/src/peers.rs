//! [`cmtp_store::PeerStore`] over the `peers` table.

use cmtp_store::{PeerKey, Result, StoreError, ensure_path_safe};
use tokio_postgres::Row;

use crate::PgStore;
use crate::state::unix_now;

fn folded(domain: &str) -> Result<String> {
    let d = domain.to_ascii_lowercase();
    ensure_path_safe(&d)?;
    Ok(d)
}

fn key32(b: &[u8]) -> Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| StoreError::Corrupt("a stored peer key is not 32 bytes".into()))
}

fn peer_of(r: &Row) -> Result<Option<PeerKey>> {
    let Some(key) = r.get::<_, Option<&[u8]>>(1) else {
        // Only a refused offer, no pin: not shown (as the embedded store).
        return Ok(None);
    };
    let offered = match (r.get::<_, Option<&[u8]>>(3), r.get::<_, Option<i64>>(4)) {
        (Some(k), Some(at)) => Some((key32(k)?, u64::try_from(at).unwrap_or(0))),
        _ => None,
    };
    Ok(Some(PeerKey {
        domain: r.get(0),
        key: key32(key)?,
        pinned_at: u64::try_from(r.get::<_, Option<i64>>(2).unwrap_or(0)).unwrap_or(0),
        offered,
    }))
}

const COLUMNS: &str = "domain, key, pinned_at, offered_key, offered_at";

pub(crate) fn get(s: &PgStore, domain: &str) -> Result<Option<PeerKey>> {
    let (sh, d) = (s.shared.clone(), folded(domain)?);
    s.bridge.block_store(async move {
        let c = sh.conn("reading a peer key").await?;
        let row = c
            .query_opt(
                &format!("SELECT {COLUMNS} FROM peers WHERE domain = $1"),
                &[&d],
            )
            .await
            .map_err(|e| sh.pg("reading a peer key", e))?;
        match row {
            Some(r) => peer_of(&r),
            None => Ok(None),
        }
    })
}

pub(crate) fn pin(s: &PgStore, domain: &str, key: &[u8; 32]) -> Result<()> {
    let (sh, d, key) = (s.shared.clone(), folded(domain)?, key.to_vec());
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    s.bridge.block_store(async move {
        let c = sh.conn("pinning a peer key").await?;
        c.execute(
            "INSERT INTO peers (domain, key, pinned_at) VALUES ($1, $2, $3)
             ON CONFLICT (domain) DO UPDATE SET key = EXCLUDED.key,
                 pinned_at = EXCLUDED.pinned_at, offered_key = NULL, offered_at = NULL",
            &[&d, &key, &now],
        )
        .await
        .map_err(|e| sh.pg("pinning a peer key", e))?;
        sh.mark_ok();
        Ok(())
    })
}

pub(crate) fn offer(s: &PgStore, domain: &str, key: &[u8; 32]) -> Result<()> {
    let (sh, d, key) = (s.shared.clone(), folded(domain)?, key.to_vec());
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    s.bridge.block_store(async move {
        let c = sh.conn("recording an offered peer key").await?;
        c.execute(
            "INSERT INTO peers (domain, offered_key, offered_at) VALUES ($1, $2, $3)
             ON CONFLICT (domain) DO UPDATE SET offered_key = EXCLUDED.offered_key,
                 offered_at = EXCLUDED.offered_at",
            &[&d, &key, &now],
        )
        .await
        .map_err(|e| sh.pg("recording an offered peer key", e))?;
        sh.mark_ok();
        Ok(())
    })
}

pub(crate) fn list(s: &PgStore) -> Result<Vec<PeerKey>> {
    let sh = s.shared.clone();
    s.bridge.block_store(async move {
        let c = sh.conn("listing peer keys").await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM peers WHERE key IS NOT NULL ORDER BY domain COLLATE \"C\""
                ),
                &[],
            )
            .await
            .map_err(|e| sh.pg("listing peer keys", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(p) = peer_of(r)? {
                out.push(p);
            }
        }
        Ok(out)
    })
}

pub(crate) fn tls(s: &PgStore, domain: &str) -> Result<bool> {
    let (sh, d) = (s.shared.clone(), folded(domain)?);
    s.bridge.block_store(async move {
        let c = sh.conn("reading a peer's TLS record").await?;
        let row = c
            .query_opt("SELECT tls FROM peers WHERE domain = $1", &[&d])
            .await
            .map_err(|e| sh.pg("reading a peer's TLS record", e))?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
    })
}

pub(crate) fn set_tls(s: &PgStore, domain: &str) -> Result<()> {
    let (sh, d) = (s.shared.clone(), folded(domain)?);
    s.bridge.block_store(async move {
        let c = sh.conn("recording a peer's TLS").await?;
        c.execute(
            "INSERT INTO peers (domain, tls) VALUES ($1, true)
             ON CONFLICT (domain) DO UPDATE SET tls = true",
            &[&d],
        )
        .await
        .map_err(|e| sh.pg("recording a peer's TLS", e))?;
        sh.mark_ok();
        Ok(())
    })
}
