//! Transport encryption (docs/protocol.md D7) against the real `cmtpd` binary over
//! loopback TCP: TLSSTART and the restarted session, the implicit-TLS listener, the key
//! check, command injection before the handshake, and `[tls] require_for`.
//!
//! On the backend of the including target (`BACKEND`): tests/tls.rs runs these on the
//! embedded store, tests/suite_pg.rs on PostgreSQL.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use cmtp_client::tls::HandshakeError;
use cmtp_client::{ClientError, Connection, Timeouts};
use cmtp_crypto::{KeyPair, PublicKey};
use cmtp_proto::{MboxKind, MboxRequest};
use cmtp_testkit::*;

use super::BACKEND;

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(10),
        io: Duration::from_secs(10),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects in clear, checks the offer, and upgrades with the pin `expected`.
async fn upgraded(
    addr: SocketAddr,
    expected: Option<PublicKey>,
) -> Result<Connection, ClientError> {
    let mut c = Connection::connect(&addr.to_string(), timeouts()).await?;
    let ohai = c.ohai().await?;
    assert!(
        cmtp_proto::reply::ohai_capabilities(&ohai).contains(&"TLS"),
        "offered by default: {ohai}"
    );
    c.start_tls(expected).await
}

#[test]
fn tlsstart_restarts_the_session_inside_tls_with_the_server_key() {
    let srv = TestServer::on(BACKEND);
    let alice = srv.add_user("alice", "pw");
    rt().block_on(async {
        let mut c = upgraded(srv.addr, Some(srv.key)).await.unwrap();
        assert!(c.is_tls());
        assert_eq!(c.tls_key(), Some(&srv.key));
        // A new greeting was read inside; the inner OHAI does not offer TLS again.
        assert!(c.greeting().ends_with("CMTP/1 ready"), "{}", c.greeting());
        let inner = c.ohai().await.unwrap();
        assert!(inner.starts_with("OHAI CMTP/1 cmtpd/"), "{inner}");
        assert!(
            !cmtp_proto::reply::ohai_capabilities(&inner).contains(&"TLS"),
            "{inner}"
        );
        // The key the handshake proved is the one KEYREQUEST returns and signs with.
        assert_eq!(c.fetch_server_key().await.unwrap(), srv.key);
        c.set_server_key(srv.key);
        c.noop().await.unwrap();
        assert_eq!(
            c.key_request("alice", "").await.unwrap(),
            Some(alice.public())
        );
        // A second TLSSTART is refused by the client before it is sent.
        assert!(matches!(
            c.start_tls(Some(srv.key)).await,
            Err(ClientError::Protocol { .. })
        ));
    });
    assert_eq!(srv.metric("cmtpd_commands_total{command=\"TLSSTART\"}"), 1);
}

#[test]
fn a_pin_other_than_the_server_key_fails_the_handshake() {
    let srv = TestServer::on(BACKEND);
    let other = KeyPair::generate().unwrap().public();
    rt().block_on(async {
        match upgraded(srv.addr, Some(other)).await {
            Err(ClientError::ServerKeyChanged {
                pinned, presented, ..
            }) => {
                assert_eq!(pinned, other.fingerprint());
                assert_eq!(presented, srv.key.fingerprint());
            }
            r => panic!("expected a key mismatch, got {r:?}"),
        }
        // The lower-level handshake says the same on an implicit connection.
        let tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        // A plain listener answers a ClientHello with its greeting: not TLS.
        let r = cmtp_client::tls::handshake(tcp, Some(srv.key), Duration::from_secs(10)).await;
        assert!(matches!(r, Err(HandshakeError::Failed(_))), "{r:?}");
    });
    // The server counts the refused handshake once its side of it ends.
    wait_until(
        "the failed handshake counted",
        Duration::from_secs(10),
        || srv.metric("cmtpd_failures_total{reason=\"tls_handshake\"}") == 1,
    );
}

#[test]
fn implicit_tls_listener_starts_with_the_handshake() {
    let srv = TestServer::start_with(Opts {
        config: "[tls]\nlisten = [\"127.0.0.1:0\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let tls_addr = srv.tls_addr.expect("the ready file names the TLS listener");
    assert_ne!(tls_addr, srv.addr);
    rt().block_on(async {
        let mut c = Connection::connect_tls(&tls_addr.to_string(), Some(srv.key), timeouts())
            .await
            .unwrap();
        assert_eq!(c.tls_key(), Some(&srv.key));
        let ohai = c.ohai().await.unwrap();
        assert!(
            !cmtp_proto::reply::ohai_capabilities(&ohai).contains(&"TLS"),
            "{ohai}"
        );
        c.set_server_key(srv.key);
        c.noop().await.unwrap();
        // TOFU: no pin, any key that proves itself; the caller compares.
        let c = Connection::connect_tls(&tls_addr.to_string(), None, timeouts())
            .await
            .unwrap();
        assert_eq!(c.tls_key(), Some(&srv.key));
        // A wrong pin is refused there too.
        let other = KeyPair::generate().unwrap().public();
        let r = Connection::connect_tls(&tls_addr.to_string(), Some(other), timeouts()).await;
        assert!(
            matches!(r, Err(ClientError::ServerKeyChanged { .. })),
            "{r:?}"
        );
    });
    // Clear text on the TLS port gets no CMTP answer: the handshake fails and closes.
    let mut raw = std::net::TcpStream::connect(tls_addr).unwrap();
    raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut raw, b"OHAI\0NOOP\0").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        !got.windows(4).any(|w| w == b"OHAI" || w == b"SUCC"),
        "{got:?}"
    );
}

