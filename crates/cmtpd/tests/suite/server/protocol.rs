//! The simple commands and the framing: greeting, pipelining, KEYREQUEST, LOGIN,
//! SMTP clients, unknown and malformed commands.

use cmtp_testkit::*;

use crate::BACKEND;

#[test]
fn greeting_and_pipelined_simple_commands_in_order() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    // One packet, many commands: answered in order.
    c.send(b"OHAI\0NOOP\0\0KEYREQUEST\0\0KEYREQUEST\0\0\0HELP\0NOOP\0");
    let ohai = {
        let mut v = Vec::new();
        loop {
            let b = c.read_n(1)[0];
            if b == 0 {
                break;
            }
            v.push(b);
        }
        String::from_utf8(v).unwrap()
    };
    assert!(ohai.starts_with("OHAI CMTP/1 cmtpd/"), "{ohai}");
    assert_eq!(c.general(), "SUCCESS");
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(
        c.v0(),
        "Commands: OHAI NOOP KEYREQUEST LOGIN MAIL SUBMIT OBAI HELP MBOXLIST MBOXFETCH MBOXDEL"
    );
    assert_eq!(c.general(), "SUCCESS");
    c.send(b"OBAI\0");
    c.expect_eof();
}

#[test]
fn greeting_names_the_primary_domain() {
    let srv = TestServer::start_with(Opts {
        config: "domains = [\"Mail.Example\", \"other.example\"]\n".into(),
        ..Opts::on(BACKEND)
    });
    let mut c = Client::connect_raw(srv.addr, srv.key);
    assert_eq!(c.read_line(), "220 Mail.Example CMTP/1 ready\r\n");
}

#[test]
fn keyrequest_users_unknown_foreign_and_hostile_names() {
    let srv = TestServer::on(BACKEND);
    let alice = srv.add_user("alice", "pw");
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0alice\0\0KEYREQUEST\0alice\0localhost\0");
    assert_eq!(c.key_reply(), *alice.public().as_bytes());
    assert_eq!(c.key_reply(), *alice.public().as_bytes());
    for name in ["nobody", "../x", "..", "a/b", "a\\b", "x\u{1}y"] {
        let mut cmd = b"KEYREQUEST\0".to_vec();
        cmd.extend_from_slice(name.as_bytes());
        cmd.extend_from_slice(b"\0\0");
        c.send(&cmd);
        assert_eq!(c.key_or_none(), None, "{name}");
    }
    // Foreign domain: no key (the relay finds no server). Domains are DNS names,
    // compared case-insensitively (protocol.md §4): LOCALHOST is ours.
    c.send(b"KEYREQUEST\0alice\0elsewhere.example\0KEYREQUEST\0alice\0LOCALHOST\0");
    assert_eq!(c.key_or_none(), None);
    assert_eq!(c.key_or_none(), Some(*alice.public().as_bytes()));
    assert!(!srv.dir.path().join("x").exists());
    assert!(!srv.data.join("x").exists());
}

#[test]
fn keynotavailable_has_exact_length_then_next_reply_follows() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0nobody\0\0NOOP\0");
    // u32 0 + "KEYNOTAVAILABLE" NUL + sig(64) NUL = 4 + 16 + 65.
    let r = c.read_n(85);
    assert_eq!(&r[..20], b"\0\0\0\0KEYNOTAVAILABLE\0");
    c.verify(b"KEYNOTAVAILABLE", &r[20..84]);
    assert_eq!(r[84], 0);
    // The very next bytes are NOOP's SUCCESS.
    assert_eq!(c.read_n(8), b"SUCCESS\0");
}

#[test]
fn server_key_request_followed_by_domain_is_unknown_command() {
    let srv = TestServer::on(BACKEND);
    let mut c = srv.client();
    c.send(b"KEYREQUEST\0\0example.org\0");
    assert_eq!(c.key_reply(), *srv.key.as_bytes());
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}

#[test]
fn login_known_unknown_and_hostile() {
    let srv = TestServer::on(BACKEND);
    srv.add_user("bob", "secret");
    let mut c = srv.client();
    c.send(b"LOGIN\0bob\0LOGIN\0nobody\0LOGIN\0../bob\0NOOP\0");
    let xz = c.login_reply().expect("bob's xzibit");
    let kp = cmtp_crypto::Xzibit::parse(&xz)
        .unwrap()
        .open(b"secret")
        .unwrap();
    assert_eq!(kp.public(), {
        let k = srv.with_users(|u| u.public_key("bob")).unwrap().unwrap();
        cmtp_crypto::PublicKey::from_array(k)
    });
    // The 2016 server hung here; we answer the version-0 FAILURE.
    assert_eq!(c.login_reply(), None);
    assert_eq!(c.login_reply(), None);
    assert_eq!(c.general(), "SUCCESS");
    // An oversized name is a framing error: FAILURE and close.
    let mut long = b"LOGIN\0".to_vec();
    long.extend(std::iter::repeat_n(b'a', 300));
    c.send(&long);
    assert_eq!(c.general(), "FAILURE");
    c.expect_eof();
}

#[test]
fn smtp_clients_are_refused_in_smtp() {
    let srv = TestServer::on(BACKEND);
    for hello in [&b"EHLO client.example\r\n"[..], b"helo x\r\n", b"QUIT\r\n"] {
        let mut c = srv.client();
        c.send(hello);
        assert_eq!(
            c.read_line(),
            "554 5.5.1 this is a CMTP server; say OHAI\r\n"
        );
        c.expect_eof();
    }
    assert!(srv.metric("cmtpd_failures_total{reason=\"smtp\"}") >= 3);
}

#[test]
fn unknown_and_malformed_commands_fail_and_close() {
    let srv = TestServer::on(BACKEND);
    for bad in [
        &b"FOO\0"[..],
        b"KEYREQUESTX\0",
        b"BLAH x\r\n",
        b"NO\x01OP\0",
    ] {
        let mut c = srv.client();
        c.send(bad);
        assert_eq!(c.general(), "FAILURE", "{bad:?}");
        c.expect_eof();
    }
}

#[test]
fn malformed_mailbox_parameters_are_framing_errors() {
    let srv = TestServer::on(BACKEND);
    let upper_hex = format!("MBOXLIST\0quin\0{}\0{}\0", now(), "AB".repeat(64));
    let leading_zero = format!("MBOXDEL\0quin\0{}\0007\0{}\0", now(), "ab".repeat(64));
    let bad_part = format!("MBOXFETCH\0quin\0{}\01\0all\0{}\0", now(), "ab".repeat(64));
    for wire in [upper_hex, leading_zero, bad_part] {
        let mut c = srv.client();
        c.send(wire.as_bytes());
        assert_eq!(c.general(), "FAILURE", "{wire:?}");
        c.expect_eof();
    }
}
