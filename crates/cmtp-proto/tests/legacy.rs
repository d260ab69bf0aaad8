//! The 2016 dialect against the bytes recorded from the 2016 C server
//! (testdata/vectors/transcripts-2016): every recorded reply decodes, whole or fed in
//! pieces, and the encoders write exactly the recorded bytes back. A missing file
//! fails the test.

use cmtp_proto::Command;
use cmtp_proto::legacy::{self, KeyAnswer};
use cmtp_proto::reply::{self, Decoded, GreetingKind, KeyReply, LoginReply, OhaiAnswer};

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/vectors/transcripts-2016"
);
/// The recorded server's key (README of the transcripts).
const SERVER_KEY: &str = "28a8d2f49bcf288b4416e1fb607330ab719c182886413e78c98df9300e01bdb0";

fn bin(name: &str) -> Vec<u8> {
    let p = format!("{DIR}/{name}");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Decodes `b` fed in every split (a prefix, then the whole), and with the bytes of
/// the next reply behind it: the prefix always needs more, the whole uses exactly
/// `b.len()` bytes both times.
fn split_feed<T: std::fmt::Debug + PartialEq>(b: &[u8], f: impl Fn(&[u8]) -> Decoded<T>) -> T {
    for cut in 0..b.len() {
        assert!(
            matches!(f(&b[..cut]), Ok(None)),
            "cut {cut} of {}: {:?}",
            b.len(),
            f(&b[..cut])
        );
    }
    let (v, n) = f(b).unwrap().unwrap();
    assert_eq!(n, b.len());
    let mut more = b.to_vec();
    more.extend_from_slice(legacy::NOOP_ANSWER);
    let (v2, n2) = f(&more).unwrap().unwrap();
    assert_eq!((&v2, n2), (&v, b.len()));
    v
}

#[test]
fn no_such_key_is_recognised_and_round_trips() {
    for name in [
        "keynotavail_02_KEYREQUEST_missing_1.bin",
        "keynotavail_03_KEYREQUEST_missing_2.bin",
        "keynotavail_04_KEYREQUEST_missing_emptydom.bin",
    ] {
        let b = bin(name);
        assert_eq!(b.len(), 102, "{name}");
        // What the plain CMTP/1 decoder makes of it: an error, never a key.
        assert!(reply::decode_key_reply(&b).is_err(), "{name}");
        let a = split_feed(&b, legacy::decode_key_answer);
        let KeyAnswer::NotAvailable(na) = &a else {
            panic!("{name}: {a:?}");
        };
        assert_eq!(na.signed_bytes(), b"KEYNOTAVAILABLE\0");
        assert_eq!(&na.sig[..], &b[20..84]);
        let mut out = Vec::new();
        legacy::encode_key_answer(&a, &mut out);
        assert_eq!(out, b, "{name}");
    }
}

#[test]
fn keys_and_logins_round_trip() {
    let keys: serde_json::Value = serde_json::from_slice(&bin("keys_from_login.json")).unwrap();
    let want = |user: &str| hex::decode(keys[user]["pk"].as_str().unwrap()).unwrap();
    for (name, key) in [
        (
            "main_05_KEYREQUEST_server_2nul.bin",
            hex::decode(SERVER_KEY).unwrap(),
        ),
        ("main_08_KEYREQUEST_alice_hawaii.bin", want("alice")),
        ("main_11_KEYREQUEST_bob_hawaii.bin", want("bob")),
    ] {
        let b = bin(name);
        let a = split_feed(&b, legacy::decode_key_answer);
        let KeyAnswer::Reply(KeyReply::Key { key: k, .. }) = &a else {
            panic!("{name}: {a:?}");
        };
        assert_eq!(&k[..], &key[..], "{name}");
        let mut out = Vec::new();
        legacy::encode_key_answer(&a, &mut out);
        assert_eq!(out, b, "{name}");
    }
    for name in ["main_12_LOGIN_alice.bin", "main_13_LOGIN_bob.bin"] {
        let b = bin(name);
        let r = split_feed(&b, legacy::decode_login);
        let x: &[u8; legacy::XZIBIT_LEN] = r.xzibit.as_slice().try_into().unwrap();
        let mut out = Vec::new();
        legacy::encode_login(x, &r.sig, &mut out);
        assert_eq!(out, b, "{name}");
        // Read as a LOGIN answer from either greeting.
        for greeted in [true, false] {
            let l = split_feed(&b, |b| legacy::decode_login_reply_any(b, 4096, greeted));
            assert!(matches!(l, LoginReply::Xzibit { ref xzibit, .. } if *xzibit == r.xzibit));
        }
    }
}

#[test]
fn fixed_texts_are_the_recorded_ones() {
    let banner = bin("main_01_banner.bin");
    let mut out = Vec::new();
    legacy::encode_greeting(&mut out);
    assert_eq!(out, banner);
    assert_eq!(
        split_feed(&banner, reply::decode_greeting).kind,
        GreetingKind::Legacy2016
    );
    let hai = bin("main_02_OHAI.bin");
    out.clear();
    legacy::encode_ohai(&mut out);
    assert_eq!(out, hai);
    assert_eq!(split_feed(&hai, reply::decode_ohai), OhaiAnswer::Legacy2016);
    let noop = bin("main_03_NOOP.bin");
    out.clear();
    legacy::encode_noop_answer(&mut out);
    assert_eq!(out, noop);
    split_feed(&noop, legacy::decode_noop_answer);
    let bye = bin("main_19_OBAI.bin");
    out.clear();
    legacy::encode_bye(&mut out);
    assert_eq!(out, bye);
    split_feed(&bye, legacy::decode_bye);
}

#[test]
fn requests_match_what_the_2016_client_sent() {
    // The server key request, as its own client spelled it.
    let mut out = Vec::new();
    Command::KeyRequest {
        user: String::new(),
        domain: String::new(),
    }
    .encode(&mut out);
    assert_eq!(out, bin("main_05_KEYREQUEST_server_2nul.req.bin"));
    // The recorded MAIL ends with the 64-byte nonce the server reads.
    let mail = bin("main_14_MAIL_bob_wellformed.req.bin");
    out.clear();
    legacy::encode_mail_nonce(&mut out);
    assert_eq!(&mail[mail.len() - legacy::NONCE_LEN..], &out[..]);
}
