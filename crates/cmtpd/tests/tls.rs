//! The transport encryption suite (tests/suite/tls.rs) on the embedded store. tests/suite_pg.rs runs the same suite on PostgreSQL.

use cmtp_testkit::*;

/// The backend the shared suite runs on in this target.
const BACKEND: Backend = Backend::Embedded;

#[path = "suite/tls.rs"]
mod tls;
