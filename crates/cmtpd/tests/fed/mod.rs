//! Helpers of the federation tests (`federation.rs`, `federation_pg.rs`): loopback
//! addresses for servers started later, test domains' configurations, signed
//! submissions.
#![allow(dead_code)] // each test file uses its own share of them

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use cmtp_crypto::KeyPair;
use cmtp_proto::Command;
use cmtp_proto::submit::SubmitRequest;
use cmtp_testkit::*;

/// Long enough for a relay over loopback with 1-second retries, on a busy 2-core CI box.
pub const DELIVERY: Duration = Duration::from_secs(60);

/// A loopback address nobody listens on now, for a server started later. It is taken
/// below the kernel's ephemeral range (32768+), where the other tests' servers (port 0)
/// never land: a "down" destination cannot turn into another test's server.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id() ^ (now() as u32).rotate_left(7);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(7919)) % 12_000) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

/// The configuration of a test domain: its routes and fast retries.
pub fn config(routes: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut c = String::from(
        "[federation]\nretry_secs = [1]\nconnect_timeout_secs = 2\nreply_timeout_secs = 10\ndns_timeout_secs = 2\n",
    );
    if !routes.is_empty() {
        c.push_str("routes = { ");
        let r: Vec<String> = routes
            .iter()
            .map(|(d, a)| format!("\"{d}\" = \"{a}\""))
            .collect();
        c.push_str(&r.join(", "));
        c.push_str(" }\n");
    }
    if !extra.contains("dns =") {
        // Never the machine's resolver from a test: a closed loopback port.
        c.push_str("dns = \"127.0.0.1:1\"\n");
    }
    c.push_str(extra);
    c
}

/// Starts `domain`'s server on `listen` with `config`.
pub fn server(domain: &str, listen: SocketAddr, config: String) -> TestServer {
    TestServer::start_with(Opts {
        config,
        global_args: vec!["--domain".into(), domain.into()],
        listen: Some(listen),
        ..Opts::default()
    })
}

/// Sends `msg` with SUBMIT, signed by `kp` as `user@domain`; returns the reply.
pub fn submit(c: &mut Client, kp: &KeyPair, user: &str, domain: &str, msg: &[u8]) -> String {
    c.send(&submit_bytes(kp, user, domain, now(), msg));
    c.status()
}

pub fn submit_bytes(kp: &KeyPair, user: &str, domain: &str, ts: u64, msg: &[u8]) -> Vec<u8> {
    let digest = cmtp_crypto::blake2b_256(msg);
    let signed = cmtp_proto::submit::signing_bytes(user, domain, ts, &digest);
    let sig = kp.sign(&signed);
    let mut w = Vec::new();
    Command::Submit(SubmitRequest {
        user: user.into(),
        timestamp: ts,
        signature: *sig.as_bytes(),
    })
    .encode(&mut w);
    w.extend_from_slice(msg);
    w
}

/// A message from `from@fd` to `to@td` with a recognisable body.
pub fn mail(to: (&str, &str), from: (&str, &str), body: &[u8]) -> Vec<u8> {
    message(1, to, from, b"\0", body, &[])
}
