//! Argument parsing: sizes, stop conditions, loopback-only targets.

use clap::Parser;
use cmtp_bench::cli::{Cli, Command};
use std::time::Duration;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("cmtp-bench").chain(args.iter().copied()))
}

#[test]
fn mail_sizes_and_stop() {
    let cli = parse(&[
        "mail",
        "--server",
        "127.0.0.1:9",
        "-c",
        "32",
        "--size",
        "10k",
        "--seconds",
        "5",
    ])
    .unwrap();
    let Command::Mail(m) = cli.command else {
        panic!("not mail")
    };
    assert_eq!(m.size, 10 * 1024);
    assert_eq!(m.connections, 32);
    assert_eq!(m.stop.seconds, Some(Duration::from_secs(5)));
    assert_eq!(m.stop.messages, None);
    assert_eq!(m.to, "");

    let cli = parse(&[
        "--json",
        "mail",
        "--size",
        "1M",
        "--messages",
        "100",
        "--to",
        "bob",
    ])
    .unwrap();
    assert!(cli.json);
    let Command::Mail(m) = cli.command else {
        panic!("not mail")
    };
    assert_eq!(
        (m.size, m.stop.messages, m.to.as_str()),
        (1 << 20, Some(100), "bob")
    );
}

#[test]
fn mail_needs_exactly_one_stop() {
    assert!(
        parse(&["mail", "--size", "1k"]).is_err(),
        "no stop condition accepted"
    );
    assert!(
        parse(&["mail", "--messages", "1", "--seconds", "1"]).is_err(),
        "both accepted"
    );
    assert!(
        parse(&["mail", "--messages", "1", "--size", "1X"]).is_err(),
        "bad size accepted"
    );
    assert!(
        parse(&["mail", "--seconds", "0"]).is_err(),
        "zero seconds accepted"
    );
    assert!(
        parse(&["mail", "--seconds", "-3"]).is_err(),
        "negative seconds accepted"
    );
}

#[test]
fn other_modes() {
    let Command::Big(b) = parse(&["big", "--server-pid", "7"]).unwrap().command else {
        panic!()
    };
    assert_eq!((b.size, b.server_pid), (1 << 30, 7));
    let Command::Big(b) = parse(&["big", "--size", "64M", "--server-pid", "7"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(b.size, 64 << 20);
    let Command::Keyrequest(k) = parse(&["keyrequest", "--requests", "1000"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!((k.window, k.stop.requests), (64, Some(1000)));
    assert!(
        parse(&["keyrequest"]).is_err(),
        "no stop condition accepted"
    );
    let Command::Idle(i) = parse(&["idle", "-c", "10000", "--server-pid", "1"])
        .unwrap()
        .command
    else {
        panic!()
    };
    assert_eq!(i.connections, 10_000);
    assert!(
        parse(&["idle", "-c", "10"]).is_err(),
        "idle without --server-pid accepted"
    );
    let Command::Limits(l) = parse(&["limits", "--record-size", "4k"]).unwrap().command else {
        panic!()
    };
    assert_eq!(
        (l.record_size, l.fsync_threads, l.tcp_streams),
        (4096, vec![1, 4], vec![1, 8])
    );
}

#[test]
fn spike_options() {
    use cmtp_bench::cli::SpikePattern;
    let Command::Spike(s) = parse(&["spike", "--server-pid", "9"]).unwrap().command else {
        panic!("not spike")
    };
    assert_eq!(
        (s.pattern, s.connections, s.announce, s.send, s.server_pid),
        (SpikePattern::Stalled, 1000, 1 << 20, 100 * 1024, 9)
    );
    assert_eq!(s.settle_seconds, Duration::from_secs(30));
    let Command::Spike(s) = parse(&[
        "spike",
        "--server-pid",
        "9",
        "--pattern",
        "rounds",
        "-c",
        "16000",
        "--rounds",
        "5",
        "--window-seconds",
        "0.5",
    ])
    .unwrap()
    .command
    else {
        panic!("not spike")
    };
    assert_eq!(
        (s.pattern, s.connections, s.rounds, s.window_seconds),
        (SpikePattern::Rounds, 16000, 5, Duration::from_millis(500))
    );
    assert!(
        parse(&["spike"]).is_err(),
        "spike without --server-pid accepted"
    );
    assert!(
        parse(&["spike", "--server-pid", "9", "--pattern", "burst"]).is_err(),
        "unknown pattern accepted"
    );
}

#[test]
fn only_loopback_targets() {
    assert!(cmtp_bench::resolve_target("127.0.0.1:9001", false).is_ok());
    assert!(cmtp_bench::resolve_target("[::1]:9001", false).is_ok());
    assert!(cmtp_bench::resolve_target("192.0.2.1:9001", false).is_err());
    assert!(cmtp_bench::resolve_target("192.0.2.1:9001", true).is_ok());
}

#[test]
fn binary_refuses_remote_server() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cmtp-bench"))
        .args(["mail", "--server", "192.0.2.1:9001", "--messages", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[test]
fn relay_modes_and_the_start_command() {
    let base = [
        "relay",
        "--a-metrics",
        "127.0.0.1:9",
        "--to",
        "bob",
        "--domain",
        "b.test",
        "--messages",
        "100",
    ];
    let with = |extra: &[&str]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        parse(&v)
    };
    let cli = with(&["--drain", "--", "bash", "-c", "start_b --now"]).unwrap();
    let Command::Relay(r) = cli.command else {
        panic!("not relay")
    };
    assert!(r.drain && !r.latency);
    assert_eq!(r.start_b, ["bash", "-c", "start_b --now"]);
    assert_eq!(
        (r.size, r.connections, r.stop.messages),
        (10 * 1024, 1, Some(100))
    );
    assert_eq!(r.from, "cmtp-bench");
    assert!(r.submit_key.is_none());

    let cli = with(&["--latency", "--submit-key", "k", "--from", "alice"]).unwrap();
    let Command::Relay(r) = cli.command else {
        panic!("not relay")
    };
    assert!(r.latency && r.submit_key.is_some() && r.start_b.is_empty());
    assert!(
        with(&["--latency", "--drain"]).is_err(),
        "two modes at once"
    );
    assert!(
        parse(&[
            "relay",
            "--to",
            "bob",
            "--domain",
            "b.test",
            "--messages",
            "1"
        ])
        .is_err(),
        "A's metrics are required"
    );
}
