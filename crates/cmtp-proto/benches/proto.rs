//! Throughput of the sans-IO parsers: pipelined command parsing and streaming message
//! decoding. Run: `cargo bench -p cmtp-proto --bench proto`.

use std::hint::black_box;

use cmtp_proto::command::Command;
use cmtp_proto::limits::MessageLimits;
use cmtp_proto::mbox::{FetchPart, MboxRequest};
use cmtp_proto::message::{self, Envelope, MessageDecoder, MessageEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A pipelined buffer of mixed commands and how many commands it holds.
fn mixed_commands() -> (Vec<u8>, u64) {
    let mut r = MboxRequest::fetch("alice", 1_700_000_000, 42, FetchPart::Head);
    r.signature = [0x5a; 64];
    let cmds = [
        Command::Ohai,
        Command::Noop,
        Command::KeyRequest {
            user: "bob".into(),
            domain: "hawaii.edu".into(),
        },
        Command::KeyRequest {
            user: String::new(),
            domain: String::new(),
        },
        Command::Login {
            user: "alice".into(),
        },
        Command::Empty,
        Command::MboxFetch(r),
        Command::Help,
    ];
    let mut buf = Vec::new();
    let mut n = 0;
    for _ in 0..128 {
        for c in &cmds {
            c.encode(&mut buf);
            n += 1;
        }
    }
    (buf, n)
}

fn bench_commands(c: &mut Criterion) {
    let (buf, n) = mixed_commands();
    let mut g = c.benchmark_group("commands");
    g.throughput(Throughput::Elements(n));
    g.bench_function("parse_pipelined_mixed", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut count = 0u64;
            while let Ok(Some((cmd, used))) = Command::parse(&buf[pos..]) {
                black_box(&cmd);
                pos += used;
                count += 1;
            }
            assert_eq!(count, n);
        })
    });
    g.finish();
}

fn bench_message(c: &mut Criterion) {
    let body = vec![0xa5u8; 1 << 20];
    let env = Envelope::new(1, "bob", "hawaii.edu", "alice", "hawaii.edu");
    let mut m = Vec::new();
    message::encode_message(&env, b"relay.example\0", &body, &[], &mut m).unwrap();
    let mut g = c.benchmark_group("message");
    g.throughput(Throughput::Bytes(m.len() as u64));
    g.bench_function("decode_1MiB_in_64KiB_feeds", |b| {
        b.iter(|| {
            let mut d = MessageDecoder::new(MessageLimits::default());
            let mut sum = 0usize;
            for feed in m.chunks(64 * 1024) {
                let mut pos = 0;
                while pos < feed.len() {
                    let (used, ev) = d.decode(&feed[pos..]).unwrap();
                    pos += used;
                    if let Some(MessageEvent::Body(c)) = ev {
                        sum += black_box(c).len();
                    }
                }
            }
            assert!(d.is_done());
            assert_eq!(sum, body.len());
        })
    });
    // The decoder only slices the input; a receiver copies the body somewhere. This
    // variant copies every body chunk into a buffer, a realistic per-byte cost.
    let mut sink = Vec::with_capacity(body.len());
    g.bench_function("decode_1MiB_in_64KiB_feeds_copying", |b| {
        b.iter(|| {
            sink.clear();
            let mut d = MessageDecoder::new(MessageLimits::default());
            for feed in m.chunks(64 * 1024) {
                let mut pos = 0;
                while pos < feed.len() {
                    let (used, ev) = d.decode(&feed[pos..]).unwrap();
                    pos += used;
                    if let Some(MessageEvent::Body(c)) = ev {
                        sink.extend_from_slice(c);
                    }
                }
            }
            assert!(d.is_done());
            assert_eq!(black_box(&sink).len(), body.len());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_commands, bench_message);
criterion_main!(benches);
