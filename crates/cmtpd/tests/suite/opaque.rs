//! The OPAQUE login extension (docs/protocol.md D8) against the real `cmtpd` binary over
//! real TCP on loopback: login, wrong password, unknown user, what a recorded
//! conversation gives an offline attacker, rate limits per account and per address,
//! and `legacy_login`.
//!
//! On the backend of the including target (`BACKEND`): tests/opaque.rs runs these on the
//! embedded store, tests/suite_pg.rs on PostgreSQL.

use std::net::SocketAddr;

use cmtp_crypto::opaque::{self as op, ClientLoginState, KE2_LEN};
use cmtp_crypto::{CryptoError, Xzibit};
use cmtp_proto::Command;
use cmtp_proto::opaque::{self as wire, OpaqueCommand};
use cmtp_testkit::*;

use super::BACKEND;

/// A raw client that keeps every byte of the conversation (both directions).
struct Recorder {
    c: Client,
    sent: Vec<u8>,
    received: Vec<u8>,
}

/// What the server answered to an extension command.
#[derive(Debug, PartialEq)]
enum Answer {
    Payload(Vec<u8>, [u8; 64]),
    Status(String),
}

impl Recorder {
    fn new(c: Client) -> Self {
        Self {
            c,
            sent: Vec::new(),
            received: Vec::new(),
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.sent.extend_from_slice(b);
        self.c.send(b);
    }

    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let v = self.c.read_n(n);
        self.received.extend_from_slice(&v);
        v
    }

    fn cmd(&mut self, cmd: OpaqueCommand) {
        self.send(&Command::Opaque(cmd).to_bytes());
    }

