//! SIGKILL at an arbitrary instant loses no acknowledged message or note and exposes no
//! partial one. The test binary re-executes itself as the child that writes.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmtp_store::{Delivery, LogMail, MailStore, MessageMeta, MessageRead, Options};

const CHILD_ENV: &str = "CMTP_STORE_CRASH_CHILD";
const TEST: &str = "sigkill_loses_no_acknowledged_message";

fn opts() -> Options {
    // A small inline threshold so blobs are part of the crash, small segments so rotation is.
    Options {
        inline_threshold: 16 * 1024,
        segment_size: 512 * 1024,
        ..Options::default()
    }
}

/// Self-describing content: a header line then bytes derived from it.
fn content(t: u64, s: u64) -> Vec<u8> {
    let size = 50 + ((t * 7919 + s * 104_729) % 40_000) as usize;
    let mut out = format!("{t} {s} {size}\n").into_bytes();
    let mut x = (t << 32) ^ s ^ 0x5DEE_CE66;
    while out.len() < size {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        out.push((x >> 56) as u8);
    }
    out
}

fn child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(LogMail::open(dir, opts()).unwrap());
        let base = std::process::id() as u64 * 1000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let t = base + t;
                let mut s = 0;
                while Instant::now() < deadline {
                    let data = content(t, s);
                    let mut d = store.begin();
                    for c in data.chunks(4096) {
                        d.write(c).await.unwrap();
                    }
                    let meta = MessageMeta {
                        mailbox: format!("box{}", t % 3),
                        src_account: "a".into(),
                        src_domain: "b".into(),
                        version: 1,
                        attachment_count: 0,
                        body_end: 0,
                        note: Vec::new(),
                        relay_id: None,
                    };
                    let mb = meta.mailbox.clone();
                    let id = d.commit(meta).await.unwrap();
                    // Ids are per mailbox: a message is known by both.
                    let key = format!("{mb}:{id}");
                    println!("ACK {key}");
                    if s % 3 == 0 {
                        // Two notes in turn: after a crash the last acknowledged one
                        // (or the one in flight) is there.
                        for k in 1..=2 {
                            let note = format!("{t}-{s}-{k}");
                            println!("NOTING {key} {note}");
                            assert!(
                                store
                                    .set_note(&mb, id, note.clone().into_bytes())
                                    .await
                                    .unwrap()
                            );
                            println!("NOTED {key} {note}");
                        }
                    }
                    if s % 5 == 4 {
                        println!("DELETING {key}");
                        assert!(store.delete(&mb, id).await.unwrap());
                        println!("DEL {key}");
                    }
                    s += 1;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn sigkill_loses_no_acknowledged_message() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Messages are known as "mailbox:id" (ids are per mailbox).
    let mut acked: HashSet<String> = HashSet::new();
    let mut deleted: HashSet<String> = HashSet::new();
    // Deletes begun but maybe not acknowledged: either outcome is correct.
    let mut deleting: HashSet<String> = HashSet::new();
    // Per message: the last acknowledged note, and one begun but maybe not acknowledged.
    let mut noted: HashMap<String, String> = HashMap::new();
    let mut noting: HashMap<String, String> = HashMap::new();
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 150 + round * 137;
        let mut seen = 0;
        let mut killed = false;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("ACK"), Some(key), None) => {
                    acked.insert(key.to_owned());
                    seen += 1;
                }
                (Some("DELETING"), Some(key), None) => {
                    deleting.insert(key.to_owned());
                }
                (Some("DEL"), Some(key), None) => {
                    deleted.insert(key.to_owned());
                }
                (Some("NOTING"), Some(key), Some(note)) => {
                    noting.insert(key.to_owned(), note.to_owned());
                }
                (Some("NOTED"), Some(key), Some(note)) => {
                    noted.insert(key.to_owned(), note.to_owned());
                }
                _ => {}
            }
            if seen >= target && !killed {
                child.kill().unwrap(); // SIGKILL; keep reading what was acknowledged before
                killed = true;
            }
        }
        assert!(killed, "child ended before {target} acknowledgements");
        child.wait().unwrap();

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = LogMail::open(dir.path(), opts()).unwrap();
            let mut present = HashSet::new();
            for mb in ["box0", "box1", "box2"] {
                for info in store.list(mb).await.unwrap() {
                    let key = format!("{mb}:{}", info.id);
                    present.insert(key.clone());
                    // The last acknowledged note, or the one in flight at the kill.
                    let note = String::from_utf8(info.meta.note.clone()).unwrap();
                    let acked_note = noted.get(&key).map_or("", |n| n.as_str());
                    assert!(
                        note == acked_note || noting.get(&key) == Some(&note),
                        "message {key} has note {note:?}, acknowledged {acked_note:?} (round {round})"
                    );
                    let (_, mut r) = store.open(mb, info.id).await.unwrap().unwrap();
                    let mut data = Vec::new();
                    while let Some(c) = r.read_chunk(65536).await.unwrap() {
                        data.extend_from_slice(&c);
                    }
                    // Never a partial or foreign message: it matches its own header.
                    let head = String::from_utf8_lossy(
                        &data[..data.iter().position(|&b| b == b'\n').unwrap()],
                    )
                    .to_string();
                    let mut h = head.split(' ').map(|x| x.parse::<u64>().unwrap());
                    let (t, s) = (h.next().unwrap(), h.next().unwrap());
                    assert_eq!(data, content(t, s), "message {key}");
                }
            }
            for key in &acked {
                if deleted.contains(key) {
                    assert!(
                        !present.contains(key),
                        "acknowledged delete of {key} lost (round {round})"
                    );
                } else if !deleting.contains(key) {
                    assert!(
                        present.contains(key),
                        "acknowledged message {key} lost (round {round})"
                    );
                }
            }
            assert!(store.stats().unwrap().segments > 1 || round == 0);
        });
    }
    assert!(acked.len() >= 150 * 4);
    assert!(noted.len() >= 150 * 4 / 3 - 4, "{} noted", noted.len());
}