/// The CVE-2011-0411 class: commands sent in clear right behind TLSSTART, in the same
/// packet, must never run (here a MAIL that would deliver to alice). The server refuses
/// TLSSTART itself and closes; alice's mailbox stays empty.
#[test]
fn commands_pipelined_after_tlsstart_are_not_executed() {
    let srv = TestServer::on(BACKEND);
    let alice = srv.add_user("alice", "pw");
    let m = message(
        0,
        ("alice", ""),
        ("mallory", "x.example"),
        b"",
        b"injected",
        &[],
    );
    let mut c = srv.client();
    let mut packet = b"TLSSTART\0MAIL\0".to_vec();
    packet.extend_from_slice(&m);
    packet.extend_from_slice(b"NOOP\0");
    c.send(&packet);
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
    // Also when the injected bytes come after the go-ahead, instead of a ClientHello:
    // the handshake fails; nothing is answered in clear.
    let mut c = srv.client();
    c.send(b"TLSSTART\0");
    assert_eq!(c.general(), "SUCCESS");
    c.send(b"MAIL\0");
    c.send(&m);
    let mut rest = Vec::new();
    let _ = c.s.read_to_end(&mut rest);
    assert!(
        !rest.windows(7).any(|w| w == b"SUCCESS" || w == b"FAILURE"),
        "answered in clear after the go-ahead: {rest:?}"
    );
    let mut c = srv.client();
    let list = c
        .mbox(
            MboxKind::List,
            MboxRequest::list("alice", now()),
            &alice,
            "localhost",
        )
        .unwrap();
    assert_eq!(cmtp_proto::mbox::decode_list(&list, 10).unwrap().len(), 0);
    assert_eq!(srv.metric("cmtpd_commands_total{command=\"MAIL\"}"), 0);
    assert_eq!(srv.metric("cmtpd_commands_total{command=\"NOOP\"}"), 0);
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"tls_refused\"}"),
        1
    );
}

#[test]
fn require_for_refuses_login_and_mailbox_in_clear_only() {
    let srv = TestServer::start_with(Opts {
        config: "[tls]\nrequire_for = [\"login\", \"mailbox\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let alice = srv.add_user("alice", "pw");
    let mut c = srv.client();
    c.send(b"LOGIN\0alice\0");
    assert_eq!(c.status(), "FAILURE");
    let mut req = MboxRequest::list("alice", now());
    req.signature = *alice
        .sign(&req.signing_bytes(MboxKind::List, "localhost"))
        .as_bytes();
    c.send(&cmtp_proto::Command::MboxList(req).to_bytes());
    assert_eq!(c.general(), "FAILURE");
    // Everything else still works in clear, on the same connection.
    c.send(b"KEYREQUEST\0alice\0\0NOOP\0");
    assert_eq!(c.key_reply(), *alice.public().as_bytes());
    assert_eq!(c.general(), "SUCCESS");
    rt().block_on(async {
        let mut t = upgraded(srv.addr, Some(srv.key)).await.unwrap();
        t.ohai().await.unwrap();
        t.set_server_key(srv.key);
        let xz = t.login("alice").await.unwrap();
        assert!(cmtp_crypto::Xzibit::parse(&xz).is_ok());
    });
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"tls_refused\"}"),
        2
    );
}

#[test]
fn offer_off_is_plain_cmtp1() {
    let srv = TestServer::start_with(Opts {
        config: "[tls]\noffer = false\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = srv.client();
    c.send(b"OHAI\0");
    let mut text = Vec::new();
    loop {
        let b = c.read_n(1)[0];
        if b == 0 {
            break;
        }
        text.push(b);
    }
    let text = String::from_utf8(text).unwrap();
    assert!(
        !cmtp_proto::reply::ohai_capabilities(&text).contains(&"TLS"),
        "{text}"
    );
    // Like any word a CMTP/1 server does not know: FAILURE, close.
    c.send(b"TLSSTART\0");
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}
