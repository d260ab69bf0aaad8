//! Property tests: encode→decode round trips for every type, arbitrary bytes never
//! panic a decoder, and any split of a stream decodes like the contiguous stream.

use cmtp_proto::body::{AttachmentPlain, Body, InternalBody};
use cmtp_proto::command::{Command, CommandError, SMTP_VERBS};
use cmtp_proto::limits::MessageLimits;
use cmtp_proto::mbox::{self, FetchPart, ListEntry, MboxRequest};
use cmtp_proto::message::{self, Envelope, MessageDecoder, MessageError, MessageEvent};
use cmtp_proto::reply::{self, KeyReply, LoginReply, MboxReply, OhaiAnswer, StatusReply};
use cmtp_proto::submit::SubmitRequest;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\u{0}]{0,40}",
        "[a-z]{0,255}",
        Just(String::new()),
        Just("a".repeat(255)),
    ]
}

fn nonempty_name() -> impl Strategy<Value = String> {
    prop_oneof!["[^\u{0}]{1,40}", "[a-z]{1,255}"]
}

fn sig() -> impl Strategy<Value = [u8; 64]> {
    prop::array::uniform32(any::<u8>()).prop_flat_map(|a| {
        prop::array::uniform32(any::<u8>()).prop_map(move |b| {
            let mut s = [0u8; 64];
            s[..32].copy_from_slice(&a);
            s[32..].copy_from_slice(&b);
            s
        })
    })
}

fn part() -> impl Strategy<Value = FetchPart> {
    prop_oneof![Just(FetchPart::Full), Just(FetchPart::Head)]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Empty),
        Just(Command::Ohai),
        Just(Command::Noop),
        Just(Command::Mail),
        Just(Command::Obai),
        Just(Command::Help),
        Just(Command::TlsStart),
        (nonempty_name(), name()).prop_map(|(user, domain)| Command::KeyRequest { user, domain }),
        Just(Command::KeyRequest {
            user: String::new(),
            domain: String::new()
        }),
        name().prop_map(|user| Command::Login { user }),
        (name(), any::<u64>(), sig()).prop_map(|(u, t, s)| {
            let mut r = MboxRequest::list(u, t);
            r.signature = s;
            Command::MboxList(r)
        }),
        (name(), any::<u64>(), any::<u64>(), part(), sig()).prop_map(|(u, t, i, p, s)| {
            let mut r = MboxRequest::fetch(u, t, i, p);
            r.signature = s;
            Command::MboxFetch(r)
        }),
        (name(), any::<u64>(), any::<u64>(), sig()).prop_map(|(u, t, i, s)| {
            let mut r = MboxRequest::delete(u, t, i);
            r.signature = s;
            Command::MboxDelete(r)
        }),
        (name(), any::<u64>(), sig()).prop_map(|(u, t, s)| {
            let mut r = SubmitRequest::new(u, t);
            r.signature = s;
            Command::Submit(r)
        }),
    ]
}

/// Outcome of parsing a stream: the commands, then how it stopped.
type Outcome = (Vec<(Command, usize)>, Result<(), CommandError>, usize);

fn parse_contiguous(buf: &[u8]) -> Outcome {
    let mut pos = 0;
    let mut cmds = Vec::new();
    loop {
        match Command::parse(&buf[pos..]) {
            Ok(Some((c, n))) => {
                assert!(n > 0 && pos + n <= buf.len());
                cmds.push((c, n));
                pos += n;
            }
            Ok(None) => return (cmds, Ok(()), pos),
            Err(e) => return (cmds, Err(e), pos),
        }
    }
}

/// Feeds `buf` in chunks ending at `cuts`, parsing whenever bytes arrive, as a server
/// reading from a socket would.
fn parse_split(buf: &[u8], cuts: &[usize]) -> Outcome {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    ends.push(buf.len());
    ends.sort_unstable();
    let mut pos = 0;
    let mut cmds = Vec::new();
    for end in ends {
        loop {
            match Command::parse(&buf[pos..end]) {
                Ok(Some((c, n))) => {
                    cmds.push((c, n));
                    pos += n;
                }
                Ok(None) => break,
                Err(e) => return (cmds, Err(e), pos),
            }
        }
    }
    (cmds, Ok(()), pos)
}

