//! The server suites of tests/suite/ on the PostgreSQL backend: every test server runs
//! with `[store] backend = "postgres"` on a fresh database of this process's cluster
//! (`PgCluster::shared`), users written into the database. The same bodies run on the
//! embedded store in tests/server.rs (and the other targets named after each module).
//! Run only this backend with `cargo test -p cmtpd --test suite_pg`.

use cmtp_testkit::*;

/// The backend every suite runs on in this target.
const BACKEND: Backend = Backend::Postgres;

#[path = "suite/server/mod.rs"]
mod server;

#[path = "suite/abuse.rs"]
mod abuse;

#[path = "suite/hardening.rs"]
mod hardening;

#[path = "suite/tls.rs"]
mod tls;

#[path = "suite/opaque.rs"]
mod opaque;

#[path = "suite/names.rs"]
mod names;

#[path = "suite/hardening_admin.rs"]
mod hardening_admin;
