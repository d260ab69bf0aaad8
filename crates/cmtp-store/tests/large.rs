//! A large delivery streams to disk in bounded memory (alone in its test binary so the
//! process's peak RSS is its own).

use cmtp_store::{Delivery, LogMail, MailStore, MessageMeta, MessageRead, Options};

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn block(i: u64) -> Vec<u8> {
    (0..65536u64)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_streams_in_bounded_memory() {
    // 256 MiB by default; `CMTP_STORE_LARGE_MIB=1024` for the 1 GiB check.
    let mib: u64 = std::env::var("CMTP_STORE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let blocks_n = mib * 16;
    let dir = tempfile::tempdir().unwrap();
    let store = LogMail::open(dir.path(), Options::default()).unwrap();
    let blocks: Vec<Vec<u8>> = (0..16).map(block).collect();
    let before = peak_rss_kib();
    let mut d = store.begin();
    for i in 0..blocks_n {
        d.write(&blocks[(i % 16) as usize]).await.unwrap();
    }
    let meta = MessageMeta {
        mailbox: "bob".into(),
        src_account: "a".into(),
        src_domain: "b".into(),
        version: 1,
        attachment_count: 0,
        body_end: 10,
        note: Vec::new(),
        relay_id: None,
    };
    let id = d.commit(meta).await.unwrap();
    let st = store.stats().unwrap();
    assert_eq!((st.blobs, st.blob_bytes), (1, blocks_n * 65536));
    let (info, mut r) = store.open("bob", id).await.unwrap().unwrap();
    assert_eq!(info.size, blocks_n * 65536);
    let mut i = 0u64;
    while let Some(c) = r.read_chunk(65536).await.unwrap() {
        assert_eq!(c, blocks[(i % 16) as usize], "block {i}");
        i += 1;
    }
    assert_eq!(i, blocks_n);
    let grown = peak_rss_kib().saturating_sub(before);
    eprintln!("peak RSS growth: {grown} KiB");
    assert!(
        grown < 64 * 1024,
        "peak RSS grew by {grown} KiB for a 256 MiB message"
    );
}
