//! Where the binaries under test are: beside the test executable.

use std::path::{Path, PathBuf};

/// `target/<profile>/`: the grand-parent of the test executable (`…/deps/e2e-…`), where
/// cargo puts the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable has a grand-parent folder")
        .to_path_buf()
}

/// `bin_dir()/name`, or a panic that says which build makes it.
fn find(name: &str, package: &str) -> PathBuf {
    let p = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "the `{name}` binary {} is missing: build it first (`cargo build -p {package}`, or \
         run `cargo test --workspace`, which builds it)",
        p.display()
    );
    p
}

/// The server binary, `cmtpd`.
pub fn cmtpd_bin() -> PathBuf {
    find("cmtpd", "cmtpd")
}

/// The command-line client binary, `cmtp`.
pub fn cmtp_bin() -> PathBuf {
    find("cmtp", "cmtp-cli")
}
