//! `cmtpd store copy` of one large message and COUNT small ones: the copy's peak memory
//! (the child's maximum resident set, copy and verification together) and time, to show
//! that message bytes are streamed and what a message costs. Builds an embedded data
//! directory holding one message of MIB MiB (default 1024) and COUNT messages of 2 KiB
//! (default 1) in 10 mailboxes, a private PostgreSQL cluster, and runs the real binary:
//!
//! ```text
//! cargo build -p cmtpd && cargo run -p cmtpd --example copy_large -- [MIB [COUNT]]
//! ```

use std::process::Command;
use std::time::Instant;

use cmtp_store::{Delivery, EmbeddedStore, MailStore, MessageMeta, Options};
use cmtp_testkit::{PgCluster, cmtpd_bin, noise};

/// Bytes per write into the source store.
const WRITE: usize = 64 * 1024;

fn meta(mailbox: &str) -> MessageMeta {
    MessageMeta {
        mailbox: mailbox.to_owned(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 0,
        attachment_count: 0,
        body_end: 0,
        note: Vec::new(),
        relay_id: None,
    }
}

/// The largest resident set of any waited-for child so far, in MiB.
fn children_max_rss_mib() -> f64 {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to an rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn main() {
    let total_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let count: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let init = Command::new(cmtpd_bin())
        .arg("--data-dir")
        .arg(&data)
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(&data, Options::default()).unwrap();
        let piece = noise(WRITE, 7);
        let mut d = store.begin();
        for _ in 0..total_mib * 1024 * 1024 / WRITE {
            d.write(&piece).await.unwrap();
        }
        let id = d.commit(meta("bob")).await.unwrap();
        let small = noise(2048, 8);
        for i in 0..count {
            let mut d = store.begin();
            d.write(&small).await.unwrap();
            d.commit(meta(&format!("user{}", i % 10))).await.unwrap();
        }
        println!("source: message {id} of {total_mib} MiB and {count} of 2 KiB");
    });
    let before = children_max_rss_mib();
    let cluster = PgCluster::start();
    let url = cluster.database("copy large");
    let migrate = Command::new(cmtpd_bin())
        .env("CMTPD_DATABASE_URL", &url)
        .arg("--data-dir")
        .arg(&data)
        .args(["db", "migrate"])
        .output()
        .unwrap();
    assert!(migrate.status.success());
    let t0 = Instant::now();
    let out = Command::new(cmtpd_bin())
        .env("CMTPD_DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .arg("--data-dir")
        .arg(&data)
        .args(["store", "copy", "--from", "embedded", "--to", "postgres"])
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the copy failed");
    println!(
        "store copy (copy + verify): {secs:.1} s; peak RSS of cmtpd {:.1} MiB (children \
         before: {before:.1} MiB)",
        children_max_rss_mib()
    );
}
