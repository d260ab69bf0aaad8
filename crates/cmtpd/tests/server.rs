//! The server suite (tests/suite/server/) on the embedded store, and the server tests
//! that apply to the embedded store only. tests/suite_pg.rs runs the same suite on
//! PostgreSQL.

use cmtp_testkit::*;

/// The backend the shared suite runs on in this target.
const BACKEND: Backend = Backend::Embedded;

#[path = "suite/server/mod.rs"]
mod server;

/// Embedded only: the data directory's lock keeps a second writer out; two nodes on one
/// PostgreSQL database is what the postgres backend is for (tests/postgres.rs).
#[test]
fn second_server_on_same_data_dir_is_refused() {
    let srv = TestServer::on(BACKEND);
    let out = std::process::Command::new(cmtpd_bin())
        .arg("--data-dir")
        .arg(&srv.data)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-metrics"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
}

/// The kit finds, beside this test executable, exactly the binary cargo built for it.
#[test]
fn testkit_finds_the_cmtpd_binary_cargo_built() {
    let built = std::path::PathBuf::from(env!("CARGO_BIN_EXE_cmtpd"));
    assert_eq!(
        cmtpd_bin().canonicalize().unwrap(),
        built.canonicalize().unwrap()
    );
}
