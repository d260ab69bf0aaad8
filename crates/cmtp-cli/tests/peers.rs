//! `cmtp` against scripted loopback peers: the 2016 server (replaying the bytes the
//! spec §10 records — the 2016 C server itself cannot run here), an SMTP server, a
//! closed port, a silent server, and DNS discovery (SRV) in front of a real cmtpd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use cmtp_crypto::KeyPair;
use cmtp_testkit::dns;
use cmtp_testkit::*;

const OTHER: i32 = 1;
const UNREACHABLE: i32 = 3;
const NOT_CMTP: i32 = 4;
const WRONG_PASSWORD: i32 = 5;
const UNKNOWN_USER: i32 = 6;
const KEY_CHANGED: i32 = 7;
const PROTOCOL: i32 = 10;
const TIMEOUT: i32 = 11;

/// A 2016 account from the shared vectors: name, password, xzibit, pk, sk.
struct Legacy {
    name: String,
    password: String,
    xzibit: Vec<u8>,
    pk: Vec<u8>,
    sk: Vec<u8>,
}

fn legacy_accounts() -> Vec<Legacy> {
    let text = std::fs::read_to_string(vectors_dir().join("xzibit.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["public_key_file"].is_string())
        .map(|x| Legacy {
            name: x["username"].as_str().unwrap().into(),
            password: x["password"].as_str().unwrap().into(),
            xzibit: hex::decode(x["xzibit"].as_str().unwrap()).unwrap(),
            pk: hex::decode(x["pk"].as_str().unwrap()).unwrap(),
            sk: hex::decode(x["sk"].as_str().unwrap()).unwrap(),
        })
        .collect()
}

fn read_cstr(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    r.read_until(0, &mut v).ok()?;
    if v.last() != Some(&0) {
        return None;
    }
    v.pop();
    Some(v)
}

/// Replays the 2016 server's observed behaviour (spec §10). Every MAIL it reads
/// (message bytes, then the 64-byte nonce) is sent on `mails`.
fn legacy_server(accounts: Vec<Legacy>, mails: mpsc::Sender<(Vec<u8>, Vec<u8>)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = KeyPair::from_seed(&[42u8; 32]).unwrap();
    let accounts = std::sync::Arc::new(accounts);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let accounts = accounts.clone();
            let mails = mails.clone();
            let server = KeyPair::from_secret_bytes(server.secret_bytes().as_slice()).unwrap();
            std::thread::spawn(move || {
                let _ = legacy_conn(s, &accounts, &server, &mails);
            });
        }
    });
    addr
}

fn key_reply(server: &KeyPair, key: &[u8]) -> Vec<u8> {
    let mut r = 1u32.to_be_bytes().to_vec();
    r.extend_from_slice(key);
    r.push(0);
    r.extend_from_slice(server.sign(key).as_bytes());
    r.push(0);
    assert_eq!(r.len(), 102);
    r
}

