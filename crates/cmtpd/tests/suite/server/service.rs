//! The service around the commands: connections, rate and connection limits, idle
//! timeouts, metrics and health, SIGTERM and restart, logs without secrets.

use std::time::Duration;

use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_testkit::*;

use crate::BACKEND;

#[test]
fn disconnect_without_obai_frees_everything() {
    let srv = TestServer::on(BACKEND);
    let clients: Vec<Client> = (0..20).map(|_| srv.client()).collect();
    wait_until("20 open connections", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 20
    });
    drop(clients);
    wait_until("connections to close", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    // Half a command, then gone.
    {
        let mut c = srv.client();
        c.send(b"KEYREQUEST\0ali");
    }
    wait_until("connections to close", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    assert_eq!(srv.metric("cmtpd_connections_total"), 21);
}

#[test]
fn login_rate_limit_answers_failure_and_keeps_the_connection() {
    let srv = TestServer::start_with(Opts {
        // Loopback is exempt from per-address limits by default; these tests need them.
        config: "[limits]\nexempt_networks = []\n[rate]\nlogin_per_sec = 1\nlogin_burst = 3\nkeyrequest_per_sec = 1\nkeyrequest_burst = 2\n"
            .into(),
        ..Opts::on(BACKEND)
    });
    srv.add_user("jo", "pw");
    let mut c = srv.client();
    c.send(&b"LOGIN\0jo\0".repeat(10));
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..10 {
        let v = c.read_n(4);
        if v == *b"FAIL" {
            let rest = c.read_n(4);
            assert_eq!(&rest, b"URE\0");
            let sig = c.read_n(65);
            c.verify(b"FAILURE", &sig[..64]);
            refused += 1;
        } else {
            assert_eq!(v, [0, 0, 0, 1]);
            let len = u32::from_be_bytes(c.read_n(4).try_into().unwrap()) as usize;
            c.read_n(len + 64);
            ok += 1;
        }
    }
    assert!((3..=4).contains(&ok), "ok={ok}");
    assert_eq!(ok + refused, 10);
    // Another connection from the same IP shares the bucket.
    let mut c2 = srv.client();
    c2.send(b"KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0KEYREQUEST\0jo\0\0");
    c2.key_reply();
    c2.key_reply();
    let mut failures = 0;
    for _ in 0..2 {
        if c2.status() == "FAILURE" {
            failures += 1;
        }
    }
    assert!(failures >= 1);
    // The server key and NOOP are not limited by these buckets.
    c2.send(b"KEYREQUEST\0\0NOOP\0");
    c2.key_reply();
    assert_eq!(c2.general(), "SUCCESS");
    assert!(srv.metric("cmtpd_failures_total{reason=\"rate_limited\"}") >= 7);
}

#[test]
fn connection_limits_answer_failure() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections_per_ip = 3\nexempt_networks = []\n".into(),
        ..Opts::on(BACKEND)
    });
    let held: Vec<Client> = (0..3).map(|_| srv.client()).collect();
    let mut extra = srv.client(); // the greeting comes first (a busy CMTP server)
    assert_eq!(extra.general(), "FAILURE");
    extra.expect_eof();
    drop(held);
    wait_until("slots to free", Duration::from_secs(20), || {
        srv.metric("cmtpd_connections_open") == 0
    });
    let mut c = srv.client();
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");

    let srv = TestServer::start_with(Opts {
        config: "[limits]\nmax_connections = 2\n".into(),
        ..Opts::on(BACKEND)
    });
    let _held: Vec<Client> = (0..2).map(|_| srv.client()).collect();
    let mut extra = srv.client(); // the greeting comes first (a busy CMTP server)
    assert_eq!(extra.general(), "FAILURE");
    extra.expect_eof();
    assert!(srv.metric("cmtpd_failures_total{reason=\"connection_limit\"}") >= 1);
}

#[test]
fn idle_connections_time_out() {
    let srv = TestServer::start_with(Opts {
        config: "[limits]\nidle_timeout_secs = 1\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = srv.client();
    c.send(b"NOOP\0");
    assert_eq!(c.general(), "SUCCESS");
    // The server closes the silent connection (EOF arrives, the read does not hang).
    c.expect_eof();
    // Stalled in the middle of a message: FAILURE, then close; nothing stored.
    let lu = srv.add_user("lu", "pw");
    let mut c = srv.client();
    let m = message(0, ("lu", ""), ("x", "y"), b"", &[1; 5000], &[]);
    c.send(b"MAIL\0");
    c.send(&m[..3000]);
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    // Half a command word: FAILURE too.
    let mut c = srv.client();
    c.send(b"KEYREQ");
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"idle_timeout\"}"),
        3
    );
    let mut c = srv.client();
    let l = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("lu", now()),
            &lu,
            "localhost",
        )
        .unwrap();
    assert_eq!(l, 0u32.to_be_bytes());
}

