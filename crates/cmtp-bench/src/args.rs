//! Argument types and value parsers shared by the subcommands (`cli` and `relay`): a
//! module of its own so that neither has to reach into the other.

use std::time::Duration;

use clap::Args;

use crate::size::parse_size;

/// How long a run lasts: exactly one of a count or a duration.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct StopArgs {
    /// Stop after this many messages in total.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop after this many seconds (operations in flight complete).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<Duration>,
}

/// clap value parser for sizes.
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// clap value parser for durations in (fractional) seconds, 0 < s ≤ 1 day.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("invalid seconds {s:?}"))?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!("seconds must be in (0, 86400], got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}