    /// `OHAI`: the capability words.
    fn capabilities(&mut self) -> Vec<String> {
        self.send(b"OHAI\0");
        let mut text = Vec::new();
        loop {
            let b = self.read_n(1)[0];
            if b == 0 {
                break;
            }
            text.push(b);
        }
        let text = String::from_utf8(text).unwrap();
        cmtp_proto::reply::ohai_capabilities(&text)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Reads an extension reply, checking every signature over its text (status) —
    /// payload signatures are the caller's (they cover request-bound bytes).
    fn answer(&mut self) -> Answer {
        let head = self.read_n(1)[0];
        if head != 0 {
            let mut text = vec![head];
            loop {
                let b = self.read_n(1)[0];
                if b == 0 {
                    break;
                }
                text.push(b);
            }
            let sig = self.read_n(65);
            self.c.verify(&text, &sig[..64]);
            return Answer::Status(String::from_utf8(text).unwrap());
        }
        let rest = self.read_n(3);
        match rest[2] {
            0 => {
                let mut text = Vec::new();
                loop {
                    let b = self.read_n(1)[0];
                    if b == 0 {
                        break;
                    }
                    text.push(b);
                }
                let sig = self.read_n(65);
                self.c.verify(&text, &sig[..64]);
                Answer::Status(format!("v0 {}", String::from_utf8(text).unwrap()))
            }
            1 => {
                let len = u32::from_be_bytes(self.read_n(4).try_into().unwrap()) as usize;
                let payload = self.read_n(len);
                let sig: [u8; 64] = self.read_n(64).try_into().unwrap();
                Answer::Payload(payload, sig)
            }
            v => panic!("unexpected reply version {v}"),
        }
    }

    /// OPAQUE1 for `user` with `password`: the client state, KE1 and the answer.
    fn login1(&mut self, user: &str, password: &[u8]) -> (ClientLoginState, Vec<u8>, Answer) {
        let (st, ke1) = ClientLoginState::start(password).unwrap();
        self.cmd(OpaqueCommand::Login1 {
            user: user.into(),
            ke1: ke1.clone(),
        });
        let a = self.answer();
        (st, ke1, a)
    }

    /// A whole login: the released xzibit, or the error of the step that failed.
    fn login(&mut self, user: &str, password: &[u8]) -> Result<Vec<u8>, String> {
        let (st, ke1, a) = self.login1(user, password);
        let Answer::Payload(ke2, sig) = a else {
            return Err(format!("OPAQUE1: {a:?}"));
        };
        self.c
            .verify(&wire::login1_reply_signing_bytes(user, &ke1, &ke2), &sig);
        let (ke3, session) = st.finish(password, &ke2).map_err(|e| e.to_string())?;
        self.cmd(OpaqueCommand::Login2 { ke3: ke3.clone() });
        match self.answer() {
            Answer::Payload(sealed, sig) => {
                self.c
                    .verify(&wire::login2_reply_signing_bytes(&ke3, &sealed), &sig);
                Ok(op::open_xzibit(&session, &sealed).unwrap())
            }
            a => Err(format!("OPAQUE2: {a:?}")),
        }
    }
}

fn recorder(srv: &TestServer) -> Recorder {
    Recorder::new(srv.client())
}

/// A client whose connection comes from `source` (another loopback address).
fn client_from(srv: &TestServer, source: [u8; 4]) -> Recorder {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = rt.block_on(sock.connect(srv.addr)).unwrap();
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut c = Client {
        s: std,
        key: srv.key,
    };
    let g = c.read_line();
    assert!(g.starts_with("220 "), "{g:?}");
    Recorder::new(c)
}

/// The xzibit the server's store holds for `user`.
fn stored_xzibit(srv: &TestServer, user: &str) -> Vec<u8> {
    srv.with_users(|u| u.xzibit(user)).unwrap().unwrap()
}

/// Adds `user` with an OPAQUE login for `password`. On the embedded store the way an
/// operator does (`cmtpd user add`, which registers it); on PostgreSQL the way an
/// existing account upgrades (a user record, then OPAQUEREG1/OPAQUEREG2 signed by the
/// user's key with a new xzibit sealed to the server), so that both ways are exercised
/// by the suite. (`cmtpd user add` on PostgreSQL is tested in admin_pg.rs.)
fn opaque_user(srv: &TestServer, user: &str, password: &str) {
    if srv.backend == Backend::Embedded {
        srv.admin_add_user(user, password);
        return;
    }
    let kp = srv.add_user(user, password);
    let mut r = recorder(srv);
    let (st, request) = op::ClientRegistrationState::start(password.as_bytes()).unwrap();
    let auth = |cmd: &mut OpaqueCommand| {
        let (_, bytes) = cmd.register_signing("localhost").unwrap();
        let sig = *kp.sign(&bytes).as_bytes();
        if let OpaqueCommand::Register1 { auth, .. } | OpaqueCommand::Register2 { auth, .. } = cmd {
            auth.signature = sig;
        }
    };
    let reg_auth = || wire::RegAuth {
        user: user.into(),
        timestamp: now(),
        signature: [0; 64],
    };
    let mut reg1 = OpaqueCommand::Register1 {
        auth: reg_auth(),
        request,
    };
    auth(&mut reg1);
    r.cmd(reg1);
    let Answer::Payload(resp, _) = r.answer() else {
        panic!("OPAQUEREG1 refused")
    };
    let record = st.finish(password.as_bytes(), &resp).unwrap();
    let xz = Xzibit::create_v2_with_limits(&kp, password.as_bytes(), 1, 8192).unwrap();
    let mut reg2 = OpaqueCommand::Register2 {
        auth: reg_auth(),
        record,
        sealed_xzibit: cmtp_crypto::seal(xz.as_bytes(), &srv.key).unwrap(),
    };
    auth(&mut reg2);
    r.cmd(reg2);
    assert_eq!(r.answer(), Answer::Status("SUCCESS".into()));
}

fn server_with(config: &str) -> TestServer {
    TestServer::start_with(Opts {
        config: config.into(),
        ..Opts::on(BACKEND)
    })
}

#[test]
fn opaque_login_releases_the_xzibit_and_a_wrong_password_learns_nothing() {
    let srv = TestServer::on(BACKEND);
    opaque_user(&srv, "alice", "correct horse battery");
    let mut r = recorder(&srv);
    assert!(r.capabilities().contains(&"OPAQUE".to_owned()));

    let released = r.login("alice", b"correct horse battery").unwrap();
    // The release is the stored xzibit, which the password opens to the published key.
    let stored = stored_xzibit(&srv, "alice");
    assert_eq!(released, stored);
    let kp = Xzibit::parse(&released)
        .unwrap()
        .open(b"correct horse battery")
        .unwrap();
    let mut k = srv.client();
    k.send(b"KEYREQUEST\0alice\0\0");
    assert_eq!(k.key_reply(), *kp.public().as_bytes());

    // A wrong password: the client cannot open the envelope (no KE3 to send), and a
    // made-up KE3 is refused.
    let (st, _, a) = r.login1("alice", b"wrong horse battery");
    let Answer::Payload(ke2, _) = a else {
        panic!("{a:?}")
    };
    assert_eq!(
        st.finish(b"wrong horse battery", &ke2).unwrap_err(),
        CryptoError::WrongPassword
    );
    r.cmd(OpaqueCommand::Login2 { ke3: vec![7; 64] });
    assert_eq!(r.answer(), Answer::Status("v0 AUTHFAILURE".into()));
    // OPAQUE2 without an OPAQUE1 pending (the last one was used up).
    r.cmd(OpaqueCommand::Login2 { ke3: vec![7; 64] });
    assert_eq!(r.answer(), Answer::Status("v0 AUTHFAILURE".into()));
    // The connection is still fine.
    assert_eq!(r.login("alice", b"correct horse battery").unwrap(), stored);
}

#[test]
fn unknown_user_is_answered_in_the_same_shape_as_a_wrong_password() {
    let srv = TestServer::on(BACKEND);
    opaque_user(&srv, "alice", "correct horse battery");
    let mut r = recorder(&srv);
    for user in ["alice", "nobody", "no/such name"] {
        let (st, ke1, a) = r.login1(user, b"a guess");
        let Answer::Payload(ke2, sig) = a else {
            panic!("{user}: {a:?}")
        };
        assert_eq!(ke2.len(), KE2_LEN, "{user}");
        r.c.verify(&wire::login1_reply_signing_bytes(user, &ke1, &ke2), &sig);
        assert_eq!(
            st.finish(b"a guess", &ke2).unwrap_err(),
            CryptoError::WrongPassword,
            "{user}"
        );
        r.cmd(OpaqueCommand::Login2 { ke3: vec![1; 64] });
        assert_eq!(
            r.answer(),
            Answer::Status("v0 AUTHFAILURE".into()),
            "{user}"
        );
    }
}

/// What an attacker holding the complete recorded conversation of a successful login
/// (and unlimited computing power, but not the server's secrets) can test offline.
/// Checked precisely:
/// 1. No xzibit: no 16-byte run of the stored xzibit (its salt, nonce or ciphertext)
///    occurs anywhere in the bytes of either direction, so there is nothing to try
///    passwords against with Argon2id.
/// 2. The OPAQUE messages do not recognise the right password: running the whole
///    client computation (OPRF finalisation, KSF, envelope opening) on the recorded KE2
///    with the RIGHT password fails exactly as with a wrong one (a fresh blind cannot
///    unblind the recorded evaluation; the real blind never left the client).
/// 3. The release does not open with anything the attacker can derive: the session
///    keys of (2) do not exist, and no 64-byte window of the transcript is the key.
#[test]
fn a_recorded_login_gives_an_offline_attacker_nothing_to_test_a_password_against() {
    let srv = TestServer::on(BACKEND);
    let password = b"correct horse battery";
    opaque_user(&srv, "alice", "correct horse battery");
    let mut r = recorder(&srv);
    r.capabilities();
    let released = r.login("alice", password).unwrap();
    let stored = stored_xzibit(&srv, "alice");
    assert_eq!(released, stored, "the login did succeed");
    r.send(b"OBAI\0");

    let transcript: Vec<&[u8]> = vec![&r.sent, &r.received];
    // 1. No part of the xzibit crosses the network in clear.
    for side in &transcript {
        for w in stored.windows(16) {
            assert!(
                !side.windows(16).any(|x| x == w),
                "xzibit bytes on the wire"
            );
        }
    }
    // 2. Find the recorded KE2 (after the OHAI answer) and try the right password.
    let ke1_at = r.sent.windows(8).position(|w| w == b"OPAQUE1\0").unwrap() + 8 + 6 + 2;
    let ke1 = &r.sent[ke1_at..ke1_at + op::KE1_LEN];
    let ke2_at = r
        .received
        .windows(8)
        .position(|w| w == [0, 0, 0, 1, 0, 0, 1, 64])
        .expect("the KE2 reply")
        + 8;
    let ke2 = &r.received[ke2_at..ke2_at + KE2_LEN];
    let sig_at = ke2_at + KE2_LEN;
    r.c.verify(
        &wire::login1_reply_signing_bytes("alice", ke1, ke2),
        &r.received[sig_at..sig_at + 64],
    );
    for guess in [&password[..], b"wrong horse battery"] {
        let (st, _) = ClientLoginState::start(guess).unwrap();
        assert_eq!(
            st.finish(guess, ke2).unwrap_err(),
            CryptoError::WrongPassword,
            "the recorded KE2 must not confirm any guess, the right one included"
        );
    }
    // 3. The release: the xzibit, encrypted; no window of the transcript opens it.
    // The release is the last reply: u32 1 | u32 len | sealed | sig.
    let rel_at = r.received.len() - (8 + stored.len() + op::RELEASE_OVERHEAD + 64);
    assert_eq!(r.received[rel_at..rel_at + 4], [0, 0, 0, 1]);
    let len = u32::from_be_bytes(r.received[rel_at + 4..rel_at + 8].try_into().unwrap()) as usize;
    let sealed = &r.received[rel_at + 8..rel_at + 8 + len];
    assert_eq!(len, stored.len() + op::RELEASE_OVERHEAD);
    for side in &transcript {
        for w in side.windows(64) {
            let Ok(k) = op::SessionKey::from_bytes(w) else {
                continue;
            };
            assert!(op::open_xzibit(&k, sealed).is_err());
        }
    }
}

#[test]
fn online_guessing_is_limited_per_account_from_many_addresses() {
    // Per-address limits off and no exempt network: only the per-account bucket acts.
    let srv = server_with(
        "[limits]\nexempt_networks = []\n[rate]\nopaque_per_sec = 0\n\
         opaque_account_per_min = 1\nopaque_account_burst = 3\n",
    );
    opaque_user(&srv, "alice", "correct horse battery");
    let mut outcomes = Vec::new();
    for n in 2..8u8 {
        let mut r = client_from(&srv, [127, 0, 0, n]);
        let (_, _, a) = r.login1("alice", b"guess");
        outcomes.push(matches!(a, Answer::Payload(..)));
        if !outcomes.last().unwrap() {
            assert_eq!(
                a,
                Answer::Status("FAILURE".into()),
                "a signed general FAILURE"
            );
        }
    }
    assert_eq!(outcomes, [true, true, true, false, false, false]);
    // Another account, and a name that is no account, have their own buckets.
    let mut r = client_from(&srv, [127, 0, 0, 9]);
    assert!(matches!(r.login1("bob", b"guess").2, Answer::Payload(..)));
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"rate_limited\"}"),
        3
    );
}

