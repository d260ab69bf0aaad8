//! The OPAQUE login suite (tests/suite/opaque.rs) on the embedded store.
//! tests/suite_pg.rs runs the same suite on PostgreSQL.

use cmtp_testkit::*;

/// The backend the shared suite runs on in this target.
const BACKEND: Backend = Backend::Embedded;

#[path = "suite/opaque.rs"]
mod opaque;