fn legacy_conn(
    s: TcpStream,
    accounts: &[Legacy],
    server: &KeyPair,
    mails: &mpsc::Sender<(Vec<u8>, Vec<u8>)>,
) -> Option<()> {
    let mut w = s.try_clone().ok()?;
    let mut r = BufReader::new(s);
    w.write_all(b"Welcome to CMTP version < 1\n\0").ok()?;
    loop {
        let cmd = read_cstr(&mut r)?;
        match &cmd[..] {
            b"OHAI" => w.write_all(b"HAI!!! :3\n\0").ok()?,
            b"NOOP" => w.write_all(b"O_O\n\0").ok()?,
            b"OBAI" => {
                w.write_all(b"Good bye\n\0").ok()?;
                return Some(());
            }
            b"KEYREQUEST" => {
                let user = read_cstr(&mut r)?;
                if user.is_empty() {
                    w.write_all(&key_reply(server, server.public().as_bytes()))
                        .ok()?;
                    continue;
                }
                let _domain = read_cstr(&mut r)?;
                match accounts.iter().find(|a| a.name.as_bytes() == user) {
                    Some(a) => w.write_all(&key_reply(server, &a.pk)).ok()?,
                    // Version 1, the message at the wrong offset, garbage between.
                    None => {
                        let mut g = 1u32.to_be_bytes().to_vec();
                        g.extend_from_slice(&[0xAA; 17]);
                        g.extend_from_slice(b"KEYNOTAVAILABLE\0");
                        g.resize(102, 0x55);
                        w.write_all(&g).ok()?
                    }
                }
            }
            b"LOGIN" => {
                let user = read_cstr(&mut r)?;
                // Unknown user: no reply at all, connection left open.
                if let Some(a) = accounts.iter().find(|a| a.name.as_bytes() == user) {
                    let mut out = a.xzibit.clone();
                    out.extend_from_slice(server.sign(&a.xzibit).as_bytes());
                    assert_eq!(out.len(), 220);
                    w.write_all(&out).ok()?;
                }
            }
            b"MAIL" => {
                let mut hdr = [0u8; 24];
                r.read_exact(&mut hdr).ok()?;
                let mut msg = hdr.to_vec();
                let count = u32::from_be_bytes(hdr[4..8].try_into().ok()?);
                let log = u64::from_be_bytes(hdr[8..16].try_into().ok()?);
                let body = u64::from_be_bytes(hdr[16..24].try_into().ok()?);
                for _ in 0..4 {
                    let n = read_cstr(&mut r)?;
                    msg.extend_from_slice(&n);
                    msg.push(0);
                }
                let mut rest = vec![0u8; (log + body) as usize];
                r.read_exact(&mut rest).ok()?;
                msg.extend_from_slice(&rest);
                // The 2016 bug: one byte per attachment.
                let mut junk = vec![0u8; count as usize];
                r.read_exact(&mut junk).ok()?;
                let mut nonce = vec![0u8; 64];
                r.read_exact(&mut nonce).ok()?;
                mails.send((msg, nonce)).ok()?;
                // Never replies.
            }
            // Unknown commands: silence.
            _ => {}
        }
    }
}

fn login_args<'a>(addr: &'a str, server: &'a str) -> Vec<&'a str> {
    vec!["login", addr, "--server", server, "--password-stdin"]
}

