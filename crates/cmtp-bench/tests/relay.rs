//! `relay` against two real cmtpd servers in-process (A relays to B over loopback,
//! fresh data directories, real fsync): plain MAIL from a trusted network and signed
//! SUBMIT, the latency run, and a drain with B started only once A has deferred all.

use cmtp_bench::relay::submit::Submission;
use cmtp_bench::relay::{self, RelayConfig, Side};
use cmtp_crypto::{KeyPair, Xzibit};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Running {
    addr: SocketAddr,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn config(dir: &std::path::Path, domain: &str, listen: SocketAddr) -> cmtpd::Config {
    let mut cfg = cmtpd::Config {
        data_dir: dir.to_path_buf(),
        domains: vec![domain.into()],
        listen: vec![listen],
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    cfg.rate.commands_per_sec = 0;
    cfg.rate.mail_per_sec = 0;
    cfg.rate.mailbox_mail_per_sec = 0;
    // Never the machine's resolver: routes are static, DNS a closed loopback port.
    cfg.federation.dns = Some("127.0.0.1:1".parse().unwrap());
    cfg.federation.retry_secs = vec![1];
    cfg.federation.connect_timeout_secs = 2;
    cfg
}

fn start(cfg: cmtpd::Config) -> Running {
    let server = cmtpd::Server::bind(cfg).unwrap();
    let addr = server.local_addrs()[0];
    let metrics = server.metrics_addr().expect("metrics on");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        metrics,
        stop: Some(tx),
        task,
    }
}

/// A loopback port nothing listens on (bound, then released).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// B (b.test, user bob) and A (a.test, user alice with a known key, route to
/// `b_addr`, trusting 127.0.0.0/8). B is started only when `start_b`.
struct Pair {
    a: Running,
    b: Option<Running>,
    b_cfg: cmtpd::Config,
    alice: Arc<KeyPair>,
    key_file: std::path::PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

fn pair(start_b: bool) -> Pair {
    let (da, db, keys) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let b_addr = free_addr();
    let b_cfg = config(db.path(), "b.test", b_addr);
    cmtpd::admin::user_add(
        &cmtpd::admin::Embedded::new(db.path()),
        db.path(),
        "bob",
        b"pw",
        true,
    )
    .unwrap();
    let alice = KeyPair::generate().unwrap();
    let (pk, xz, sk) = (
        keys.path().join("public.key"),
        keys.path().join("alice.xzibit"),
        keys.path().join("secret.key"),
    );
    std::fs::write(&pk, alice.public().as_bytes()).unwrap();
    std::fs::write(&xz, Xzibit::create_v1(&alice, b"pw").unwrap().as_bytes()).unwrap();
    std::fs::write(&sk, hex::encode(&alice.secret_bytes()[..])).unwrap();
    cmtpd::admin::user_import(&cmtpd::admin::Embedded::new(da.path()), "alice", &pk, &xz).unwrap();
    let mut a_cfg = config(da.path(), "a.test", "127.0.0.1:0".parse().unwrap());
    a_cfg
        .federation
        .routes
        .insert("b.test".into(), b_addr.to_string());
    a_cfg.federation.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let b = start_b.then(|| start(b_cfg.clone()));
    Pair {
        a: start(a_cfg),
        b,
        b_cfg,
        alice: Arc::new(alice),
        key_file: sk,
        _dirs: vec![da, db, keys],
    }
}

impl Pair {
    fn relay_config(&self, how: Submission, connections: usize) -> RelayConfig {
        let from = match how {
            Submission::Mail => ("app", "a.test"),
            Submission::Submit(_) => ("alice", "a.test"),
        };
        RelayConfig {
            server: self.a.addr,
            a: Side {
                metrics: Some(self.a.metrics),
                pid: Some(std::process::id()),
            },
            b: Side {
                metrics: self.b.as_ref().map(|b| b.metrics),
                pid: None,
            },
            how,
            from: (from.0.into(), from.1.into()),
            to: ("bob".into(), "b.test".into()),
            size: 4096,
            connections,
            timeout: Duration::from_secs(30),
            complete_timeout: Duration::from_secs(60),
        }
    }

    async fn stop(self) {
        self.a.stop().await;
        if let Some(b) = self.b {
            b.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_latency_through_two_servers() {
    let p = pair(true);
    // The key file as `cmtp login --remember` writes it (hex) gives alice's key back.
    let key = cmtp_bench::relay::submit::read_secret_key(&p.key_file).unwrap();
    assert_eq!(key.public(), p.alice.public());

    for how in [Submission::Mail, Submission::Submit(p.alice.clone())] {
        let name = how.name();
        let r = relay::rate(&p.relay_config(how, 4), Some(60), None)
            .await
            .unwrap();
        assert_eq!((r.ok, r.failures), (60, 0), "{name}: {:?}", r.errors);
        // Every message reached B, counted by B itself.
        assert_eq!(r.b_stored, Some(60.0), "{name}");
        assert_eq!(r.a_metrics_delta.get(relay::A_DELIVERED), Some(&60.0));
        assert!(r.e2e_seconds >= r.submit_seconds && r.e2e_per_sec > 0.0);
    }

    let lat = relay::latency::latency(&p.relay_config(Submission::Mail, 1), 10, 2)
        .await
        .unwrap();
    assert_eq!(lat.messages, 10);
    assert!(lat.relay.p50_ms > 0.0 && lat.relay.p99_ms >= lat.relay.p50_ms);
    assert!(lat.poll.p50_ms > 0.0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_after_b_comes_up() {
    let mut p = pair(false);
    let flag = p._dirs[2].path().join("b-is-up");
    // The "start B" command waits for the test to have started B (polling a file with
    // a deadline), as relay.sh's command waits for B's ready file.
    let cmd: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "i=0; until [ -f '{}' ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done",
            flag.display()
        ),
    ];
    let cfg = p.relay_config(Submission::Mail, 2);
    let run = tokio::spawn(async move { relay::drain::drain(&cfg, 40, &cmd).await });
    // B starts once A has deferred every message (B was down).
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay::read_sample(p.a.metrics, relay::A_DEFERRED)
        .await
        .unwrap()
        < 40.0
    {
        assert!(Instant::now() < deadline, "A never deferred 40 messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.b = Some(start(p.b_cfg.clone()));
    std::fs::write(&flag, b"").unwrap();
    let r = run.await.unwrap().unwrap();
    assert_eq!((r.queued, r.failures), (40, 0), "{:?}", r.errors);
    assert!(r.depth_before >= 40.0, "{r:?}");
    assert!(r.samples >= 1 && r.rss_peak >= r.rss_start && r.rss_start > 0);
    assert!(r.drain_per_sec > 0.0);
    assert_eq!(
        relay::read_sample(p.b.as_ref().unwrap().metrics, relay::B_STORED)
            .await
            .unwrap(),
        40.0
    );
    p.stop().await;
}
