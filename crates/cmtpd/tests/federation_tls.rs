//! Federation over TLS (docs/protocol.md D7): two real `cmtpd` processes on loopback; A
//! relays to B over TLS because B offers it, records that, and refuses to relay in
//! clear once B stops offering it (as an attacker stripping the offer would make it look).

use std::time::Duration;

use cmtp_testkit::*;

mod fed;
use fed::submit;

/// Long enough for a relay over loopback with 1-second retries, on a busy 2-core CI box.
const DELIVERY: Duration = Duration::from_secs(60);

fn server(domain: &str, config: String) -> TestServer {
    TestServer::start_with(Opts {
        config,
        global_args: vec!["--domain".into(), domain.into()],
        ..Opts::default()
    })
}

fn fast_retries(route: Option<(&str, std::net::SocketAddr)>) -> String {
    let mut c = String::from(
        "[federation]\nretry_secs = [1]\nconnect_timeout_secs = 2\nreply_timeout_secs = 10\ndns = \"127.0.0.1:1\"\n",
    );
    if let Some((d, a)) = route {
        c.push_str(&format!("routes = {{ \"{d}\" = \"{a}\" }}\n"));
    }
    c
}

fn count(srv: &TestServer, mailbox: &str) -> u64 {
    let s = srv.admin(&["mailbox", "stats", "--json"], b"").json();
    s["mailboxes"][mailbox]["messages"].as_u64().unwrap_or(0)
}

/// The relay queue's entries (admin JSON).
fn queue(srv: &TestServer) -> Vec<serde_json::Value> {
    let q = srv.admin(&["queue", "list", "--json"], b"").json();
    q.as_array().cloned().unwrap_or_default()
}

#[test]
fn relay_uses_tls_and_refuses_a_downgrade_of_a_peer_seen_with_it() {
    let mut b = server("b.test", fast_retries(None));
    let a = server("a.test", fast_retries(Some(("b.test", b.addr))));
    let alice = a.add_user("alice", "pw");
    b.add_user("bob", "pw");
    let first = message(
        1,
        ("bob", "b.test"),
        ("alice", "a.test"),
        b"\0",
        b"one",
        &[],
    );
    assert_eq!(
        submit(&mut a.client(), &alice, "alice", "a.test", &first),
        "SUCCESS"
    );
    wait_until("bob's first copy at B", DELIVERY, || count(&b, "bob") == 1);
    // Over TLS, and recorded with the pin.
    assert!(b.metric("cmtpd_commands_total{command=\"TLSSTART\"}") >= 1);
    assert!(a.data.join("peers/b.test/tls").exists());
    assert!(a.data.join("peers/b.test/key").exists());

    // B (same key, same address) stops offering TLS.
    let config = b.config.clone().unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[tls]\noffer = false\n");
    std::fs::write(&config, text).unwrap();
    b.restart();
    let second = message(
        1,
        ("bob", "b.test"),
        ("alice", "a.test"),
        b"\0",
        b"two",
        &[],
    );
    assert_eq!(
        submit(&mut a.client(), &alice, "alice", "a.test", &second),
        "SUCCESS"
    );
    // A tries, refuses the plain connection and keeps the message queued with the reason.
    // (A first attempt may still go out on the TLS connection A held open to the old B
    // and fail with "peer closed connection"; the retry, a second later, connects anew.)
    let reason = poll("the refused attempt noted", DELIVERY, || {
        let q = queue(&a);
        let e = q.first()?["last_error"].as_str()?.to_owned();
        e.contains("did not offer TLS").then_some(e)
    });
    assert!(reason.contains("did not offer TLS"), "{reason}");
    assert_eq!(count(&b, "bob"), 1, "nothing relayed in clear");
    assert_eq!(b.metric("cmtpd_commands_total{command=\"MAIL\"}"), 0);
}
