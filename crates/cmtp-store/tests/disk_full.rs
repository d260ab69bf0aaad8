//! A full disk on a real (small) filesystem: a tmpfs of a few MiB is mounted for each
//! test, filled until deliveries fail, and freed again. The store must refuse nothing
//! it has room for (a failed preallocation falls back to plain writes), must never
//! acknowledge a failed batch, and must accept deliveries again once space returns —
//! without being reopened.
//!
//! Mounting needs root (CI) or, as a normal user, a user namespace: the test then runs
//! itself again under `unshare --mount --map-root-user`. If neither works the test fails
//! with the reason; it never passes without having run.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmtp_store::{
    Delivery, LogMail, MailStore, MessageMeta, MessageRead, Options, StoreError, StoreHealth,
};
use cmtp_testkit::on_tmpfs;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn meta() -> MessageMeta {
    MessageMeta {
        mailbox: "bob".into(),
        src_account: "alice".into(),
        src_domain: "example.org".into(),
        version: 2,
        attachment_count: 0,
        body_end: 10,
        note: Vec::new(),
        relay_id: None,
    }
}

/// Distinct contents per seed, so a message can be recognised by its bytes.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = seed.to_le_bytes().to_vec();
    out.extend((8..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    out
}

async fn deliver(store: &LogMail, data: &[u8]) -> Result<u64, StoreError> {
    let mut d = store.begin();
    for c in data.chunks(16 * 1024) {
        d.write(c).await?;
    }
    d.commit(meta()).await
}

async fn read(store: &LogMail, id: u64) -> Vec<u8> {
    let (_, mut r) = store
        .open("bob", id)
        .await
        .unwrap()
        .expect("listed message");
    let mut out = Vec::new();
    while let Some(c) = r.read_chunk(1 << 20).await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

/// The mailbox holds exactly the acknowledged messages, byte for byte.
async fn check_exactly(store: &LogMail, acked: &[(u64, Vec<u8>)]) {
    let listed: Vec<u64> = store
        .list("bob")
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    let mut want: Vec<u64> = acked.iter().map(|(id, _)| *id).collect();
    want.sort_unstable();
    assert_eq!(
        listed, want,
        "listed messages differ from the acknowledged ones"
    );
    for (id, data) in acked {
        assert!(
            read(store, *id).await == *data,
            "message {id} is not intact"
        );
    }
}

/// Writes a ballast file of `len` bytes (real data, fsync'd) that the test deletes
/// later to give space back.
fn ballast(dir: &Path, len: usize) -> PathBuf {
    let p = dir.join("ballast");
    let mut f = fs::File::create(&p).unwrap();
    f.write_all(&vec![0xa5; len]).unwrap();
    f.sync_all().unwrap();
    p
}

/// Fill the disk with concurrent deliveries until they fail; the store reports
/// degraded; free space; deliveries succeed again without reopening; exactly the
/// acknowledged messages are stored (now and after a reopen), none of the failed ones.
#[test]
fn deliveries_resume_after_the_disk_was_full() {
    on_tmpfs("deliveries_resume_after_the_disk_was_full", "8m", |dir| {
        runtime().block_on(async {
            let ballast = ballast(dir, 2 << 20);
            let data_dir = dir.join("data");
            let store = Arc::new(LogMail::open(&data_dir, Options::default()).unwrap());
            assert_eq!(store.health(), StoreHealth::Ok);

            // Fill: 8 connections deliver 20-60 KiB messages until each sees a failure.
            let mut tasks = Vec::new();
            for c in 0..8u64 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut acked, mut failed) = (Vec::new(), Vec::new());
                    for k in 0.. {
                        let seed = c * 1_000_000 + k;
                        let data = body(seed, 20 * 1024 + (seed as usize * 7919) % (40 * 1024));
                        match deliver(&store, &data).await {
                            Ok(id) => acked.push((id, data)),
                            Err(e) => {
                                failed.push((e, data));
                                break;
                            }
                        }
                    }
                    (acked, failed)
                }));
            }
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            for t in tasks {
                let (a, f) = t.await.unwrap();
                acked.extend(a);
                failed.extend(f);
            }
            assert!(acked.len() > 20, "too few messages fit: {}", acked.len());
            assert!(
                failed.iter().any(|(e, _)| matches!(
                    e,
                    StoreError::Io(io) if io.kind() == ErrorKind::StorageFull
                )),
                "no delivery failed with a full disk: {:?}",
                failed
                    .iter()
                    .map(|(e, _)| e.to_string())
                    .collect::<Vec<_>>()
            );
            match store.health() {
                StoreHealth::Degraded { reason, since } => {
                    assert!(reason.contains("No space left"), "{reason}");
                    assert!(since > 1_600_000_000, "{since}");
                }
                StoreHealth::Ok => panic!("the store reports Ok right after failed writes"),
            }
            assert!(store.metrics().write_failures >= 1);
            check_exactly(&store, &acked).await;

            // Space returns: deliveries succeed again, on the same store.
            fs::remove_file(&ballast).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            for k in 0..20u64 {
                let data = body(9_000_000 + k, 30 * 1024);
                let id = deliver(&store, &data)
                    .await
                    .unwrap_or_else(|e| panic!("delivery {k} after space returned: {e}"));
                acked.push((id, data));
                assert!(Instant::now() < deadline);
            }
            assert_eq!(store.health(), StoreHealth::Ok);
            check_exactly(&store, &acked).await;
            // Ids still ascend in arrival order after the repair.
            let last_before = acked[acked.len() - 21].0;
            assert!(
                acked[acked.len() - 20..]
                    .iter()
                    .all(|(id, _)| *id > last_before)
            );

            // And the log on disk agrees: nothing of a failed batch resurfaces at open.
            drop(store);
            let store = LogMail::open(&data_dir, Options::default()).unwrap();
            check_exactly(&store, &acked).await;
            // `check_exactly` compared the listing with the acknowledged set: none of
            // the failed deliveries (distinct contents, no id) was stored.
            assert!(!failed.is_empty());
        });
    });
}

/// On a filesystem with room for the records but not for an 8 MiB zero-fill step, the
/// failed preallocation must not stop the store: deliveries go on without it.
#[test]
fn a_failed_preallocation_falls_back_to_plain_writes() {
    on_tmpfs(
        "a_failed_preallocation_falls_back_to_plain_writes",
        "4m",
        |dir| {
            runtime().block_on(async {
                let data_dir = dir.join("data");
                let store = LogMail::open(&data_dir, Options::default()).unwrap();
                let mut acked = Vec::new();
                for k in 0..40u64 {
                    let data = body(k, 10 * 1024);
                    let id = deliver(&store, &data)
                        .await
                        .unwrap_or_else(|e| panic!("delivery {k}: {e}"));
                    acked.push((id, data));
                }
                assert_eq!(store.health(), StoreHealth::Ok);
                let m = store.metrics();
                assert!(m.prealloc_fallbacks >= 1, "{m:?}");
                assert_eq!(m.write_failures, 0, "{m:?}");
                check_exactly(&store, &acked).await;
                // The failed step's zeros were given back: the log is about its records.
                let seg = data_dir.join("mail/segment-00000001.log");
                let len = fs::metadata(&seg).unwrap().len();
                assert!(len < 1 << 20, "segment is {len} bytes");
                drop(store);
                let store = LogMail::open(&data_dir, Options::default()).unwrap();
                check_exactly(&store, &acked).await;
            });
        },
    );
}