#[test]
fn the_2016_server_login_and_compat_send() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let accounts = legacy_accounts();
    let (carol_pw, dave_name, dave_sk) = (
        accounts[0].password.clone(),
        accounts[1].name.clone(),
        accounts[1].sk.clone(),
    );
    let carol = accounts[0].name.clone();
    let (tx, rx) = mpsc::channel();
    let server = legacy_server(accounts, tx);
    let p = home.join("p");
    let me = format!("{carol}@localhost");

    // Wrong password first (nothing is pinned for good before a successful login).
    let o = cmtp(home, &p, &login_args(&me, &server), b"not it\n");
    assert_eq!(o.code, WRONG_PASSWORD, "{o:?}");
    let o = cmtp(
        home,
        &p,
        &login_args(&me, &server),
        format!("{carol_pw}\n").as_bytes(),
    );
    o.ok();
    // The 2016 server says nothing for an unknown user: a timeout, reported as such.
    let o = cmtp(
        home,
        &home.join("q"),
        &[
            "--timeout",
            "1",
            "login",
            "nobody@localhost",
            "--server",
            &server,
            "--password-stdin",
        ],
        b"x\n",
    );
    assert_eq!(o.code, UNKNOWN_USER, "{o:?}");

    // Its garbled answer for an unknown user's key is recognised as "no such key".
    let o = cmtp(home, &p, &["key", "nobody@localhost"], b"");
    assert_eq!(o.code, UNKNOWN_USER, "{o:?}");
    let o = cmtp(
        home,
        &p,
        &["--compat", "2016", "send", "--to", "nobody@localhost"],
        b"hi",
    );
    assert_eq!(o.code, UNKNOWN_USER, "{o:?}");
    // A user's key from it, verified and pinned.
    let k = cmtp(
        home,
        &p,
        &["key", &format!("{dave_name}@localhost"), "--json"],
        b"",
    )
    .json();
    assert_eq!(k["status"], "new");

    // Sending needs the explicit --compat 2016.
    let to = format!("{dave_name}@localhost");
    let o = cmtp(home, &p, &["send", "--to", &to], b"hi");
    assert_eq!(o.code, OTHER, "{o:?}");
    assert!(o.stderr.contains("--compat 2016"), "{o:?}");
    // Attachments are refused (the 2016 server misreads them).
    let f = home.join("a.txt");
    std::fs::write(&f, b"x").unwrap();
    let o = cmtp(
        home,
        &p,
        &[
            "--compat",
            "2016",
            "send",
            "--to",
            &to,
            "--attach",
            f.to_str().unwrap(),
        ],
        b"hi",
    );
    assert_eq!(o.code, OTHER, "{o:?}");

    let o = cmtp(
        home,
        &p,
        &[
            "--compat",
            "2016",
            "send",
            "--to",
            &to,
            "--subject",
            "ignored",
        ],
        b"Hello Dave, from 2026.\n",
    );
    assert!(o.ok().contains("sent"), "{o:?}");
    let (msg, nonce) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(nonce, vec![0u8; 64]);
    // Envelope: version 1, no attachments, dest dave, src carol; the body opens with
    // dave's key to the bare text (what the 2016 client sealed).
    assert_eq!(&msg[0..8], &[0, 0, 0, 1, 0, 0, 0, 0]);
    let names = format!("{dave_name}\0localhost\0{carol}\0localhost\0");
    assert_eq!(&msg[24..24 + names.len()], names.as_bytes());
    let log_len = u64::from_be_bytes(msg[8..16].try_into().unwrap()) as usize;
    let body = &msg[24 + names.len() + log_len..];
    let dave = KeyPair::from_secret_bytes(&dave_sk).unwrap();
    let plain = dave.open_sealed(body).unwrap();
    assert_eq!(&plain[..], b"Hello Dave, from 2026.\n");

    // No mailbox on the 2016 server: a clear error, not a hang.
    let mut c = cmtp_cmd(home, &p);
    c.env("CMTP_PASSWORD", &carol_pw).args(["inbox"]);
    let o = run(c, b"");
    assert_eq!(o.code, OTHER, "{o:?}");
    assert!(o.stderr.contains("2016"), "{o:?}");
}

#[test]
fn an_smtp_server_is_not_a_cmtp_server() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"220 mx.example.org ESMTP Postfix (Debian)\r\n");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
    });
    let t = tempfile::tempdir().unwrap();
    let o = cmtp(
        t.path(),
        &t.path().join("p"),
        &login_args("a@example.org", &addr),
        b"pw\n",
    );
    assert_eq!(o.code, NOT_CMTP, "{o:?}");
    assert!(o.stderr.contains("not a CMTP server"), "{o:?}");
    assert!(o.stderr.contains("ESMTP Postfix"), "{o:?}");
}

#[test]
fn closed_port_is_unreachable_and_silence_times_out() {
    let t = tempfile::tempdir().unwrap();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let o = cmtp(
        t.path(),
        &t.path().join("p"),
        &login_args("a@localhost", &closed),
        b"pw\n",
    );
    assert_eq!(o.code, UNREACHABLE, "{o:?}");
    assert!(o.stderr.contains("cannot reach"), "{o:?}");

    // Accepts, never greets.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = l.local_addr().unwrap().to_string();
    let (keep_tx, keep_rx) = mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = keep_tx.send(s);
        }
    });
    let mut args = vec!["--timeout", "1"];
    args.extend(login_args("a@localhost", &silent));
    let o = cmtp(t.path(), &t.path().join("p"), &args, b"pw\n");
    assert_eq!(o.code, TIMEOUT, "{o:?}");
    assert!(o.stderr.contains("timed out"), "{o:?}");
    drop(keep_rx);
}

