//! Durable delivery throughput of the PostgreSQL backend against the database's own
//! ceiling, measured in the same run on the same private cluster:
//!
//! ```text
//! cargo run --release -p cmtp-store-pg --example throughput -- [SECONDS] [CLIENTS] [SIZE] [COMMITTERS]
//! ```
//!
//! 1. `pg_test_fsync`-like ceiling: `pgbench` with CLIENTS clients, each transaction one
//!    INSERT of SIZE bytes (`synchronous_commit = on`): what PostgreSQL itself commits.
//! 2. `PgStore`: CLIENTS tasks each delivering SIZE-byte messages (write, commit) in a
//!    loop for SECONDS: messages per second, with the node's group-commit batch sizes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cmtp_store::{Delivery, MailStore};
use cmtp_store_pg::{PgOptions, PgStore, migrate};
use cmtp_testkit::store_suite::meta;
use cmtp_testkit::{PG_USER, PgCluster, noise};

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = arg(1, 10);
    let clients = arg(2, 32);
    let size = arg(3, 10 * 1024) as usize;
    let committers = arg(4, PgOptions::default().committers as u64) as usize;
    let cluster = PgCluster::start();
    let url = cluster.database("throughput");
    let db = url.rsplit('/').next().unwrap().to_owned();

    // The database's own ceiling: one INSERT of `size` bytes per transaction.
    cluster.psql(
        &db,
        "CREATE TABLE bench (id bigserial PRIMARY KEY, data bytea)",
    );
    let script = std::env::temp_dir().join(format!("cmtp-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        format!("INSERT INTO bench (data) VALUES (convert_to(repeat('x', {size}), 'UTF8'));\n"),
    )
    .unwrap();
    let out = std::process::Command::new(cluster.bin("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port().to_string(),
            "-U",
            PG_USER,
        ])
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &secs.to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .arg(&db)
        .output()
        .expect("running pgbench");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("pgbench printed no tps line");
    println!("pgbench ceiling ({clients} clients, {size} B insert per transaction): {tps}");

    migrate(&url).unwrap();
    let store = Arc::new(
        PgStore::connect(
            &url,
            PgOptions {
                committers,
                ..PgOptions::default()
            },
        )
        .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let data = Arc::new(noise(size, 1));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (store, done, stop, data) =
                (store.clone(), done.clone(), stop.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                let mailbox = format!("user{}", c % 8);
                while !stop.load(Ordering::Relaxed) {
                    let mut d = store.begin();
                    d.write(&data).await.unwrap();
                    d.commit(meta(&mailbox)).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let m = store.metrics();
    println!(
        "PgStore ({committers} committers): {n} messages of {size} B in {elapsed:.1} s = {:.0} messages/s; \
         {} commits, {:.1} messages per commit, mean COMMIT {:.2} ms",
        n as f64 / elapsed,
        m.batches,
        m.records as f64 / m.batches.max(1) as f64,
        m.fsync_total_us as f64 / m.fsyncs.max(1) as f64 / 1000.0
    );
}
