//! [`cmtp_store::UserStore`] over the `users` table.

use cmtp_store::{Result, StoreError, UserRecord, ensure_path_safe};
use tokio_postgres::error::SqlState;

use crate::PgStore;
use crate::state::i64_of;

fn key32(b: &[u8]) -> Result<[u8; 32]> {
    b.try_into()
        .map_err(|_| StoreError::Corrupt("a stored public key is not 32 bytes".into()))
}

pub(crate) fn get(s: &PgStore, name: &str) -> Result<Option<UserRecord>> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    s.bridge.block_store(async move {
        let c = sh.conn("reading a user").await?;
        let row = c
            .query_opt(
                "SELECT name, public_key, xzibit, created FROM users WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| sh.pg("reading a user", e))?;
        row.map(|r| {
            Ok(UserRecord {
                name: r.get(0),
                public_key: key32(r.get(1))?,
                xzibit: r.get(2),
                created: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
        })
        .transpose()
    })
}

pub(crate) fn public_key(s: &PgStore, name: &str) -> Result<Option<[u8; 32]>> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    s.bridge.block_store(async move {
        let c = sh.conn("reading a public key").await?;
        let stmt = c
            .prepare_cached("SELECT public_key FROM users WHERE name = $1")
            .await
            .map_err(|e| sh.pg("reading a public key", e))?;
        let row = c
            .query_opt(&stmt, &[&name])
            .await
            .map_err(|e| sh.pg("reading a public key", e))?;
        row.map(|r| key32(r.get(0))).transpose()
    })
}

pub(crate) fn xzibit(s: &PgStore, name: &str) -> Result<Option<Vec<u8>>> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    s.bridge.block_store(async move {
        let c = sh.conn("reading an xzibit").await?;
        let row = c
            .query_opt("SELECT xzibit FROM users WHERE name = $1", &[&name])
            .await
            .map_err(|e| sh.pg("reading an xzibit", e))?;
        Ok(row.map(|r| r.get(0)))
    })
}

pub(crate) fn add(s: &PgStore, user: &UserRecord) -> Result<()> {
    ensure_path_safe(&user.name)?;
    let (sh, u) = (s.shared.clone(), user.clone());
    s.bridge.block_store(async move {
        let c = sh.conn("adding a user").await?;
        let r = c
            .execute(
                "INSERT INTO users (name, public_key, xzibit, created) VALUES ($1, $2, $3, $4)",
                &[&u.name, &&u.public_key[..], &u.xzibit, &i64_of(u.created)],
            )
            .await;
        match r {
            Ok(_) => {
                sh.mark_ok();
                Ok(())
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::AlreadyExists)
            }
            Err(e) => Err(sh.pg("adding a user", e)),
        }
    })
}

pub(crate) fn remove(s: &PgStore, name: &str) -> Result<bool> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    s.bridge.block_store(async move {
        let c = sh.conn("removing a user").await?;
        let n = c
            .execute("DELETE FROM users WHERE name = $1", &[&name])
            .await
            .map_err(|e| sh.pg("removing a user", e))?;
        sh.mark_ok();
        Ok(n > 0)
    })
}

pub(crate) fn list(s: &PgStore) -> Result<Vec<UserRecord>> {
    let sh = s.shared.clone();
    s.bridge.block_store(async move {
        let c = sh.conn("listing users").await?;
        // Byte order, as the embedded store sorts, whatever the database's collation.
        let rows = c
            .query(
                "SELECT name, public_key, xzibit, created FROM users ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(|e| sh.pg("listing users", e))?;
        rows.iter()
            .map(|r| {
                Ok(UserRecord {
                    name: r.get(0),
                    public_key: key32(r.get(1))?,
                    xzibit: r.get(2),
                    created: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                })
            })
            .collect()
    })
}

pub(crate) fn opaque_login(s: &PgStore, name: &str) -> Result<Option<Vec<u8>>> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    s.bridge.block_store(async move {
        let c = sh.conn("reading an OPAQUE login").await?;
        let row = c
            .query_opt("SELECT opaque_login FROM users WHERE name = $1", &[&name])
            .await
            .map_err(|e| sh.pg("reading an OPAQUE login", e))?;
        Ok(row.and_then(|r| r.get(0)))
    })
}

/// One UPDATE: the record and (on a password change) the xzibit change together.
pub(crate) fn set_opaque_login(
    s: &PgStore,
    name: &str,
    login: &[u8],
    xzibit: Option<&[u8]>,
) -> Result<bool> {
    ensure_path_safe(name)?;
    let (sh, name) = (s.shared.clone(), name.to_owned());
    let (login, xzibit) = (login.to_vec(), xzibit.map(<[u8]>::to_vec));
    s.bridge.block_store(async move {
        let c = sh.conn("storing an OPAQUE login").await?;
        let n = c
            .execute(
                "UPDATE users SET opaque_login = $2, xzibit = COALESCE($3, xzibit) \
                 WHERE name = $1",
                &[&name, &login, &xzibit],
            )
            .await
            .map_err(|e| sh.pg("storing an OPAQUE login", e))?;
        sh.mark_ok();
        Ok(n > 0)
    })
}
