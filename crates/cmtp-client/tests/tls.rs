//! The client over TLS (docs/protocol.md D7) against the real `cmtpd` binary: a full
//! session through a recording loopback proxy shows nothing readable on the wire; the
//! profile records the offer and refuses a later connection without it.
//!
//! Needs the `cmtpd` binary: `cargo build -p cmtpd` first when running this crate alone.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmtp_client::{
    Address, ClientError, ClientOptions, Draft, NoProgress, Profile, Session, Timeouts,
};
use cmtp_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn opts() -> ClientOptions {
    ClientOptions {
        timeouts: Some(Timeouts {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(20),
        }),
        ..Default::default()
    }
}

/// A loopback TCP proxy to `upstream` that records every byte passing in either
/// direction (what a network observer sees).
async fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let wire = Arc::new(Mutex::new(Vec::new()));
    let w = wire.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = l.accept().await {
            let Ok(up) = TcpStream::connect(upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(pump(dr, uw, w.clone()));
            tokio::spawn(pump(ur, dw, w.clone()));
        }
    });
    (addr, wire)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    wire: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                wire.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The "Done when" capture: login, send, inbox and read between the client and the
/// server over TLS; the recorded bytes hold no envelope name, no mailbox content and no
/// xzibit. The same session in clear (TLS off) shows them, so the check can fail.
#[test]
fn a_full_session_over_tls_shows_nothing_on_the_wire() {
    let (tls_wire, xz) = full_session("");
    let (plain_wire, plain_xz) = full_session("[tls]\noffer = false\n");
    for (what, needle) in [
        ("sender name", &b"alicewire"[..]),
        ("recipient name", b"bobwire"),
        ("subject", b"Quarterly figures"),
        ("body", b"the numbers are in the sealed box"),
    ] {
        assert!(!contains(&tls_wire, needle), "{what} visible over TLS");
        // Bodies are sealed in CMTP/1 anyway; the envelope names are not.
        if what.ends_with("name") {
            assert!(contains(&plain_wire, needle), "{what} not seen in clear");
        }
    }
    // Its first 24 bytes are version, KDF and limits, the same in every v2 xzibit;
    // from there on the salt, nonce and ciphertext are this account's own.
    assert!(!contains(&tls_wire, &xz[24..56]), "xzibit visible over TLS");
    // (Each server made its own xzibit: another random salt.)
    assert!(
        contains(&plain_wire, &plain_xz[..40]),
        "the clear session shows the xzibit"
    );
    // Only the greeting, OHAI, TLSSTART and its answer precede the handshake.
    assert!(contains(&tls_wire, b"TLSSTART\0"));
}

/// Runs login, send, inbox and read for bobwire through a recording proxy to a server
/// with `config`; returns the recorded bytes and bobwire's xzibit.
fn full_session(config: &str) -> (Vec<u8>, Vec<u8>) {
    let srv = TestServer::start_with(Opts {
        config: config.into(),
        ..Default::default()
    });
    srv.add_user("alicewire", "pw-a");
    srv.add_user("bobwire", "pw-b");
    // The xzibit as the store hands it out (straight to the server, not via the proxy).
    let mut c = srv.client();
    c.send(b"LOGIN\0bobwire\0");
    let xz = c.login_reply().expect("bobwire's xzibit");
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wire = rt.block_on(async {
        let (proxy, wire) = recording_proxy(srv.addr).await;
        let server = proxy.to_string();
        let alice = Address::parse("alicewire@localhost").unwrap();
        let bob = Address::parse("bobwire@localhost").unwrap();
        let mut pa = Profile::open(home.path().join("a")).unwrap();
        Session::login(&mut pa, &alice, Some(&server), b"pw-a", false, &opts())
            .await
            .unwrap();
        let tls_on = !config.contains("offer = false");
        assert_eq!(pa.pins.tls_seen(&server), tls_on);
        let mut s = Session::open(pa, &opts()).await.unwrap();
        let draft = Draft {
            to: vec![bob.clone()],
            subject: "Quarterly figures".into(),
            text: "the numbers are in the sealed box".into(),
            ..Default::default()
        };
        for r in s.send(&draft, &mut NoProgress).await.unwrap() {
            r.outcome.unwrap();
        }
        s.close().await;
        let mut pb = Profile::open(home.path().join("b")).unwrap();
        Session::login(&mut pb, &bob, Some(&server), b"pw-b", false, &opts())
            .await
            .unwrap();
        let mut s = Session::open(pb, &opts()).await.unwrap();
        s.unlock(b"pw-b").await.unwrap();
        let inbox = s.inbox().await.unwrap();
        assert_eq!(inbox.len(), 1);
        let m = s.read(inbox[0].id).await.unwrap();
        assert_eq!(m.subject, "Quarterly figures");
        assert_eq!(m.from, "alicewire@localhost");
        s.close().await;
        wire.lock().unwrap().clone()
    });
    (wire, xz)
}

