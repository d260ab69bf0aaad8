//! `Connection::send_submit` against a scripted CMTP/1 peer on loopback that reads the
//! command and message with `cmtp-proto`'s own parsers, as a server does, and checks the
//! sender's signature over the bytes it actually received (docs/protocol.md D5).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use cmtp_client::{
    ClientError, Connection, MailHead, MailOutcome, NoProgress, Timeouts, sign_submit,
    submit_digest, unix_now,
};
use cmtp_crypto::{KeyPair, PublicKey, Signature, blake2b_256};
use cmtp_proto::{Command, MessageDecoder, MessageEvent, MessageLimits, SubmitRequest};

/// What the peer saw of one SUBMIT.
#[derive(Debug)]
struct Seen {
    request: SubmitRequest,
    src: (String, String),
    message: Vec<u8>,
    attachments: u32,
}

/// Reads from `s` until `parse` answers; `buf` keeps what follows.
fn read_until<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut parse: impl FnMut(&[u8]) -> Option<(T, usize)>,
) -> T {
    loop {
        if let Some((v, n)) = parse(buf) {
            buf.drain(..n);
            return v;
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "client closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn signed_text(k: &KeyPair, text: &[u8], versioned: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if versioned {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    out.extend_from_slice(text);
    out.push(0);
    out.extend_from_slice(k.sign(text).as_bytes());
    out.push(0);
    out
}

/// A peer that serves its key, then reads one command. For SUBMIT it reads the message
/// with a `MessageDecoder` and sends what it saw on `tx` before answering `reply`
/// (general SUCCESS/FAILURE, or a version-0 text); for anything else it answers
/// FAILURE at once, as a server does for an unknown command.
/// `reply` for a peer that does not know SUBMIT.
const UNKNOWN: &[u8] = b"";

fn peer(server: KeyPair, reply: &'static [u8], tx: mpsc::Sender<Option<Seen>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"220 test.example CMTP/1 ready\r\n").unwrap();
        let mut buf = Vec::new();
        let first = read_until(&mut s, &mut buf, |b| Command::parse(b).unwrap());
        assert_eq!(
            first,
            Command::KeyRequest {
                user: String::new(),
                domain: String::new()
            }
        );
        let mut key = 1u32.to_be_bytes().to_vec();
        key.extend_from_slice(server.public().as_bytes());
        key.push(0);
        key.extend_from_slice(server.sign(server.public().as_bytes()).as_bytes());
        key.push(0);
        s.write_all(&key).unwrap();
        let cmd = read_until(&mut s, &mut buf, |b| Command::parse(b).unwrap());
        let request = match cmd {
            Command::Submit(r) if reply != UNKNOWN => r,
            _ => {
                tx.send(None).unwrap();
                s.write_all(&signed_text(&server, b"FAILURE", false))
                    .unwrap();
                // Close as a server does after FAILURE, reading what is still in flight
                // so the client sees the reply rather than a reset.
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 65536];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        };
        let mut dec = MessageDecoder::new(MessageLimits::default());
        let mut message = Vec::new();
        let mut src = (String::new(), String::new());
        let mut attachments = 0;
        loop {
            let ev = read_until(&mut s, &mut buf, |b| {
                let (n, ev) = dec.decode(b).unwrap();
                message.extend_from_slice(&b[..n]);
                let owned = match ev? {
                    MessageEvent::Envelope(e) => {
                        src = (e.src_account, e.src_domain);
                        attachments = e.attachment_count;
                        0
                    }
                    MessageEvent::End => 1,
                    _ => 0,
                };
                Some((owned, n))
            });
            if ev == 1 {
                break;
            }
        }
        tx.send(Some(Seen {
            request,
            src,
            message,
            attachments,
        }))
        .unwrap();
        let versioned = reply != b"SUCCESS" && reply != b"FAILURE";
        s.write_all(&signed_text(&server, reply, versioned))
            .unwrap();
        // Hold the connection until the client leaves.
        let _ = s.read(&mut [0u8; 64]);
    });
    addr
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: std::time::Duration::from_secs(5),
        io: std::time::Duration::from_secs(5),
    }
}

async fn connected(addr: &str) -> Connection {
    let mut c = Connection::connect(addr, timeouts()).await.unwrap();
    let k = c.fetch_server_key().await.unwrap();
    c.set_server_key(k);
    c
}

