//! Criterion benchmarks of the crypto the server and clients run per message and per login.
//!
//! `cargo bench -p cmtp-crypto -- --warm-up-time 1 --measurement-time 3`

use cmtp_crypto::{KeyPair, Xzibit, seal};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn sealed_boxes(c: &mut Criterion) {
    let k = KeyPair::from_seed(&[1; 32]).expect("keypair");
    let mut g = c.benchmark_group("sealed_box");
    for (name, len) in [("1KiB", 1024usize), ("1MiB", 1 << 20)] {
        let pt = vec![0x5a; len];
        let ct = seal(&pt, &k.public()).expect("seal");
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("seal", name), &pt, |b, pt| {
            b.iter(|| seal(black_box(pt), &k.public()).expect("seal"))
        });
        g.bench_with_input(BenchmarkId::new("open", name), &ct, |b, ct| {
            b.iter(|| k.open_sealed(black_box(ct)).expect("open"))
        });
    }
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let k = KeyPair::from_seed(&[2; 32]).expect("keypair");
    // A typical signed item: a reply text or a mailbox request (< 100 bytes).
    let msg = b"CMTP-MBOX/1\x00MBOXFETCH\x00alice\x00example.org\x001764079200\x0042\x00full\x00";
    let sig = k.sign(msg);
    let pk = k.public();
    c.bench_function("ed25519/sign", |b| b.iter(|| k.sign(black_box(msg))));
    c.bench_function("ed25519/verify", |b| {
        b.iter(|| pk.verify(black_box(msg), &sig).expect("verify"))
    });
}

fn xzibits(c: &mut Criterion) {
    let k = KeyPair::from_seed(&[3; 32]).expect("keypair");
    let v1 = Xzibit::create_v1(&k, b"hunter2").expect("v1");
    let v2 = Xzibit::create_v2(&k, b"hunter2").expect("v2");
    let mut g = c.benchmark_group("xzibit");
    g.sample_size(10);
    g.bench_function("v1_open_scrypt", |b| {
        b.iter(|| v1.open(black_box(b"hunter2")).expect("open"))
    });
    g.bench_function("v2_open_argon2id", |b| {
        b.iter(|| v2.open(black_box(b"hunter2")).expect("open"))
    });
    g.finish();
}

/// The server's side of OPAQUE1 (docs/protocol.md D8) for an account with a record and
/// for a name with none (the fake response): the two must cost about the same, or the
/// time of the answer would tell which names are accounts.
fn opaque_login_start(c: &mut Criterion) {
    use cmtp_crypto::opaque::{ClientLoginState, ClientRegistrationState, ServerSetup};
    let setup = ServerSetup::generate();
    let (st, req) = ClientRegistrationState::start(b"pw").unwrap();
    let resp = setup.registration_response(&req, b"alice").unwrap();
    let record = st.finish(b"pw", &resp).unwrap();
    let (_, ke1) = ClientLoginState::start(b"guess").unwrap();
    let mut g = c.benchmark_group("opaque_login_start");
    g.bench_function("known account", |b| {
        b.iter(|| setup.login_start(Some(&record), &ke1, b"alice").unwrap())
    });
    g.bench_function("unknown name (fake record)", |b| {
        b.iter(|| setup.login_start(None, &ke1, b"nobody").unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    sealed_boxes,
    signatures,
    xzibits,
    opaque_login_start
);
criterion_main!(benches);
