//! Every load mode against a real cmtpd (in-process, on 127.0.0.1:0, fresh data
//! directory, real fsync): counts must add up exactly, and nothing may fail.

use cmtp_bench::load::{self, KeyConfig, MailConfig, Stop, Target};
use cmtp_bench::spike;
use std::net::SocketAddr;
use std::time::Duration;

struct Running {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cmtpd::Config {
        data_dir: dir.path().to_path_buf(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    cfg.limits.max_message_size = 64 << 20;
    // The idle test opens 200 connections from one address.
    cfg.limits.max_connections_per_ip = 1000;
    cfg.rate.commands_per_sec = 0;
    cfg.rate.keyrequest_per_sec = 0;
    // Every load goes to the postmaster's mailbox: on a fast machine the timed run alone
    // sends more than the per-mailbox burst (2,000), and the test is about the load
    // modes, not that limit (tests/abuse.rs in cmtpd has it).
    cfg.rate.mailbox_mail_per_sec = 0;
    let server = cmtpd::Server::bind(cfg).unwrap();
    let addr = server.local_addrs()[0];
    let metrics = server.metrics_addr();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

impl Running {
    fn target(&self) -> Target {
        Target {
            server: self.addr,
            server_pid: Some(std::process::id()),
            metrics: self.metrics,
            timeout: Duration::from_secs(30),
            tls: false,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_against_cmtpd() {
    let srv = start();

    let mail = MailConfig {
        target: srv.target(),
        connections: 4,
        size: 10 * 1024,
        stop: Stop::Count(101),
        to: String::new(),
        domain: String::new(),
    };
    let r = load::mail(&mail).await.unwrap();
    assert_eq!((r.ok, r.failures), (101, 0), "{:?}", r.errors);
    assert!(r.per_sec > 0.0 && r.mb_per_sec > 0.0);
    assert!(r.latency.p50_ms > 0.0 && r.latency.p99_ms >= r.latency.p50_ms);
    let delta = r.server_side.metrics_delta.as_ref().expect("metrics read");
    assert_eq!(
        delta.get("cmtpd_deliveries_total{result=\"ok\"}"),
        Some(&101.0),
        "{delta:?}"
    );

    // A destination that does not exist is refused (DELIVERYFAILURE), counted, not hung.
    let refused = MailConfig {
        to: "nobody-here".into(),
        stop: Stop::Count(3),
        ..mail.clone()
    };
    let r = load::mail(&refused).await.unwrap();
    assert_eq!((r.ok, r.failures), (0, 3));
    assert!(
        r.errors.iter().any(|e| e.contains("DELIVERYFAILURE")),
        "{:?}",
        r.errors
    );

    // Time-bounded runs stop by themselves.
    let timed = MailConfig {
        stop: Stop::Duration(Duration::from_millis(200)),
        ..mail.clone()
    };
    let r = load::mail(&timed).await.unwrap();
    assert!(r.ok > 0 && r.failures == 0 && r.seconds < 30.0, "{r:?}");

    let key = KeyConfig {
        target: srv.target(),
        connections: 3,
        window: 64,
        stop: Stop::Count(1000),
        user: String::new(),
    };
    let r = load::keyrequest(&key).await.unwrap();
    assert_eq!((r.ok, r.failures), (1000, 0), "{:?}", r.errors);

    let r = load::idle(
        srv.addr,
        200,
        std::process::id(),
        32,
        Duration::from_secs(30),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.opened, 200, "{:?}", r.errors);
    assert!(r.rss_idle > 0);

    // The same over TLS (`--tls`): every connection upgraded with TLSSTART.
    let r = load::idle(
        srv.addr,
        50,
        std::process::id(),
        8,
        Duration::from_secs(30),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.opened, 50, "{:?}", r.errors);
    let tls_mail = MailConfig {
        target: Target {
            tls: true,
            ..srv.target()
        },
        stop: Stop::Count(40),
        ..mail.clone()
    };
    let r = load::mail(&tls_mail).await.unwrap();
    assert_eq!((r.ok, r.failures), (40, 0), "{:?}", r.errors);
    // One upgrade per connection: the 50 idle ones and the 4 of the MAIL run.
    let m = cmtp_bench::metrics::fetch(srv.metrics.unwrap())
        .await
        .unwrap();
    assert_eq!(
        m.get("cmtpd_commands_total{command=\"TLSSTART\"}"),
        Some(&54.0)
    );

    let big = MailConfig {
        size: 8 << 20,
        stop: Stop::Count(1),
        connections: 1,
        ..mail
    };
    let r = load::big(&big, std::process::id()).await.unwrap();
    assert_eq!(r.reply, "SUCCESS");
    assert!(
        r.samples >= 1 && r.rss_peak >= r.rss_before && r.mb_per_sec > 0.0,
        "{r:?}"
    );

    // Over the server's 64 MiB limit: FAILURE as soon as the envelope is read, and the
    // tool reports that answer, not the broken pipe of the rest of the body.
    let over = MailConfig {
        size: 65 << 20,
        ..big
    };
    let r = load::big(&over, std::process::id()).await.unwrap();
    assert_eq!(r.reply, "FAILURE", "{r:?}");

    // `spike`, both patterns, small: every connection gets through, the server reads
    // every byte (the /metrics condition), and the figures are consistent.
    let stalled = spike::SpikeConfig {
        server: srv.addr,
        pid: std::process::id(),
        metrics: srv.metrics,
        connections: 20,
        pattern: spike::Pattern::Stalled {
            announce: 1 << 20,
            send: 100 * 1024,
        },
        parallel: 8,
        timeout: Duration::from_secs(30),
        settle: Duration::from_secs(20),
        window: Duration::from_millis(200),
    };
    let r = spike::spike(&stalled).await.unwrap();
    assert_eq!(r.opened, vec![20], "{r:?}");
    assert!(r.errors.is_empty() && r.settled, "{r:?}");
    // VmHWM is updated lazily by the kernel, so it may lag a sampled VmRSS: no order
    // between the two is asserted.
    assert!(
        r.rss_peak >= r.rss_loaded && r.rss_peak >= r.rss_after && r.hwm_peak > 0,
        "{r:?}"
    );
    let rounds = spike::SpikeConfig {
        connections: 50,
        pattern: spike::Pattern::Rounds { rounds: 2 },
        ..stalled.clone()
    };
    let r = spike::spike(&rounds).await.unwrap();
    assert_eq!((r.opened.clone(), r.rounds), (vec![50, 50], 2), "{r:?}");
    assert!(r.errors.is_empty() && r.settled, "{r:?}");
    // A "stalled" message that is sent whole is refused before anything is sent.
    let whole = spike::SpikeConfig {
        pattern: spike::Pattern::Stalled {
            announce: 10,
            send: 10,
        },
        ..stalled
    };
    assert!(spike::spike(&whole).await.is_err());

    srv.stop().await;
}