fn head() -> MailHead {
    MailHead {
        version: 1,
        dest_account: "bob".into(),
        dest_domain: "other.example".into(),
        src_account: "alice".into(),
        src_domain: "home.example".into(),
        log: vec![0],
    }
}

/// Signs a submission of `body` and `atts` by `me`, as `Session::send` does.
fn signed(me: &KeyPair, body: &[u8], atts: &[Vec<u8>]) -> SubmitRequest {
    let h = head();
    let digest = submit_digest(&h, body, atts).unwrap();
    let mut req = SubmitRequest::new(h.src_account.clone(), unix_now());
    sign_submit(&mut req, &h.src_domain, &digest, me);
    req
}

fn verifies(key: &PublicKey, seen: &Seen) -> bool {
    let digest = blake2b_256(&seen.message);
    let bytes = cmtp_proto::submit::signing_bytes(
        &seen.request.user,
        &seen.src.1,
        seen.request.timestamp,
        &digest,
    );
    key.verify(&bytes, &Signature::from_array(seen.request.signature))
        .is_ok()
}

#[tokio::test]
async fn a_submission_verifies_over_the_bytes_the_server_received() {
    let server = KeyPair::generate().unwrap();
    let me = KeyPair::generate().unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = peer(server, b"SUCCESS", tx);
    let mut c = connected(&addr).await;
    // Large enough to take several upload chunks and socket reads.
    let atts = vec![vec![0xa5; 700_000], Vec::new(), b"\0\0".to_vec()];
    let body = b"sealed body \0 bytes".to_vec();
    let req = signed(&me, &body, &atts);
    let o = c
        .send_submit(&req, &head(), &body, atts, &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(o, MailOutcome::Queued);
    let seen = rx.recv().unwrap().expect("a SUBMIT");
    assert_eq!(seen.request, req);
    assert_eq!(seen.src, ("alice".to_string(), "home.example".to_string()));
    assert_eq!(seen.attachments, 3);
    assert!(seen.message.len() > 700_000);
    assert!(
        verifies(&me.public(), &seen),
        "signature over the received message"
    );
    assert!(
        seen.request.timestamp.abs_diff(unix_now()) <= cmtp_proto::submit::TIMESTAMP_WINDOW_SECS
    );
    // The same signature does not cover a message one byte different.
    let mut tampered = seen;
    let last = tampered.message.len() - 1;
    tampered.message[last] ^= 1;
    assert!(!verifies(&me.public(), &tampered));
}

#[tokio::test]
async fn deliveryfailure_to_a_submission_is_reported_as_such() {
    let server = KeyPair::generate().unwrap();
    let me = KeyPair::generate().unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = peer(server, b"DELIVERYFAILURE", tx);
    let mut c = connected(&addr).await;
    let req = signed(&me, b"b", &[]);
    let o = c
        .send_submit(&req, &head(), b"b", Vec::new(), &mut NoProgress)
        .await
        .unwrap();
    assert_eq!(o, MailOutcome::DeliveryFailure);
    assert!(rx.recv().unwrap().is_some());
}

#[tokio::test]
async fn a_server_without_submit_is_not_reported_as_too_large() {
    // As today's servers do for an unknown command: FAILURE at once, then close.
    let server = KeyPair::generate().unwrap();
    let me = KeyPair::generate().unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = peer(server, UNKNOWN, tx);
    let mut c = connected(&addr).await;
    let atts = vec![vec![1u8; 3 * 1024 * 1024]];
    let req = signed(&me, b"b", &atts);
    let e = c
        .send_submit(&req, &head(), b"b", atts, &mut NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::Unsupported(ref m) if m.contains("SUBMIT")),
        "{e:?}"
    );
    assert!(rx.recv().unwrap().is_none());
}

#[tokio::test]
async fn a_request_for_another_account_is_refused_before_sending() {
    let server = KeyPair::generate().unwrap();
    let me = KeyPair::generate().unwrap();
    let (tx, rx) = mpsc::channel();
    let addr = peer(server, b"SUCCESS", tx);
    let mut c = connected(&addr).await;
    let mut req = signed(&me, b"b", &[]);
    req.user = "mallory".into();
    let e = c
        .send_submit(&req, &head(), b"b", Vec::new(), &mut NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::BadAddress { .. }), "{e:?}");
    // Nothing was written: the next command is the first the peer sees.
    c.noop().await.unwrap_err();
    assert!(
        rx.recv().unwrap().is_none(),
        "the peer saw NOOP, not SUBMIT"
    );
}
