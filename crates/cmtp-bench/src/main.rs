//! `cmtp-bench` binary: parses the command line and runs it on a tokio runtime.

use clap::Parser;
use cmtp_bench::cli::{Cli, run};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = if matches!(cli.command, cmtp_bench::cli::Command::Limits(_)) {
        // The TCP ceiling needs both sides on both cores.
        cli.threads.max(2)
    } else {
        cli.threads.max(1)
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(cli))
}
