//! `limits` on a tiny budget: real files with fdatasync, real loopback TCP.

use cmtp_bench::limits::{LimitsConfig, run};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_reports_positive_rates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LimitsConfig {
        dir: dir.path().to_path_buf(),
        record_size: 1024,
        fsync_duration: Duration::from_millis(100),
        fsync_threads: vec![1, 2],
        tcp_duration: Duration::from_millis(100),
        tcp_streams: vec![1, 3],
        seq_size: 1 << 20,
    };
    let r = run(&cfg).await.unwrap();
    assert_eq!(r.fsync.len(), 4, "append and overwrite, 1 and 2 threads");
    assert_eq!(r.tcp.len(), 2);
    for f in &r.fsync {
        assert!(
            f.ops >= 1 && f.ops_per_sec > 0.0 && f.mb_per_sec > 0.0,
            "{f:?}"
        );
        assert!(f.p50_ms > 0.0 && f.p99_ms >= f.p50_ms, "{f:?}");
    }
    assert_eq!((r.fsync[0].threads, r.fsync[1].threads), (1, 2));
    use cmtp_bench::limits::FsyncMode;
    assert_eq!(
        (r.fsync[0].mode, r.fsync[3].mode),
        (FsyncMode::Append, FsyncMode::Overwrite)
    );
    for t in &r.tcp {
        assert!(
            t.bytes > 0 && t.mb_per_sec > 0.0 && t.gbit_per_sec > 0.0,
            "{t:?}"
        );
    }
    assert_eq!((r.tcp[0].streams, r.tcp[1].streams), (1, 3));
    let s = r.seq.as_ref().expect("sequential write measured");
    assert!(
        s.bytes == 1 << 20 && s.mb_per_sec > 0.0 && s.write_mb_per_sec >= s.mb_per_sec,
        "{s:?}"
    );
    // The fdatasync files are removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn limits_binary_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cmtp-bench"))
        .args([
            "--json",
            "limits",
            "--record-size",
            "1k",
            "--fsync-seconds",
            "0.05",
        ])
        .args([
            "--tcp-seconds",
            "0.05",
            "--fsync-threads",
            "1",
            "--tcp-streams",
            "2",
            "--seq-size",
            "256k",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fsync"][0]["record_size"], 1024);
    assert!(v["fsync"][0]["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["tcp"][0]["streams"], 2);
    assert!(v["tcp"][0]["mb_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["seq"]["bytes"], 256 * 1024);
}