/// Decodes a message fed in chunks ending at `cuts`; returns the flattened events
/// (data chunks merged), the consumed bytes, and the error if any.
fn decode_message(
    buf: &[u8],
    cuts: &[usize],
    limits: MessageLimits,
) -> (Vec<String>, Vec<u8>, Option<MessageError>) {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (buf.len() + 1)).collect();
    ends.push(buf.len());
    ends.sort_unstable();
    let mut d = MessageDecoder::new(limits);
    let mut pos = 0;
    let mut evs: Vec<String> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut consumed = Vec::new();
    let flush = |evs: &mut Vec<String>, data: &mut Vec<u8>, kind: &str| {
        if !data.is_empty() {
            evs.push(format!("{kind}:{}", hex::encode(&*data)));
            data.clear();
        }
    };
    let mut kind = String::new();
    for end in ends {
        loop {
            match d.decode(&buf[pos..end]) {
                Ok((n, ev)) => {
                    consumed.extend_from_slice(&buf[pos..pos + n]);
                    pos += n;
                    let (k, chunk) = match ev {
                        None => {
                            assert_eq!(pos, end, "None means all input used");
                            break;
                        }
                        Some(MessageEvent::Log(c)) => ("log", c),
                        Some(MessageEvent::Body(c)) => ("body", c),
                        Some(MessageEvent::Attachment(c)) => ("att", c),
                        Some(other) => {
                            flush(&mut evs, &mut data, &kind);
                            let end_ev = other == MessageEvent::End;
                            evs.push(format!("{other:?}"));
                            if end_ev {
                                assert!(d.is_done());
                                return (evs, consumed, None);
                            }
                            continue;
                        }
                    };
                    assert!(!chunk.is_empty());
                    if kind != k {
                        flush(&mut evs, &mut data, &kind);
                        kind = k.to_string();
                    }
                    data.extend_from_slice(chunk);
                }
                Err(e) => {
                    flush(&mut evs, &mut data, &kind);
                    return (evs, consumed, Some(e));
                }
            }
        }
    }
    flush(&mut evs, &mut data, &kind);
    (evs, consumed, None)
}