#[test]
fn login_finds_the_server_through_dns_srv() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    let dom = ["--domain", "example.test"];
    let o = admin(
        &data,
        &[
            "--domain",
            "example.test",
            "user",
            "add",
            "alice",
            "--password-stdin",
        ],
        b"pw\n",
    );
    o.ok();
    let srv = TestServer::start_with(Opts {
        data: Some(data.clone()),
        global_args: dom.map(String::from).to_vec(),
        ..Opts::default()
    });
    let d = dns::start(vec![(
        "_cmtp._tcp.example.test".into(),
        vec![dns::Rr::Srv(0, 0, srv.addr.port(), "localhost.".into())],
    )]);
    let p = home.join("p");
    let mut c = cmtp_cmd(home, &p);
    c.env("CMTP_DNS", d.addr.to_string()).args([
        "login",
        "alice@example.test",
        "--password-stdin",
        "--remember",
    ]);
    let o = run(c, b"pw\n");
    o.ok();
    let who = cmtp(home, &p, &["whoami", "--json"], b"").json();
    assert!(
        who["server"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", srv.addr.port())),
        "{who}"
    );
    // Self-mail through the discovered server.
    cmtp(
        home,
        &p,
        &["send", "--to", "alice@example.test", "--subject", "dns"],
        b"x",
    )
    .ok();
    let inbox = cmtp(home, &p, &["inbox", "--json"], b"").json();
    assert_eq!(inbox[0]["subject"], "dns");
}

/// The dialect comes from unsigned lines: once a profile logged in to a CMTP/1 server,
/// a 2016 answer from that server (here the scripted 2016 peer standing in for someone
/// rewriting the greeting) is refused as a downgrade, before any command is sent.
#[test]
fn a_2016_answer_after_a_cmtp1_login_is_a_downgrade() {
    let t = tempfile::tempdir().unwrap();
    let home = t.path();
    let data = home.join("data");
    add_user(&data, "alice", "alice secret");
    let srv = TestServer::start_in(&data);
    let real = srv.server_arg();
    let p = home.join("p");
    let o = cmtp(
        home,
        &p,
        &login_args("alice@localhost", &real),
        b"alice secret\n",
    );
    o.ok();
    let profile = std::fs::read_to_string(p.join("profile.toml")).unwrap();
    assert!(profile.contains("dialect = \"cmtp1\""), "{profile}");

    // The same profile now reaches the 2016 peer where its server was, with the pinned
    // key carried over, as an attacker on the path would present it.
    let (tx, _rx) = mpsc::channel();
    let legacy = legacy_server(legacy_accounts(), tx);
    std::fs::write(
        p.join("profile.toml"),
        profile.replace(&format!("\"{real}\""), &format!("\"{legacy}\"")),
    )
    .unwrap();
    let pins = std::fs::read_to_string(p.join("pins.toml")).unwrap();
    std::fs::write(
        p.join("pins.toml"),
        pins.replace(&format!("\"{real}\""), &format!("\"{legacy}\"")),
    )
    .unwrap();
    for args in [
        &["key", "bob@localhost"][..],
        &["send", "--to", "bob@localhost"],
        &["server", "trust", "--fingerprint", "00"],
    ] {
        let o = cmtp(home, &p, args, b"hi");
        assert_eq!(o.code, PROTOCOL, "{args:?}: {o:?}");
        assert!(o.stderr.contains("downgrade"), "{o:?}");
        assert!(o.stderr.contains("--compat 2016"), "{o:?}");
    }
    // Logging in again is refused the same way...
    let o = cmtp(
        home,
        &p,
        &login_args("alice@localhost", &legacy),
        b"alice secret\n",
    );
    assert_eq!(o.code, PROTOCOL, "{o:?}");
    assert!(o.stderr.contains("downgrade"), "{o:?}");
    // ...unless the 2016 dialect is chosen explicitly: then the next check applies
    // (this peer's key is not the pinned one).
    let o = cmtp(home, &p, &["--compat", "2016", "key", "bob@localhost"], b"");
    assert_eq!(o.code, KEY_CHANGED, "{o:?}");
}
