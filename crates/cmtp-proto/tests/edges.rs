//! Edge cases named by the spec and docs/protocol.md, through the public API.

use cmtp_proto::command::{Command, CommandError};
use cmtp_proto::limits::MessageLimits;
use cmtp_proto::message::{Envelope, MessageDecoder, MessageError, MessageEvent};

fn parse_all(mut b: &[u8]) -> (Vec<Command>, Result<(), CommandError>) {
    let mut out = Vec::new();
    loop {
        match Command::parse(b) {
            Ok(Some((c, n))) => {
                out.push(c);
                b = &b[n..];
            }
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

fn server_key() -> Command {
    Command::KeyRequest {
        user: String::new(),
        domain: String::new(),
    }
}

#[test]
fn lone_nul_is_empty_command() {
    assert_eq!(Command::parse(b"\0"), Ok(Some((Command::Empty, 1))));
    assert_eq!(
        parse_all(b"\0\0OHAI\0\0"),
        (
            vec![
                Command::Empty,
                Command::Empty,
                Command::Ohai,
                Command::Empty
            ],
            Ok(())
        )
    );
}

#[test]
fn both_keyrequest_spellings() {
    assert_eq!(parse_all(b"KEYREQUEST\0\0"), (vec![server_key()], Ok(())));
    assert_eq!(
        parse_all(b"KEYREQUEST\0\0\0"),
        (vec![server_key(), Command::Empty], Ok(()))
    );
    assert_eq!(
        parse_all(b"KEYREQUEST\0\0NOOP\0"),
        (vec![server_key(), Command::Noop], Ok(()))
    );
    let (cmds, err) = parse_all(b"KEYREQUEST\0\0example\0");
    assert_eq!(cmds, vec![server_key()]);
    assert_eq!(err, Err(CommandError::UnknownCommand("example".into())));
    // Encoding a server-key request never sends a domain.
    let c = Command::KeyRequest {
        user: String::new(),
        domain: "ignored".into(),
    };
    assert_eq!(c.to_bytes(), b"KEYREQUEST\0\0");
}

#[test]
fn word_of_10_and_11_bytes() {
    assert_eq!(Command::parse(b"KEYREQUEST"), Ok(None));
    assert_eq!(
        Command::parse(b"KEYREQUESTS"),
        Err(CommandError::WordTooLong)
    );
    assert_eq!(
        Command::parse(b"MBOXFETCHX\0"),
        Err(CommandError::UnknownCommand("MBOXFETCHX".into()))
    );
    assert_eq!(
        Command::parse(b"MBOXFETCHXY"),
        Err(CommandError::WordTooLong)
    );
}

#[test]
fn params_of_255_and_256_bytes() {
    for prefix in [
        &b"LOGIN\0"[..],
        b"KEYREQUEST\0",
        b"KEYREQUEST\0bob\0",
        b"MBOXLIST\0",
    ] {
        let mut b = prefix.to_vec();
        b.extend(std::iter::repeat_n(b'x', 255));
        assert_eq!(Command::parse(&b), Ok(None), "{prefix:?}");
        b.push(b'x');
        assert_eq!(
            Command::parse(&b),
            Err(CommandError::ParamTooLong),
            "{prefix:?}"
        );
    }
    let mut b = b"KEYREQUEST\0".to_vec();
    b.extend(std::iter::repeat_n(b'u', 255));
    b.push(0);
    b.extend(std::iter::repeat_n(b'd', 255));
    b.push(0);
    assert_eq!(
        Command::parse(&b),
        Ok(Some((
            Command::KeyRequest {
                user: "u".repeat(255),
                domain: "d".repeat(255)
            },
            b.len()
        )))
    );
}

#[test]
fn smtp_verbs() {
    assert_eq!(
        Command::parse(b"EHLO x\r\n"),
        Ok(Some((Command::Smtp("EHLO".into()), 5)))
    );
    assert_eq!(
        Command::parse(b"helo x\r\n"),
        Ok(Some((Command::Smtp("HELO".into()), 5)))
    );
    assert_eq!(
        Command::parse(b"QUIT\r\n"),
        Ok(Some((Command::Smtp("QUIT".into()), 5)))
    );
    assert_eq!(
        Command::parse(b"Noop\r\n"),
        Ok(Some((Command::Smtp("NOOP".into()), 5)))
    );
    assert_eq!(Command::parse(b"NOOP\0"), Ok(Some((Command::Noop, 5))));
    assert_eq!(
        Command::parse(b"EHLO\0"),
        Err(CommandError::UnknownCommand("EHLO".into()))
    );
    assert_eq!(
        Command::parse(b"HELLO x\r\n"),
        Err(CommandError::MalformedWord)
    );
}

fn header(count: u32, log: u64, body: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&count.to_be_bytes());
    h.extend_from_slice(&log.to_be_bytes());
    h.extend_from_slice(&body.to_be_bytes());
    h
}

#[test]
fn huge_body_refused_right_after_header() {
    let h = header(0, 0, 1 << 62);
    let mut d = MessageDecoder::new(MessageLimits::default());
    // 23 bytes: nothing to decide yet.
    assert_eq!(d.decode(&h[..23]), Ok((23, None)));
    assert!(matches!(
        d.decode(&h[23..]),
        Err(MessageError::TooLarge { .. })
    ));
    // Even with u64::MAX lengths nothing overflows.
    let mut d = MessageDecoder::new(MessageLimits::default());
    assert!(matches!(
        d.decode(&header(0, 0, u64::MAX)),
        Err(MessageError::TooLarge { .. })
    ));
}

#[test]
fn too_many_attachments_and_long_log_refused() {
    let mut d = MessageDecoder::new(MessageLimits::default());
    assert_eq!(
        d.decode(&header(65, 0, 0)),
        Err(MessageError::TooManyAttachments { count: 65, max: 64 })
    );
    let mut d = MessageDecoder::new(MessageLimits::default());
    assert_eq!(
        d.decode(&header(0, 65537, 0)),
        Err(MessageError::LogTooLong {
            len: 65537,
            max: 65536
        })
    );
    let mut d = MessageDecoder::new(MessageLimits::default());
    assert!(matches!(d.decode(&header(64, 65536, 0)), Ok((24, None))));
}

#[test]
fn log_length_zero_and_invalid_names_pass_through() {
    let env = Envelope::new(0, "..", "a/b", "", "");
    let mut m = Vec::new();
    cmtp_proto::message::encode_message(&env, b"", b"x", &[], &mut m).unwrap();
    let mut d = MessageDecoder::new(MessageLimits::default());
    let (n, ev) = d.decode(&m).unwrap();
    // An invalid name is not a framing error: the caller validates.
    match ev {
        Some(MessageEvent::Envelope(e)) => {
            assert_eq!(e.dest_account, "..");
            assert!(cmtp_proto::validate_account(&e.dest_account).is_err());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.decode(&m[n..]), Ok((1, Some(MessageEvent::Body(b"x")))));
    assert_eq!(d.decode(&m[n + 1..]), Ok((0, Some(MessageEvent::End))));
    assert_eq!(d.decode(&[]), Ok((0, Some(MessageEvent::End))));
}

#[test]
fn ten_gib_body_in_constant_memory() {
    // The decoder keeps no per-byte state: 10 GiB pass through one 64 KiB buffer.
    let body: u64 = 10 << 30;
    let env = Envelope {
        body_length: body,
        ..Envelope::new(1, "bob", "d", "alice", "d")
    };
    let mut head = Vec::new();
    env.encode(&mut head);
    let mut d = MessageDecoder::new(MessageLimits::UNLIMITED);
    let (n, ev) = d.decode(&head).unwrap();
    assert_eq!(n, head.len());
    assert!(matches!(ev, Some(MessageEvent::Envelope(_))));
    let chunk = vec![0u8; 64 * 1024];
    let mut seen: u64 = 0;
    loop {
        let (n, ev) = d.decode(&chunk).unwrap();
        match ev {
            Some(MessageEvent::Body(c)) => {
                assert_eq!(c.len(), n);
                seen += n as u64;
            }
            Some(MessageEvent::End) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, body);
    assert_eq!(d.consumed(), head.len() as u64 + body);
}
