//! The shared message vectors (testdata/vectors/message.json, copied from the shared vectors) decode to the fields
//! they list. The file must exist: a missing file fails the test.

use cmtp_proto::body::{Body, InternalBody};
use cmtp_proto::command::Command;
use cmtp_proto::limits::MessageLimits;
use cmtp_proto::message::{MessageDecoder, MessageEvent};
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

fn load() -> Vec<Value> {
    let path = format!("{VECTORS}/message.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).expect("message.json is JSON");
    let vs = v["vectors"].as_array().expect("vectors array").clone();
    assert!(vs.len() >= 7, "expected at least 7 message vectors");
    vs
}

fn hex(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))).expect("hex")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing"))
}

struct Decoded {
    used: usize,
    env: cmtp_proto::Envelope,
    log: Vec<u8>,
    body: Vec<u8>,
    attachments: Vec<Vec<u8>>,
    body_end: u64,
}

/// Decodes one message from `input` fed in chunks of `chunk` bytes.
fn decode(input: &[u8], chunk: usize) -> Decoded {
    let mut d = MessageDecoder::new(MessageLimits::default());
    let mut pos = 0usize;
    let mut env = None;
    let (mut log, mut body, mut attachments) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let end = pos.saturating_add(chunk).min(input.len());
        let (used, ev) = d.decode(&input[pos..end]).expect("valid message");
        pos += used;
        match ev {
            Some(MessageEvent::Envelope(e)) => env = Some(e),
            Some(MessageEvent::Log(c)) => log.extend_from_slice(c),
            Some(MessageEvent::Body(c)) => body.extend_from_slice(c),
            Some(MessageEvent::AttachmentStart { .. }) => attachments.push(Vec::new()),
            Some(MessageEvent::Attachment(c)) => {
                attachments.last_mut().unwrap().extend_from_slice(c)
            }
            Some(MessageEvent::End) => break,
            None => assert!(end < input.len(), "message truncated"),
        }
    }
    Decoded {
        used: pos,
        env: env.expect("envelope event"),
        log,
        body,
        attachments,
        body_end: d.body_end().expect("body end known"),
    }
}

#[test]
fn every_message_vector_decodes_to_its_fields() {
    for v in load() {
        let id = s(&v, "id");
        let message = hex(&v, "message");
        for chunk in [1, 7, 64, usize::MAX] {
            let d = decode(&message, chunk);
            assert_eq!(d.used, message.len(), "{id}");
            assert_eq!(u64::from(d.env.version), n(&v, "version"), "{id}");
            assert_eq!(
                u64::from(d.env.attachment_count),
                n(&v, "attachment_count"),
                "{id}"
            );
            assert_eq!(d.env.log_length, n(&v, "log_length"), "{id}");
            assert_eq!(d.env.body_length, n(&v, "body_length"), "{id}");
            assert_eq!(d.env.dest_account, s(&v, "dest_account"), "{id}");
            assert_eq!(d.env.dest_domain, s(&v, "dest_domain"), "{id}");
            assert_eq!(d.env.src_account, s(&v, "source_account"), "{id}");
            assert_eq!(d.env.src_domain, s(&v, "source_domain"), "{id}");
            assert_eq!(d.log, hex(&v, "log"), "{id}");
            assert_eq!(d.body, hex(&v, "body"), "{id}");
            assert!(d.attachments.is_empty(), "{id}");
            let body_offset = n(&v, "body_offset");
            assert_eq!(
                d.env.encoded_len() as u64 + d.env.log_length,
                body_offset,
                "{id}"
            );
            assert_eq!(d.body_end, body_offset + d.env.body_length, "{id}");
            assert_eq!(d.body_end, message.len() as u64, "{id}");
            // Re-encoding the envelope gives the same bytes.
            let mut e = Vec::new();
            d.env.encode(&mut e);
            assert_eq!(e, message[..d.env.encoded_len()], "{id}");
        }
    }
}

#[test]
fn wire_form_is_mail_then_message_then_64_nul_commands() {
    for v in load() {
        let id = s(&v, "id");
        let wire = hex(&v, "wire");
        let message = hex(&v, "message");
        let (cmd, used) = Command::parse(&wire).unwrap().unwrap();
        assert_eq!((cmd, used), (Command::Mail, 5), "{id}");
        let d = decode(&wire[used..], usize::MAX);
        assert_eq!(d.used, message.len(), "{id}");
        let mut rest = &wire[used + d.used..];
        assert_eq!(rest, &[0u8; 64][..], "{id}: the 2016 nonce remains");
        // A CMTP/1 server reads the nonce as 64 empty commands.
        let mut empties = 0;
        while let Some((c, n)) = Command::parse(rest).unwrap() {
            assert_eq!(c, Command::Empty, "{id}");
            rest = &rest[n..];
            empties += 1;
        }
        assert_eq!((empties, rest.len()), (64, 0), "{id}");
    }
}

#[test]
fn plaintexts_classify_as_expected() {
    let mut internal = 0;
    for v in load() {
        let id = s(&v, "id");
        let plain = hex(&v, "plaintext");
        let body = Body::decode(&plain);
        match id {
            "public-message-1" => {
                assert_eq!(
                    body,
                    Body::Internal(InternalBody {
                        timestamp: 0x577a_f880,
                        subject: "Lunch?".into(),
                        reply_to: "dave@example.org".into(),
                        cc: vec![],
                        text: "Noon at the usual place.\n".into(),
                    })
                );
            }
            "public-message-3" => {
                assert_eq!(
                    body,
                    Body::Internal(InternalBody {
                        timestamp: 0x577a_f880,
                        subject: "CC test".into(),
                        reply_to: "alice@hawaii.edu".into(),
                        cc: vec!["carol@hawaii.edu".into(), "dave@example.org".into()],
                        text: "Body.\n".into(),
                    })
                );
            }
            "public-message-refstored-M2" => {
                assert_eq!(
                    body,
                    Body::Internal(InternalBody {
                        timestamp: 0x577a_f880,
                        subject: "Test subject".into(),
                        reply_to: "alice@hawaii.edu".into(),
                        cc: vec![],
                        text: "Second message body.\n".into(),
                    })
                );
            }
            _ => {
                let text = String::from_utf8(plain.clone()).expect("legacy vectors are UTF-8");
                assert_eq!(body, Body::Legacy(text), "{id}");
            }
        }
        if let Body::Internal(ib) = &body {
            internal += 1;
            // The July 2016 layout re-encodes byte for byte.
            assert_eq!(ib.to_bytes().unwrap(), plain, "{id}");
        }
    }
    assert_eq!(internal, 3);
}