#[test]
fn metrics_and_health_endpoints() {
    let srv = TestServer::on(BACKEND);
    let (status, body) = srv.http_get("/health");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(body, "ok");
    let (status, _) = srv.http_get("/nope");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
    let mut c = srv.client();
    c.send(b"NOOP\0NOOP\0");
    c.general();
    c.general();
    let (_, m) = srv.http_get("/metrics");
    assert!(
        m.contains("cmtpd_commands_total{command=\"NOOP\"} 2\n"),
        "{m}"
    );
    assert!(m.contains("# TYPE cmtpd_store_fsync_seconds histogram"));
    assert!(m.contains("cmtpd_bytes_in_total 10\n"), "{m}");
    assert!(srv.metric("cmtpd_bytes_out_total") >= 2 * 73);
}

#[test]
fn sigterm_is_graceful_and_restart_binds_at_once() {
    let mut srv = TestServer::on(BACKEND);
    let kim = srv.add_user("kim", "pw");
    let addr = srv.addr;
    // A delivery in flight when SIGTERM arrives completes.
    let m = message(0, ("kim", ""), ("x", "y"), b"", &[5; 300_000], &[]);
    let mut c = srv.client();
    c.send(b"MAIL\0");
    c.send(&m[..100_000]);
    let mut idle = srv.client();
    srv.signal(libc::SIGTERM);
    // Shutdown has begun once the listener is gone (connections are refused).
    wait_until("the listener to close", Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_err()
    });
    c.send(&m[100_000..]);
    assert_eq!(c.status(), "SUCCESS");
    // An idle connection is closed by the shutdown.
    idle.expect_eof();
    drop(c);
    let st = srv.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    // Immediate restart on the same port and data.
    srv.restart();
    assert_eq!(srv.addr, addr);
    let mut c = srv.client();
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("kim", now()),
            &kim,
            "localhost",
        )
        .unwrap();
    assert_eq!(cmtp_proto::mbox::decode_list(&list, 9).unwrap().len(), 1);
    srv.signal(libc::SIGINT);
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn logs_never_show_secrets_or_bodies_and_json_lines_parse() {
    let mut srv = TestServer::start_with(Opts {
        global_args: vec!["--log-format".into(), "json".into()],
        // Everything, even the database client's statements when asked for by name.
        rust_log: Some("trace,tokio_postgres=trace,tokio_postgres::query=trace".into()),
        ..Opts::on(BACKEND)
    });
    let data = srv.data.clone();
    srv.add_user("mia", "hunter2");
    let mut c = srv.client();
    let marker = b"BODY-MARKER-7f3a";
    assert_eq!(
        c.mail(&message(0, ("mia", ""), ("x", "y"), b"", marker, &[])),
        "SUCCESS"
    );
    c.send(b"LOGIN\0mia\0");
    let xz = c.login_reply().unwrap();
    c.send(b"FOO\0");
    assert_eq!(c.general(), "FAILURE");
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(Duration::from_secs(30)).success());
    let log = std::fs::read_to_string(&srv.log).unwrap();
    let sk = std::fs::read(data.join("server.key")).unwrap();
    assert!(!log.contains("BODY-MARKER"), "a body reached the log");
    // Nor in the forms a debug print of bytes takes (hex, a list of numbers).
    let as_list = format!("{:?}", &marker[..]);
    for (form, text) in [
        ("a list of bytes", &as_list[1..as_list.len() - 1]),
        ("hex", &hex::encode(marker)),
    ] {
        let line = log.lines().find(|l| l.contains(text));
        assert!(
            line.is_none(),
            "a body reached the log as {form}: {}",
            &line.unwrap_or_default()[..300.min(line.unwrap_or_default().len())]
        );
    }
    assert!(
        !log.contains(&hex::encode(&sk[..32])),
        "the server secret reached the log"
    );
    assert!(
        !log.contains(&hex::encode(&xz[4..40])),
        "an xzibit reached the log"
    );
    assert!(!log.contains("hunter2"));
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        assert!(v.get("level").is_some());
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(log.contains("framing error"));
}