#[test]
fn online_guessing_is_limited_per_address() {
    let srv = server_with(
        "[limits]\nexempt_networks = []\n[rate]\nopaque_per_sec = 1\nopaque_burst = 2\n\
         opaque_account_per_min = 0\n",
    );
    let mut a = client_from(&srv, [127, 0, 0, 2]);
    let mut got = Vec::new();
    for n in 0..6 {
        let answer = a.login1(&format!("u{n}"), b"g").2;
        if !matches!(answer, Answer::Payload(..)) {
            assert_eq!(answer, Answer::Status("FAILURE".into()));
        }
        got.push(matches!(answer, Answer::Payload(..)));
    }
    // A burst of 2, then one a second: six attempts in a row cannot all pass (they
    // would need four seconds).
    assert_eq!(got[..2], [true, true]);
    assert!(got.iter().any(|ok| !ok), "{got:?}");
    let mut b = client_from(&srv, [127, 0, 0, 3]);
    assert!(matches!(b.login1("u4", b"g").2, Answer::Payload(..)));
}

#[test]
fn plain_login_is_refused_for_an_upgraded_account_and_allowed_for_others() {
    let srv = TestServer::on(BACKEND);
    opaque_user(&srv, "alice", "correct horse battery");
    srv.add_user("carol", "pw");
    let mut c = srv.client();
    c.send(b"LOGIN\0alice\0");
    assert_eq!(
        c.login_reply(),
        None,
        "alice has an OPAQUE login: no xzibit in clear"
    );
    c.send(b"LOGIN\0carol\0");
    assert!(c.login_reply().is_some(), "carol has not upgraded yet");
    assert_eq!(
        srv.metric("cmtpd_failures_total{reason=\"legacy_login_refused\"}"),
        1
    );

    let deny = server_with("legacy_login = \"deny\"\n");
    deny.add_user("carol", "pw");
    let mut c = deny.client();
    c.send(b"LOGIN\0carol\0");
    assert_eq!(c.login_reply(), None);
}

