//! Migrations and the schema check at open, on a real PostgreSQL.

use cmtp_store_pg::{LATEST_VERSION, MigrateReport, PgError, PgOptions, PgStore, migrate};
use cmtp_testkit::PgCluster;

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

#[test]
fn connect_refuses_a_missing_older_or_newer_schema() {
    let c = PgCluster::shared();
    let url = c.database("schema check");
    let r = PgStore::connect(&url, PgOptions::default());
    assert!(matches!(r, Err(PgError::SchemaMissing)), "{:?}", r.err());
    let msg = PgError::SchemaMissing.to_string();
    assert!(msg.contains("cmtpd db migrate"), "{msg}");

    assert_eq!(
        migrate(&url).unwrap(),
        MigrateReport {
            from: 0,
            to: LATEST_VERSION
        }
    );
    // Idempotent.
    assert_eq!(
        migrate(&url).unwrap(),
        MigrateReport {
            from: LATEST_VERSION,
            to: LATEST_VERSION
        }
    );
    PgStore::connect(&url, PgOptions::default()).unwrap();

    // A schema from a newer build: refused by both.
    c.psql(
        db_name(&url),
        &format!(
            "INSERT INTO schema_version VALUES ({}, 0)",
            LATEST_VERSION + 1
        ),
    );
    let r = PgStore::connect(&url, PgOptions::default());
    assert!(
        matches!(r, Err(PgError::SchemaTooNew { found, .. }) if found == LATEST_VERSION + 1),
        "{:?}",
        r.err()
    );
    assert!(matches!(migrate(&url), Err(PgError::SchemaTooNew { .. })));

    // An older one (here: no version rows at all but the table): refused until migrated.
    c.psql(db_name(&url), "DELETE FROM schema_version");
    let r = PgStore::connect(&url, PgOptions::default());
    assert!(matches!(r, Err(PgError::SchemaMissing)), "{:?}", r.err());
}

#[test]
fn concurrent_migrations_take_turns() {
    let url = PgCluster::shared().database("schema race");
    let reports: Vec<MigrateReport> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| migrate(&url).unwrap())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        reports.iter().filter(|r| r.from == 0).count(),
        1,
        "{reports:?}"
    );
    assert!(reports.iter().all(|r| r.to == LATEST_VERSION));
    PgStore::connect(&url, PgOptions::default()).unwrap();
}

#[test]
fn unreachable_database_and_bad_url_are_clear_errors() {
    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://cmtp@127.0.0.1:{port}/nothing");
    let r = PgStore::connect(&url, PgOptions::default());
    match r {
        Err(PgError::Database(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a database error, got {:?}", other.err()),
    }
    assert!(matches!(
        PgStore::connect("postgres://cmtp@127.0.0.1:notaport/x", PgOptions::default()),
        Err(PgError::Url(_))
    ));
    assert!(matches!(migrate(&url), Err(PgError::Database(_))));
}
