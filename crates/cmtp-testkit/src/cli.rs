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

/// `cmtp login ADDRESS --server SERVER --password-stdin [--remember]` with `password` on
/// standard input, in the profile `profile` (asserts success).
pub fn login(
    home: &Path,
    profile: &Path,
    address: &str,
    server: &str,
    password: &str,
    remember: bool,
) {
    let mut args = vec!["login", address, "--server", server, "--password-stdin"];
    if remember {
        args.push("--remember");
    }
    cmtp(home, profile, &args, format!("{password}\n").as_bytes()).ok();
}
