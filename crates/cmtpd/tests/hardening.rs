//! The hardening suite (tests/suite/hardening.rs, and hardening_admin.rs with the tests
//! that run admin commands) on the embedded store. tests/suite_pg.rs runs the same
//! suite on PostgreSQL.

use cmtp_testkit::*;

/// The backend the shared suite runs on in this target.
const BACKEND: Backend = Backend::Embedded;

#[path = "suite/hardening.rs"]
mod hardening;

#[path = "suite/hardening_admin.rs"]
mod hardening_admin;