#[test]
fn registration_needs_the_users_signature_and_a_fresh_timestamp() {
    let srv = TestServer::on(BACKEND);
    let kp = srv.add_user("carol", "old pw");
    let mut r = recorder(&srv);
    let (st, request) = op::ClientRegistrationState::start(b"new pw").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |cmd: &mut OpaqueCommand, key: &cmtp_crypto::KeyPair| {
        let (_, bytes) = cmd.register_signing("localhost").unwrap();
        let sig = *key.sign(&bytes).as_bytes();
        if let OpaqueCommand::Register1 { auth, .. } | OpaqueCommand::Register2 { auth, .. } = cmd {
            auth.signature = sig;
        }
    };
    let auth = |t| wire::RegAuth {
        user: "carol".into(),
        timestamp: t,
        signature: [0; 64],
    };
    // Someone else's key, and a stale timestamp: refused.
    let other = cmtp_crypto::KeyPair::generate().unwrap();
    for (key, t) in [(&other, now), (&kp, now - 3600)] {
        let mut reg1 = OpaqueCommand::Register1 {
            auth: auth(t),
            request: request.clone(),
        };
        sign(&mut reg1, key);
        r.cmd(reg1);
        assert_eq!(r.answer(), Answer::Status("v0 AUTHFAILURE".into()));
    }
    let mut reg1 = OpaqueCommand::Register1 {
        auth: auth(now),
        request: request.clone(),
    };
    sign(&mut reg1, &kp);
    r.cmd(reg1);
    let Answer::Payload(resp, sig) = r.answer() else {
        panic!()
    };
    r.c.verify(
        &wire::reg1_reply_signing_bytes("carol", &request, &resp),
        &sig,
    );
    let record = st.finish(b"new pw", &resp).unwrap();
    // A new xzibit under the new password travels sealed to the server key.
    let xz = Xzibit::create_v2_with_limits(&kp, b"new pw", 1, 8192).unwrap();
    let sealed = cmtp_crypto::seal(xz.as_bytes(), &srv.key).unwrap();
    let mut reg2 = OpaqueCommand::Register2 {
        auth: auth(now),
        record,
        sealed_xzibit: sealed,
    };
    sign(&mut reg2, &kp);
    r.cmd(reg2.clone());
    assert_eq!(r.answer(), Answer::Status("SUCCESS".into()));
    assert_eq!(stored_xzibit(&srv, "carol"), xz.as_bytes());
    // The new password logs in; LOGIN no longer hands out the xzibit.
    assert_eq!(r.login("carol", b"new pw").unwrap(), xz.as_bytes());
    let mut c = srv.client();
    c.send(b"LOGIN\0carol\0");
    assert_eq!(c.login_reply(), None);
    // An older registration cannot be replayed over a newer one.
    if let OpaqueCommand::Register2 { auth, .. } = &mut reg2 {
        auth.timestamp = now - 10;
    }
    sign(&mut reg2, &kp);
    r.cmd(reg2);
    assert_eq!(r.answer(), Answer::Status("v0 AUTHFAILURE".into()));
}
