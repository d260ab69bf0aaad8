//! Versioned migrations: plain SQL files compiled in, applied in order inside one
//! transaction each, recorded in `schema_version`.

use deadpool_postgres::Pool;

use crate::PgError;
use crate::state::{chain, unix_now};

/// The migrations, in order; version N is the N-th (1-based).
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_extensions.sql"),
    include_str!("../migrations/0003_leases.sql"),
];

/// The schema version this build reads and writes.
pub const LATEST_VERSION: i32 = MIGRATIONS.len() as i32;

/// Any constant: the advisory lock that makes concurrent `migrate` calls take turns.
const MIGRATE_LOCK: i64 = 0x636d_7470_6d69_6772; // "cmtpmigr"

/// What [`crate::migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Version before (0 = an empty database).
    pub from: i32,
    /// Version after (= [`LATEST_VERSION`]).
    pub to: i32,
}

fn db(e: impl std::error::Error + 'static) -> PgError {
    PgError::Database(chain(&e))
}

/// Applies the missing migrations; refuses a schema newer than this build.
pub(crate) async fn migrate(pool: &Pool) -> Result<MigrateReport, PgError> {
    let mut client = pool.get().await.map_err(db)?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied bigint  NOT NULL
         )",
    )
    .await
    .map_err(db)?;
    let from: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(db)?
        .get(0);
    if from > LATEST_VERSION {
        return Err(PgError::SchemaTooNew {
            found: from,
            expected: LATEST_VERSION,
        });
    }
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql)
            .await
            .map_err(|e| PgError::Database(format!("migration {version}: {}", chain(&e))))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES ($1, $2)",
            &[&version, &now],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(MigrateReport {
        from,
        to: LATEST_VERSION,
    })
}

/// Checks that the database holds exactly the schema this build knows.
pub(crate) async fn check(pool: &Pool) -> Result<(), PgError> {
    let client = pool.get().await.map_err(db)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(db)?
        .get(0);
    if !exists {
        return Err(PgError::SchemaMissing);
    }
    let found: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(db)?
        .get(0);
    match found {
        0 => Err(PgError::SchemaMissing),
        f if f < LATEST_VERSION => Err(PgError::SchemaOutdated {
            found: f,
            expected: LATEST_VERSION,
        }),
        f if f > LATEST_VERSION => Err(PgError::SchemaTooNew {
            found: f,
            expected: LATEST_VERSION,
        }),
        _ => Ok(()),
    }
}