#[test]
fn a_server_seen_with_tls_and_then_without_is_refused() {
    let mut srv = TestServer::start();
    srv.add_user("carol", "pw");
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = srv.server_arg();
    let me = Address::parse("carol@localhost").unwrap();
    let mut profile = Profile::open(home.path().join("p")).unwrap();
    rt.block_on(async {
        Session::login(&mut profile, &me, Some(&server), b"pw", false, &opts())
            .await
            .unwrap();
    });
    // Recorded on disk, with the pin.
    let reread = Profile::open(home.path().join("p")).unwrap();
    assert!(reread.pins.tls_seen(&server));
    // The same server (same key, same address) without the offer: as an on-path
    // attacker stripping " TLS" from the OHAI answer would make it look.
    let config = srv.config.clone().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[tls]\noffer = false\n");
    std::fs::write(&config, text).unwrap();
    srv.restart();
    rt.block_on(async {
        match Session::open(reread.clone(), &opts()).await {
            Err(ClientError::TlsDowngrade { server: s, .. }) => assert_eq!(s, server),
            r => panic!("expected a downgrade refusal, got {:?}", r.map(|_| ())),
        }
        // Logging in again does not clear it either: the pins file keeps the record.
        let mut again = reread.clone();
        let r = Session::login(&mut again, &me, Some(&server), b"pw", false, &opts()).await;
        assert!(matches!(r, Err(ClientError::TlsDowngrade { .. })), "{r:?}");
    });
}

#[test]
fn require_tls_refuses_a_server_without_it_and_accepts_one_with_it() {
    let plain = TestServer::start_with(Opts {
        config: "[tls]\noffer = false\n".into(),
        ..Default::default()
    });
    plain.add_user("dave", "pw");
    let tls = TestServer::start();
    tls.add_user("dave", "pw");
    let home = tempfile::tempdir().unwrap();
    let me = Address::parse("dave@localhost").unwrap();
    let strict = ClientOptions {
        require_tls: true,
        ..opts()
    };
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut p = Profile::open(home.path().join("p")).unwrap();
        let r = Session::login(
            &mut p,
            &me,
            Some(&plain.server_arg()),
            b"pw",
            false,
            &strict,
        )
        .await;
        assert!(matches!(r, Err(ClientError::TlsDowngrade { .. })), "{r:?}");
        assert!(p.config.is_none(), "nothing written");
        // Without the flag the CMTP/1 server still works.
        Session::login(
            &mut p,
            &me,
            Some(&plain.server_arg()),
            b"pw",
            false,
            &opts(),
        )
        .await
        .unwrap();
        let mut q = Profile::open(home.path().join("q")).unwrap();
        Session::login(&mut q, &me, Some(&tls.server_arg()), b"pw", false, &strict)
            .await
            .unwrap();
        assert!(q.pins.tls_seen(&tls.server_arg()));
    });
}
