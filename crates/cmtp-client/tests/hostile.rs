//! A hostile server: after a valid greeting it answers every command with random bytes
//! and closes. Every `Connection` method must return (an error or a value) — never
//! panic, never hang past its timeout, never allocate without bound.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use cmtp_client::{Connection, MailHead, NoProgress, Timeouts, sign_mbox};
use cmtp_crypto::KeyPair;
use cmtp_proto::{FetchPart, MboxKind, MboxRequest};

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A peer that, per connection, greets, then answers the first read with `reply`.
fn peer(replies: Vec<Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut s, _)) = l.accept() else { return };
            let _ = s.write_all(b"220 evil.example CMTP/1 ready\r\n");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&reply);
            // Closing may reset a client still writing; that is part of the game.
        }
    });
    addr
}

#[tokio::test]
async fn random_replies_never_panic() {
    let t = Timeouts {
        connect: Duration::from_secs(5),
        io: Duration::from_secs(2),
    };
    let me = KeyPair::generate().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let rounds = 60;
    let mut replies = Vec::new();
    for i in 0..rounds * 7 {
        let len = (xorshift(&mut seed) % 300) as usize;
        let mut r: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        // Half the time, start like a plausible reply so deeper parsing is reached.
        match i % 4 {
            0 => r.splice(0..0, [0, 0, 0, 1]).for_each(drop),
            1 => r.splice(0..0, [0, 0, 0, 0]).for_each(drop),
            2 => r.splice(0..0, *b"SUCCESS\0").for_each(drop),
            _ => {}
        }
        replies.push(r);
    }
    let addr = peer(replies);
    for _ in 0..rounds {
        for op in 0..7 {
            let Ok(mut c) = Connection::connect(&addr, t).await else {
                continue;
            };
            c.set_server_key(KeyPair::generate().unwrap().public());
            c.set_max_payload(1 << 20);
            let r: Result<(), cmtp_client::ClientError> = match op {
                0 => c.fetch_server_key().await.map(drop),
                1 => c.key_request("bob", "x").await.map(drop),
                2 => c.login("bob").await.map(drop),
                3 => {
                    let mut q = MboxRequest::list("bob", 1);
                    sign_mbox(&mut q, MboxKind::List, "x", &me);
                    c.mbox_list(&q).await.map(drop)
                }
                4 => {
                    let mut q = MboxRequest::fetch("bob", 1, 1, FetchPart::Head);
                    sign_mbox(&mut q, MboxKind::Fetch, "x", &me);
                    c.mbox_fetch(&q).await.map(drop)
                }
                5 => c.noop().await,
                _ => {
                    let head = MailHead {
                        version: 1,
                        dest_account: "bob".into(),
                        dest_domain: "x".into(),
                        src_account: "me".into(),
                        src_domain: "x".into(),
                        log: vec![0],
                    };
                    c.send_mail(&head, b"body", std::iter::empty(), 0, &mut NoProgress)
                        .await
                        .map(drop)
                }
            };
            // Random bytes signed by nobody can never be accepted as a signed reply.
            assert!(r.is_err(), "op {op} accepted a random reply");
        }
    }
}