fn small_limits() -> MessageLimits {
    MessageLimits {
        max_total: 4096,
        max_attachments: 8,
        max_log: 512,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn command_round_trip(cmd in command()) {
        let b = cmd.to_bytes();
        prop_assert_eq!(Command::parse(&b), Ok(Some((cmd.clone(), b.len()))));
        for cut in 0..b.len() {
            prop_assert_eq!(Command::parse(&b[..cut]), Ok(None));
        }
    }

    #[test]
    fn smtp_verbs_any_case(i in 0..SMTP_VERBS.len(), lower in any::<bool>(), term in prop_oneof![Just(b' '), Just(b'\r'), Just(b'\n')]) {
        let v = SMTP_VERBS[i];
        let word = if lower { v.to_ascii_lowercase() } else { v.to_string() };
        let mut b = word.into_bytes();
        b.push(term);
        prop_assert_eq!(Command::parse(&b), Ok(Some((Command::Smtp(v.to_string()), v.len() + 1))));
    }

    #[test]
    fn pipelined_commands_any_split(cmds in prop::collection::vec(command(), 0..12), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let mut buf = Vec::new();
        for c in &cmds {
            c.encode(&mut buf);
        }
        let whole = parse_contiguous(&buf);
        prop_assert_eq!(whole.1.clone(), Ok(()));
        prop_assert_eq!(whole.2, buf.len());
        let got: Vec<Command> = whole.0.iter().map(|(c, _)| c.clone()).collect();
        prop_assert_eq!(&got, &cmds);
        prop_assert_eq!(parse_split(&buf, &cuts), whole);
    }

    #[test]
    fn arbitrary_command_bytes_split_equivalent(bytes in prop::collection::vec(any::<u8>(), 0..600), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        prop_assert_eq!(parse_split(&bytes, &cuts), parse_contiguous(&bytes));
    }

    #[test]
    fn arbitrary_command_bytes_mostly_printable(s in "[A-Z\0 \r\n]{0,40}", cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        prop_assert_eq!(parse_split(s.as_bytes(), &cuts), parse_contiguous(s.as_bytes()));
    }

    #[test]
    fn message_round_trip_any_split(
        version in any::<u32>(),
        names in (name(), name(), name(), name()),
        log in prop::collection::vec(any::<u8>(), 0..300),
        body in prop::collection::vec(any::<u8>(), 0..2000),
        atts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let env = Envelope::new(version, names.0, names.1, names.2, names.3);
        let att_refs: Vec<&[u8]> = atts.iter().map(|a| a.as_slice()).collect();
        let mut m = Vec::new();
        message::encode_message(&env, &log, &body, &att_refs, &mut m).unwrap();
        let limits = MessageLimits::default();
        let (evs, consumed, err) = decode_message(&m, &cuts, limits);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&consumed, &m);
        let (whole, _, _) = decode_message(&m, &[], limits);
        prop_assert_eq!(&evs, &whole);
        let full_env = Envelope {
            attachment_count: atts.len() as u32,
            log_length: log.len() as u64,
            body_length: body.len() as u64,
            ..env
        };
        prop_assert_eq!(&evs[0], &format!("{:?}", MessageEvent::Envelope(full_env.clone())));
        prop_assert_eq!(evs.last().unwrap(), "End");
        prop_assert_eq!(full_env.body_end(), (m.len() - atts.iter().map(|a| 8 + a.len()).sum::<usize>()) as u64);
        // `is_done` turns true exactly when the last byte has been consumed.
        let mut d = MessageDecoder::new(limits);
        let mut pos = 0;
        while pos < m.len() {
            prop_assert!(!d.is_done());
            let (n, _) = d.decode(&m[pos..]).unwrap();
            pos += n;
        }
        prop_assert!(d.is_done());
        prop_assert_eq!(d.decode(&[]), Ok((0, Some(MessageEvent::End))));
        // Trailing bytes are never consumed.
        let mut extra = m.clone();
        extra.extend_from_slice(b"OHAI\0");
        let (_, consumed2, err2) = decode_message(&extra, &cuts, limits);
        prop_assert_eq!(err2, None);
        prop_assert_eq!(consumed2, m);
    }

    #[test]
    fn arbitrary_message_bytes_split_equivalent(bytes in prop::collection::vec(any::<u8>(), 0..400), cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        // Events and error agree; how many bytes a failing call had used is unspecified.
        let a = decode_message(&bytes, &cuts, small_limits());
        let b = decode_message(&bytes, &[], small_limits());
        prop_assert_eq!((a.0, a.2.clone()), (b.0, b.2));
        if a.2.is_none() {
            prop_assert_eq!(a.1, b.1);
        }
    }

    #[test]
    fn arbitrary_message_header_respects_limits(header in prop::collection::vec(any::<u8>(), 24..24+8), rest in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut m = header;
        m.extend_from_slice(&rest);
        let (_, consumed, _) = decode_message(&m, &[], small_limits());
        prop_assert!(consumed.len() as u64 <= small_limits().max_total);
    }

    #[test]
    fn internal_body_round_trip(
        timestamp in any::<u32>(),
        subject in "[^\u{0}]{0,30}",
        reply_to in "[^\u{0}]{0,30}",
        cc in prop::collection::vec("[^\u{0}]{1,20}", 0..4),
        text in ".{0,100}",
        nul_text in any::<bool>(),
    ) {
        let text = if nul_text { format!("\0{text}") } else { text };
        let ib = InternalBody { timestamp, subject, reply_to, cc, text };
        let b = ib.to_bytes().unwrap();
        prop_assert_eq!(Body::decode(&b), Body::Internal(ib));
    }

    #[test]
    fn body_decode_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        match Body::decode(&bytes) {
            Body::Internal(ib) => prop_assert_eq!(ib.to_bytes().unwrap(), bytes),
            Body::Legacy(s) => prop_assert_eq!(s, String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    #[test]
    fn attachment_round_trip(name in "[^\u{0}]{0,40}", data in prop::collection::vec(any::<u8>(), 0..300)) {
        let a = AttachmentPlain { name, data };
        prop_assert_eq!(AttachmentPlain::decode(&a.to_bytes().unwrap()), Ok(a));
    }

    #[test]
    fn attachment_decode_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(a) = AttachmentPlain::decode(&bytes) {
            prop_assert_eq!(a.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn list_round_trip(entries in prop::collection::vec(
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>(), name(), name()),
        0..10,
    )) {
        let entries: Vec<ListEntry> = entries.into_iter().map(|(id, received, size, version, attachment_count, body_end, src_account, src_domain)| ListEntry {
            id, received, size, version, attachment_count, body_end, src_account, src_domain,
        }).collect();
        let mut p = Vec::new();
        mbox::encode_list(&entries, &mut p);
        prop_assert_eq!(mbox::decode_list(&p, 100), Ok(entries));
    }

    #[test]
    fn list_decode_arbitrary(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = mbox::decode_list(&bytes, u32::MAX);
        let _ = ListEntry::decode(&bytes);
    }

    #[test]
    fn replies_round_trip(ok in any::<bool>(), s in sig(), key in prop::array::uniform32(any::<u8>()), text in "[^\u{0}]{0,200}", xz in prop::collection::vec(any::<u8>(), 0..400), payload in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut b = Vec::new();
        reply::encode_general(ok, &s, &mut b);
        let (g, n) = reply::decode_general(&b).unwrap().unwrap();
        prop_assert_eq!((g.ok, g.sig, n), (ok, s, b.len()));

        let mut b = Vec::new();
        reply::encode_v0(&text, &s, &mut b);
        let (r, n) = reply::decode_general_or_v0(&b).unwrap().unwrap();
        prop_assert_eq!(n, b.len());
        prop_assert_eq!(r.signed_bytes(), text.as_bytes());
        prop_assert!(matches!(r, StatusReply::V0(_)));
        let (k, _) = reply::decode_key_reply(&b).unwrap().unwrap();
        prop_assert!(matches!(k, KeyReply::V0(v) if v.text == text && v.sig == s));

        let mut b = Vec::new();
        reply::encode_key(1, &key, &s, &mut b);
        prop_assert_eq!(reply::decode_key_reply(&b).unwrap(), Some((KeyReply::Key { version: 1, key, sig: s }, 102)));

        let mut b = Vec::new();
        reply::encode_login(1, &xz, &s, &mut b);
        prop_assert_eq!(reply::decode_login_reply(&b, 400).unwrap(), Some((LoginReply::Xzibit { version: 1, xzibit: xz.clone(), sig: s }, b.len())));

        let mut b = Vec::new();
        reply::encode_mbox_ok(payload.len() as u64, &mut b);
        b.extend_from_slice(&payload);
        reply::encode_mbox_trailer(&s, &mut b);
        prop_assert_eq!(reply::decode_mbox_reply(&b, 400).unwrap(), Some((MboxReply::Ok { payload, sig: s }, b.len())));

        let mut b = Vec::new();
        reply::encode_ohai(&text.replace('\0', ""), &[], &mut b);
        let (o, n) = reply::decode_ohai(&b).unwrap().unwrap();
        prop_assert_eq!(n, b.len());
        prop_assert_eq!(o, OhaiAnswer::Cmtp(format!("OHAI CMTP/1 {text}")));
    }

    #[test]
    fn greeting_round_trip(domain in "[^\u{0}\r]{0,200}") {
        let mut b = Vec::new();
        reply::encode_greeting(&domain, &mut b);
        let (g, n) = reply::decode_greeting(&b).unwrap().unwrap();
        prop_assert_eq!(n, b.len());
        prop_assert_eq!(g.text, format!("220 {domain} CMTP/1 ready"));
    }

    #[test]
    fn reply_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), max in any::<u32>()) {
        for cut in [0, 1, 4, 8, 12, 73, 102, 220, bytes.len()] {
            let b = &bytes[..cut.min(bytes.len())];
            let _ = reply::decode_greeting(b);
            let _ = reply::decode_ohai(b);
            let _ = reply::decode_general(b);
            let _ = reply::decode_v0(b);
            let _ = reply::decode_general_or_v0(b);
            let _ = reply::decode_key_reply(b);
            let _ = reply::decode_login_reply(b, max);
            let _ = cmtp_proto::legacy::decode_login(b);
            let _ = cmtp_proto::legacy::decode_login_reply_any(b, max, cut % 2 == 0);
            let _ = cmtp_proto::legacy::decode_key_answer(b);
            let _ = cmtp_proto::legacy::decode_noop_answer(b);
            let _ = cmtp_proto::legacy::decode_bye(b);
            let _ = reply::decode_mbox_reply_head(b);
            let _ = reply::decode_mbox_reply(b, u64::from(max));
        }
    }

    #[test]
    fn reply_decoders_prefix_consistent(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        // A decoder that completes on a prefix completes identically on the whole.
        for cut in 0..=bytes.len() {
            if let Ok(Some(r)) = reply::decode_general_or_v0(&bytes[..cut]) {
                prop_assert_eq!(reply::decode_general_or_v0(&bytes), Ok(Some(r)));
                break;
            }
        }
        for cut in 0..=bytes.len() {
            if let Ok(Some(r)) = reply::decode_key_reply(&bytes[..cut]) {
                prop_assert_eq!(reply::decode_key_reply(&bytes), Ok(Some(r)));
                break;
            }
        }
        for cut in 0..=bytes.len() {
            if let Ok(Some(r)) = cmtp_proto::legacy::decode_key_answer(&bytes[..cut]) {
                prop_assert_eq!(cmtp_proto::legacy::decode_key_answer(&bytes), Ok(Some(r)));
                break;
            }
        }
    }
}
