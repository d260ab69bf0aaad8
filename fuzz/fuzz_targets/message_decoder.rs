//! Feeds arbitrary bytes to the message decoder in arbitrary chunks: it must never
//! panic, never consume more than it is given, and agree with a contiguous feed.
#![no_main]

use cmtp_proto::limits::MessageLimits;
use cmtp_proto::message::{MessageDecoder, MessageError, MessageEvent};
use libfuzzer_sys::fuzz_target;

/// (flattened event log, error)
fn run(buf: &[u8], steps: &[u8]) -> (Vec<u8>, Option<MessageError>) {
    let limits = MessageLimits {
        max_total: 1 << 20,
        max_attachments: 16,
        max_log: 4096,
    };
    let mut d = MessageDecoder::new(limits);
    let mut ends = Vec::new();
    let mut e = 0;
    for &s in steps {
        e = (e + usize::from(s) + 1).min(buf.len());
        ends.push(e);
    }
    ends.push(buf.len());
    let mut log = Vec::new();
    let mut pos = 0;
    for end in ends {
        loop {
            match d.decode(&buf[pos..end]) {
                Ok((n, ev)) => {
                    assert!(n <= end - pos, "consumed more than given");
                    pos += n;
                    match ev {
                        None => {
                            assert_eq!(pos, end);
                            break;
                        }
                        Some(MessageEvent::End) => {
                            assert!(d.is_done());
                            assert_eq!(d.consumed(), pos as u64);
                            log.push(b'E');
                            return (log, None);
                        }
                        // Data chunks are merged so that splits do not matter.
                        Some(MessageEvent::Log(c))
                        | Some(MessageEvent::Body(c))
                        | Some(MessageEvent::Attachment(c)) => {
                            assert!(!c.is_empty());
                            log.extend_from_slice(c);
                        }
                        Some(other) => log.extend_from_slice(format!("|{other:?}|").as_bytes()),
                    }
                }
                Err(e) => return (log, Some(e)),
            }
        }
    }
    (log, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (steps, buf) = rest.split_at(n);
    assert_eq!(run(buf, steps), run(buf, &[]));
});
