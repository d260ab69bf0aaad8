//! The `cmtp` binary as a child process, isolated from the caller's environment.

use std::path::Path;
use std::process::Command;

use crate::bins::cmtp_bin;
use crate::process::{Out, run};

/// A `cmtp --profile PROFILE` command with HOME set to `home` and no other variable of
/// the caller's environment but PATH (so no CMTP_* setting leaks in); CMTP_TIMEOUT=20.
pub fn cmtp_cmd(home: &Path, profile: &Path) -> Command {
    let mut c = Command::new(cmtp_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CMTP_TIMEOUT", "20")
        .arg("--profile")
        .arg(profile);
    c
}

/// Runs `cmtp --profile PROFILE ARGS` (see [`cmtp_cmd`]) with `stdin`.
pub fn cmtp(home: &Path, profile: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = cmtp_cmd(home, profile);
    c.args(args);
    run(c, stdin)
}
