//! One large message through the PostgreSQL backend: the process's memory while it is
//! written and read back (constant: one 256 KiB chunk), and the database's size after
//! storing it, deleting it, vacuuming, and storing it again (space reused, not grown):
//!
//! ```text
//! cargo run -p cmtp-store-pg --example large -- [MIB]
//! ```

use std::time::Instant;

use cmtp_store::{Delivery, MailStore, MessageRead};
use cmtp_store_pg::{PgOptions, PgStore, migrate};
use cmtp_testkit::store_suite::meta;
use cmtp_testkit::{PgCluster, noise};

/// Bytes per write, as a connection hands them over.
const WRITE: usize = 64 * 1024;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

async fn store_one(store: &PgStore, total: usize, piece: &[u8]) -> (u64, f64) {
    let mut peak: f64 = 0.0;
    let mut d = store.begin();
    let mut written = 0;
    while written < total {
        d.write(piece).await.unwrap();
        written += piece.len();
        if (written / WRITE).is_multiple_of(256) {
            peak = peak.max(rss_mib());
        }
    }
    let id = d.commit(meta("bob")).await.unwrap();
    (id, peak.max(rss_mib()))
}

fn main() {
    let total_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let total = total_mib * 1024 * 1024;
    let cluster = PgCluster::start();
    let url = cluster.database("large");
    let db = url.rsplit('/').next().unwrap().to_owned();
    migrate(&url).unwrap();
    let store = PgStore::connect(&url, PgOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let piece = noise(WRITE, 7);
    let size0 = store.database_size().unwrap();
    println!(
        "empty database: {:.1} MiB; process RSS {:.1} MiB",
        mib(size0),
        rss_mib()
    );
    rt.block_on(async {
        let t = Instant::now();
        let (id, peak) = store_one(&store, total, &piece).await;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "stored {total_mib} MiB in {secs:.1} s ({:.0} MiB/s); peak RSS while writing {peak:.1} MiB; database {:.1} MiB",
            total_mib as f64 / secs,
            mib(store.database_size().unwrap())
        );
        let t = Instant::now();
        let (_, mut r) = store.open("bob", id).await.unwrap().unwrap();
        let mut peak: f64 = 0.0;
        let mut read = 0usize;
        let mut n = 0u64;
        while let Some(c) = r.read_chunk(WRITE).await.unwrap() {
            assert_eq!(c, piece[..c.len()], "bytes differ at offset {read}");
            read += c.len();
            n += 1;
            if n.is_multiple_of(256) {
                peak = peak.max(rss_mib());
            }
        }
        assert_eq!(read, total);
        println!(
            "read back {total_mib} MiB byte for byte in {:.1} s; peak RSS while reading {peak:.1} MiB",
            t.elapsed().as_secs_f64()
        );
        assert!(store.delete("bob", id).await.unwrap());
        println!(
            "deleted: database {:.1} MiB before vacuum",
            mib(store.database_size().unwrap())
        );
        cluster.psql(&db, "VACUUM message_chunks");
        println!(
            "after VACUUM message_chunks: database {:.1} MiB",
            mib(store.database_size().unwrap())
        );
        store_one(&store, total, &piece).await;
        println!(
            "stored {total_mib} MiB again: database {:.1} MiB",
            mib(store.database_size().unwrap())
        );
    });
}
