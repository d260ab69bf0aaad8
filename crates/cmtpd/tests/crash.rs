//! Crash test: concurrent deliveries to the real `cmtpd`, SIGKILL at moments chosen by
//! events (after a random number of acknowledged messages, then a random number of
//! further messages fully sent), restart, and check that every message that got SUCCESS
//! is stored byte-identical (BLAKE2b-256 of the MBOXFETCH bytes) and that nothing else
//! is stored but messages that were really sent (no torn or mixed messages).
//!
//! `CMTP_CRASH_KILLS` sets the number of kills (default 40); `CMTP_CRASH_SEED` replays a run.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cmtp_proto::{FetchPart, MboxKind, MboxRequest};
use cmtp_testkit::*;

const THREADS: usize = 8;

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Round {
    /// Digests of messages whose bytes were all written.
    sent: HashSet<[u8; 32]>,
    /// Digests of messages that got SUCCESS.
    acked: Vec<[u8; 32]>,
    sent_count: u64,
}

type Shared = Arc<(Mutex<Round>, Condvar)>;

/// One client: sends messages until the connection breaks. Never panics on I/O errors
/// (the server is killed under it); a wrong reply is a test failure.
fn client(addr: SocketAddr, shared: Shared, seed: u64, thread: usize) {
    let mut rng = Rng(seed | 1);
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let mut greeting = [0u8; 1];
    // Read the greeting line.
    loop {
        if s.read_exact(&mut greeting).is_err() {
            return;
        }
        if greeting[0] == b'\n' {
            break;
        }
    }
    for seq in 0u64.. {
        let size = match rng.below(100) {
            0 => 1_200_000 + rng.below(300_000),
            1..=5 => 64_000 + rng.below(200_000),
            _ => 16 + rng.below(8_000),
        } as usize;
        let mut body = vec![0u8; size];
        let mut r2 = Rng(rng.next() | 1);
        for chunk in body.chunks_mut(8) {
            let v = r2.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let src = format!("t{thread}s{seq}");
        let m = message(1, ("crash", ""), (&src, "c.example"), b"\0", &body, &[]);
        let digest = cmtp_crypto::blake2b_256(&m);
        let mut wire = b"MAIL\0".to_vec();
        wire.extend_from_slice(&m);
        // Register before writing the last byte would be racy with the kill: register
        // as "possibly stored" first, and count as sent after the write.
        shared.0.lock().unwrap().sent.insert(digest);
        if s.write_all(&wire).is_err() {
            return;
        }
        {
            let mut g = shared.0.lock().unwrap();
            g.sent_count += 1;
            shared.1.notify_all();
        }
        let mut reply = [0u8; 73];
        if s.read_exact(&mut reply).is_err() {
            return;
        }
        assert_eq!(&reply[..8], b"SUCCESS\0", "unexpected reply {reply:?}");
        let mut g = shared.0.lock().unwrap();
        g.acked.push(digest);
        shared.1.notify_all();
    }
}

/// Lists and fetches every stored message: digest → count.
fn stored(c: &mut Client, user: &cmtp_crypto::KeyPair) -> (Vec<u64>, HashMap<[u8; 32], u32>) {
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("crash", now()),
            user,
            "localhost",
        )
        .expect("list");
    let entries = cmtp_proto::mbox::decode_list(&list, 1_000_000).unwrap();
    let mut out = HashMap::new();
    let mut ids = Vec::new();
    for e in entries {
        let m = c
            .mbox(
                MboxKind::Fetch,
                MboxRequest::fetch("crash", now(), e.id, FetchPart::Full),
                user,
                "localhost",
            )
            .expect("fetch");
        assert_eq!(m.len() as u64, e.size);
        *out.entry(cmtp_crypto::blake2b_256(&m)).or_insert(0) += 1;
        ids.push(e.id);
    }
    (ids, out)
}

#[test]
fn acknowledged_mail_survives_sigkill() {
    let kills: u32 = std::env::var("CMTP_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("CMTP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test: {kills} kills, CMTP_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let mut srv = TestServer::start_with(Opts {
        config: "[rate]\ncommands_per_sec = 0\n".into(),
        ..Default::default()
    });
    let user = srv.add_user("crash", "pw");
    let started = Instant::now();
    let (mut total_acked, mut total_sent, mut total_stored) = (0u64, 0u64, 0u64);
    for round in 0..kills {
        let shared: Shared = Arc::default();
        // Mostly short rounds (many kills), sometimes a long one (bigger logs, blobs).
        let ack_target = if rng.below(8) == 0 {
            rng.below(300)
        } else {
            rng.below(40)
        };
        let extra_sent = rng.below(4);
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let sh = shared.clone();
                let addr = srv.addr;
                let s = rng.next();
                std::thread::spawn(move || client(addr, sh, s, t))
            })
            .collect();
        // Wait for the event: `ack_target` acknowledgements, then `extra_sent` more
        // messages completely written (so the kill often lands inside a commit).
        {
            let deadline = Instant::now() + Duration::from_secs(60);
            let (lock, cv) = &*shared;
            let mut g = lock.lock().unwrap();
            while (g.acked.len() as u64) < ack_target {
                g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
                assert!(Instant::now() < deadline, "round {round}: no progress");
            }
            let base = g.sent_count;
            while g.sent_count < base + extra_sent {
                g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
                assert!(Instant::now() < deadline, "round {round}: no progress");
            }
        }
        srv.kill();
        for t in threads {
            t.join().expect("client thread");
        }
        srv.spawn(None, &[]);
        let mut c = srv.client();
        let (ids, have) = stored(&mut c, &user);
        let g = shared.0.lock().unwrap();
        for d in &g.acked {
            assert!(
                have.contains_key(d),
                "round {round}: an acknowledged message is missing (seed {seed})"
            );
        }
        for (d, n) in &have {
            assert!(
                g.sent.contains(d),
                "round {round}: a stored message was never sent whole"
            );
            assert_eq!(*n, 1, "round {round}: a message is stored twice");
        }
        total_acked += g.acked.len() as u64;
        total_sent += g.sent_count;
        total_stored += have.len() as u64;
        // Start the next round from an empty mailbox (deletions are durable too: the
        // next round would see a leftover as "never sent").
        for id in ids {
            let r = c.mbox(
                MboxKind::Delete,
                MboxRequest::delete("crash", now(), id),
                &user,
                "localhost",
            );
            assert_eq!(r, Ok(vec![]));
        }
    }
    eprintln!(
        "crash test: {kills} kills in {:.1} s; {total_acked} acknowledged, {total_sent} fully sent, {total_stored} found stored; all acknowledged present and byte-identical",
        started.elapsed().as_secs_f64()
    );
}
