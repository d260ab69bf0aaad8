//! Server benchmarks against the real binary on loopback (not a timed test: figures are
//! printed, nothing is asserted about speed).
//!
//! `cargo bench -p cmtpd --bench serve` (add `--profile dev` to skip the release build).
//! Figures: pipelined KEYREQUEST per second, 1 KiB MAIL per second (durable), and the
//! server's memory with 10,000 idle connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cmtp_testkit::*;

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn keyrequests(srv: &TestServer, conns: usize, batch: usize, secs: u64) -> f64 {
    let mut req = Vec::new();
    for _ in 0..batch {
        req.extend_from_slice(b"KEYREQUEST\0bench\0\0");
    }
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let req = req.clone();
            let addr = srv.addr;
            let key = srv.key;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, key);
                let mut buf = vec![0u8; 102 * batch];
                let mut n = 0u64;
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    c.s.write_all(&req).unwrap();
                    c.s.read_exact(&mut buf).unwrap();
                    assert_eq!(&buf[..4], &[0, 0, 0, 1]);
                    n += batch as u64;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn mails(srv: &TestServer, conns: usize, secs: u64) -> f64 {
    let m = message(1, ("bench", ""), ("x", "y"), b"\0", &[7u8; 1024], &[]);
    let mut wire = b"MAIL\0".to_vec();
    wire.extend_from_slice(&m);
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let wire = wire.clone();
            let addr = srv.addr;
            let key = srv.key;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, key);
                let mut n = 0u64;
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    c.s.write_all(&wire).unwrap();
                    assert_eq!(c.general(), "SUCCESS");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn idle(srv: &TestServer, n: usize) {
    let before = rss_kib(srv.pid());
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conns.push(s);
    }
    for s in &mut conns {
        let mut g = [0u8; 28];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g[..4], b"220 ");
    }
    let open = srv.metric("cmtpd_connections_open");
    let after = rss_kib(srv.pid());
    // Every one of them still answers.
    for s in &mut conns {
        s.write_all(b"NOOP\0").unwrap();
    }
    for s in &mut conns {
        let mut r = [0u8; 73];
        s.read_exact(&mut r).unwrap();
        assert_eq!(&r[..8], b"SUCCESS\0");
    }
    println!(
        "idle: {open} connections open; server RSS {before} KiB -> {after} KiB ({:.1} KiB per connection); all answered NOOP",
        (after.saturating_sub(before)) as f64 / n as f64
    );
}

fn main() {
    // Raise our own descriptor limit for the idle-connection run (the server's helper).
    cmtpd::server::raise_fd_limit();
    if std::env::args().any(|a| a == "--list") {
        println!("serve: bench");
        return;
    }
    let srv = TestServer::start_with(Opts {
        config: "[rate]\ncommands_per_sec = 0\nkeyrequest_per_sec = 0\n\
                 [limits]\nmax_connections_per_ip = 20000\n"
            .into(),
        ..Default::default()
    });
    srv.add_user("bench", "pw");
    for (conns, batch) in [(1, 64), (4, 64), (8, 16)] {
        let r = keyrequests(&srv, conns, batch, 3);
        println!("KEYREQUEST (user key), {conns} connections, {batch} pipelined: {r:.0}/s");
    }
    for conns in [1, 8, 32] {
        let r = mails(&srv, conns, 3);
        println!("MAIL 1 KiB durable, {conns} connections: {r:.0} msg/s");
    }
    idle(&srv, 10_000);
}
