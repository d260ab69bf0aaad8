//! The names suite (tests/suite/names.rs) on the embedded store.

use cmtp_testkit::*;

/// The backend the shared suite runs on in this target.
const BACKEND: Backend = Backend::Embedded;

#[path = "suite/names.rs"]
mod names;
