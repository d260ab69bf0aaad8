//! Commit rate of 10 KiB messages (1 and 32 concurrent deliveries, with messages per
//! fsync) and `public_key` lookups per second.
//!
//! `cargo bench -p cmtp-store --bench store`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cmtp_store::{
    Delivery, FsUsers, LogMail, MailStore, MessageMeta, Options, UserRecord, UserStore,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn meta() -> MessageMeta {
    MessageMeta {
        mailbox: "bob".into(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 0,
        body_end: 100,
        note: Vec::new(),
        relay_id: None,
    }
}

/// Commits `total` 10 KiB messages from `conns` concurrent deliveries; returns the time.
async fn run(store: &Arc<LogMail>, conns: u64, total: u64) -> Duration {
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (store, left) = (store.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            let data = vec![0x5a; 10 * 1024];
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let mut d = store.begin();
                // As the server would: the message arrives in a few reads.
                for c in data.chunks(4096) {
                    d.write(c).await.unwrap();
                }
                d.commit(meta()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn commits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("commit_10KiB");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for conns in [1u64, 32] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LogMail::open(dir.path(), Options::default()).unwrap());
        g.bench_function(format!("{conns}_concurrent"), |b| {
            b.iter_custom(|iters| rt.block_on(run(&store, conns, iters)))
        });
        let m = store.metrics();
        eprintln!(
            "commit_10KiB/{conns}_concurrent: {} messages in {} group commits = {:.1} messages per log fsync; mean fsync {:.0} us",
            m.records,
            m.batches,
            m.records as f64 / m.batches.max(1) as f64,
            m.fsync_total_us as f64 / m.fsyncs.max(1) as f64
        );
    }
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let users = FsUsers::open(dir.path()).unwrap();
    for i in 0..1000u32 {
        let name = format!("user{i}");
        users
            .add(&UserRecord {
                name,
                public_key: [i as u8; 32],
                xzibit: vec![1; 200],
                created: 1,
            })
            .unwrap();
    }
    let mut g = c.benchmark_group("users");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut i = 0u32;
    g.bench_function("public_key", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            users.public_key(&format!("user{i}")).unwrap().unwrap()
        })
    });
    g.bench_function("public_key_missing", |b| {
        b.iter(|| users.public_key("nobody").unwrap())
    });
    g.finish();
}

criterion_group!(benches, commits, lookups);
criterion_main!(benches);
