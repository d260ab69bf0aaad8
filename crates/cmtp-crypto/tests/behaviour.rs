//! Behaviour beyond the vectors: xzibit v2, strict parsing, limits, errors, redaction.

use cmtp_crypto::{
    Blake2b256, CryptoError, CryptoSystem, KeyPair, PublicKey, Signature, V2_MAX_MEMLIMIT,
    V2_MAX_OPSLIMIT, V2_MEMLIMIT, V2_OPSLIMIT, XZIBIT_V1_LEN, XZIBIT_V2_LEN, Xzibit, blake2b_256,
    open_for, seal, seal_for,
};

/// libsodium's Argon2id minimums: cheap enough for tests.
const CHEAP_OPS: u64 = 1;
const CHEAP_MEM: u64 = 8192;

fn kp(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32]).unwrap()
}

fn v2_header(ops: u64, mem: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&2u32.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&ops.to_be_bytes());
    b.extend_from_slice(&mem.to_be_bytes());
    b.extend_from_slice(&[9u8; 16 + 24]);
    b.extend_from_slice(&112u64.to_be_bytes());
    b.extend_from_slice(&[0u8; 112]);
    assert_eq!(b.len(), XZIBIT_V2_LEN);
    b
}

#[test]
fn xzibit_v2_round_trip_cheap_limits() {
    let k = kp(1);
    let x =
        Xzibit::create_v2_with_limits(&k, b"pw \xf0\x9f\x99\x82", CHEAP_OPS, CHEAP_MEM).unwrap();
    assert_eq!(x.version(), 2);
    assert_eq!(x.as_bytes().len(), XZIBIT_V2_LEN);
    assert_eq!(x.kdf_limits(), Some((CHEAP_OPS, CHEAP_MEM)));
    let parsed = Xzibit::parse(x.as_bytes()).unwrap();
    let opened = parsed.open(b"pw \xf0\x9f\x99\x82").unwrap();
    assert_eq!(opened.public(), k.public());
    assert_eq!(opened.secret_bytes()[..], k.secret_bytes()[..]);
    assert_eq!(parsed.open(b"pw").unwrap_err(), CryptoError::WrongPassword);
    assert_eq!(parsed.open(b"").unwrap_err(), CryptoError::WrongPassword);
    // Salt and nonce are random: two xzibits of the same pair differ.
    let y = Xzibit::create_v2_with_limits(&k, b"pw", CHEAP_OPS, CHEAP_MEM).unwrap();
    assert_ne!(y.as_bytes()[24..64], x.as_bytes()[24..64]);
}

#[test]
fn xzibit_v2_with_production_limits() {
    let k = kp(2);
    let x = Xzibit::create_v2(&k, b"correct horse").unwrap();
    assert_eq!(x.kdf_limits(), Some((V2_OPSLIMIT, V2_MEMLIMIT)));
    const { assert!(V2_MEMLIMIT >= 64 << 20) };
    assert_eq!(x.open(b"correct horse").unwrap().public(), k.public());
}

#[test]
fn xzibit_v2_tampering_is_detected() {
    let k = kp(3);
    let x = Xzibit::create_v2_with_limits(&k, b"pw", CHEAP_OPS, CHEAP_MEM).unwrap();
    let good = x.as_bytes().to_vec();
    // Every bit of salt, nonce and ciphertext (the AEAD tag covers the header as AD).
    for i in (24..XZIBIT_V2_LEN).filter(|i| !(64..72).contains(i)) {
        let mut b = good.clone();
        b[i] ^= 0x01;
        let t = Xzibit::parse(&b).unwrap();
        assert_eq!(
            t.open(b"pw").unwrap_err(),
            CryptoError::WrongPassword,
            "byte {i}"
        );
    }
    // A different but still valid limit: header changes, the tag fails.
    let mut b = good.clone();
    b[15] = 2; // opslimit 1 -> 2
    assert_eq!(
        Xzibit::parse(&b).unwrap().open(b"pw").unwrap_err(),
        CryptoError::WrongPassword
    );
    let mut b = good.clone();
    b[22] ^= 0x40; // memlimit 8192 -> 8192 + 16384
    assert_eq!(
        Xzibit::parse(&b).unwrap().open(b"pw").unwrap_err(),
        CryptoError::WrongPassword
    );
    // Structural fields are refused by the parser.
    let mut b = good.clone();
    b[7] = 2;
    assert_eq!(
        Xzibit::parse(&b).unwrap_err(),
        CryptoError::UnsupportedKdf(2)
    );
    let mut b = good.clone();
    b[71] = 113;
    assert!(matches!(Xzibit::parse(&b), Err(CryptoError::Malformed(_))));
    let mut b = good;
    b[3] = 3;
    assert_eq!(
        Xzibit::parse(&b).unwrap_err(),
        CryptoError::UnsupportedVersion(3)
    );
}

#[test]
fn xzibit_v2_limits_too_high_refused_before_kdf() {
    // Were the KDF run with 2^40 bytes it would fail with an allocation error, not this.
    for (ops, mem) in [
        (V2_MAX_OPSLIMIT + 1, CHEAP_MEM),
        (1, V2_MAX_MEMLIMIT + 1),
        (u64::MAX, u64::MAX),
        (4, 1 << 40),
    ] {
        assert_eq!(
            Xzibit::parse(&v2_header(ops, mem)).unwrap_err(),
            CryptoError::LimitsTooHigh {
                opslimit: ops,
                memlimit: mem
            }
        );
        assert!(matches!(
            Xzibit::create_v2_with_limits(&kp(4), b"pw", ops, mem),
            Err(CryptoError::LimitsTooHigh { .. })
        ));
    }
    // The ceiling itself is accepted by the parser (not opened: that would cost 1 GiB).
    let x = Xzibit::parse(&v2_header(V2_MAX_OPSLIMIT, V2_MAX_MEMLIMIT)).unwrap();
    assert_eq!(x.kdf_limits(), Some((16, 1 << 30)));
    for (ops, mem) in [(0, CHEAP_MEM), (1, CHEAP_MEM - 1), (0, 0)] {
        assert!(matches!(
            Xzibit::parse(&v2_header(ops, mem)),
            Err(CryptoError::LimitsTooLow { .. })
        ));
    }
}

#[test]
fn xzibit_v1_strict_parsing_and_round_trip() {
    let k = kp(5);
    let x = Xzibit::create_v1(&k, b"hunter2").unwrap();
    assert_eq!(x.version(), 1);
    assert_eq!(x.kdf_limits(), None);
    assert_eq!(x.as_bytes().len(), XZIBIT_V1_LEN);
    assert_eq!(x.open(b"hunter2").unwrap().public(), k.public());
    assert_eq!(x.open(b"hunter3").unwrap_err(), CryptoError::WrongPassword);
    let b = x.as_bytes().to_vec();
    for n in [0, 1, 3, 4, 155] {
        assert!(Xzibit::parse(&b[..n]).is_err(), "len {n}");
    }
    let mut longer = b.clone();
    longer.push(0);
    assert!(matches!(
        Xzibit::parse(&longer),
        Err(CryptoError::BadLength { .. })
    ));
    let mut bad_len = b.clone();
    bad_len[43] = 111;
    assert!(matches!(
        Xzibit::parse(&bad_len),
        Err(CryptoError::Malformed(_))
    ));
    assert_eq!(
        Xzibit::parse(&[0, 0, 0, 0, 1, 2]).unwrap_err(),
        CryptoError::UnsupportedVersion(0)
    );
}

#[test]
fn xzibit_with_mismatched_pk_is_refused() {
    use libsodium_rs::crypto_aead::chacha20poly1305 as aead;
    let (a, b) = (kp(6), kp(7));
    let salt = [3u8; 32];
    let key = cmtp_crypto::v1_derive_key(b"pw", &salt).unwrap();
    let mut plain = Vec::new();
    plain.extend_from_slice(b.public().as_bytes()); // pk of b ...
    plain.extend_from_slice(&a.secret_bytes()[..]); // ... with the sk of a
    let nonce = aead::Nonce::from_bytes(salt[..8].try_into().unwrap());
    let ct = aead::encrypt(&plain, None, &nonce, &aead::Key::from_bytes(&key).unwrap()).unwrap();
    let mut x = 1u32.to_be_bytes().to_vec();
    x.extend_from_slice(&salt);
    x.extend_from_slice(&112u64.to_be_bytes());
    x.extend_from_slice(&ct);
    let x = Xzibit::parse(&x).unwrap();
    assert_eq!(x.open(b"pw").unwrap_err(), CryptoError::KeyMismatch);
}

#[test]
fn secret_bytes_must_be_consistent() {
    let k = kp(8);
    let mut sk = *k.secret_bytes();
    assert_eq!(
        KeyPair::from_secret_bytes(&sk).unwrap().public(),
        k.public()
    );
    sk[40] ^= 1;
    assert_eq!(
        KeyPair::from_secret_bytes(&sk).unwrap_err(),
        CryptoError::KeyMismatch
    );
    assert!(matches!(
        KeyPair::from_secret_bytes(&sk[..63]),
        Err(CryptoError::BadLength { .. })
    ));
    assert_eq!(&k.seed()[..], &[8u8; 32]);
}

#[test]
fn keypair_debug_is_redacted() {
    let k = kp(9);
    let dbg = format!("{k:?} {k:#?}");
    let sk = hex::encode(&k.secret_bytes()[..]);
    assert!(!dbg.contains(&sk));
    assert!(!dbg.contains(&hex::encode(&k.seed()[..])));
    assert!(!dbg.contains(&hex::encode(&k.x25519_secret()[..])));
    assert!(dbg.contains("redacted"));
    assert!(dbg.contains(&k.public().to_hex()));
    let x = Xzibit::create_v2_with_limits(&k, b"pw", CHEAP_OPS, CHEAP_MEM).unwrap();
    assert!(!format!("{x:?}").contains(&hex::encode(&x.as_bytes()[72..])));
}

#[test]
fn sealed_boxes_and_systems() {
    let k = kp(10);
    for len in [0usize, 1, 47, 48, 1000] {
        let pt = vec![0xa5; len];
        let ct = seal(&pt, &k.public()).unwrap();
        assert_eq!(ct.len(), len + 48);
        assert_eq!(k.open_sealed(&ct).unwrap()[..], pt[..]);
        assert_eq!(
            kp(11).open_sealed(&ct).unwrap_err(),
            CryptoError::DecryptFailed
        );
    }
    for n in 0..48 {
        assert!(matches!(
            k.open_sealed(&vec![0u8; n]),
            Err(CryptoError::BadLength { .. })
        ));
    }
    assert_eq!(
        k.open_sealed(&[0u8; 48]).unwrap_err(),
        CryptoError::DecryptFailed
    );
    // The all-zero Ed25519 key is small-order: libsodium refuses to convert it.
    assert_eq!(
        seal(b"x", &PublicKey::from_array([0; 32])).unwrap_err(),
        CryptoError::BadPublicKey
    );

    assert_eq!(CryptoSystem::from_version(0).unwrap(), CryptoSystem::Plain);
    assert_eq!(CryptoSystem::from_version(1).unwrap(), CryptoSystem::Sodium);
    assert_eq!(CryptoSystem::Sodium.version(), 1);
    assert_eq!(
        CryptoSystem::from_version(2).unwrap_err(),
        CryptoError::UnsupportedVersion(2)
    );
    assert_eq!(seal_for(0, b"plain", &k.public()).unwrap(), b"plain");
    assert_eq!(open_for(0, b"plain", &k).unwrap()[..], b"plain"[..]);
    let ct = seal_for(1, b"secret", &k.public()).unwrap();
    assert_eq!(open_for(1, &ct, &k).unwrap()[..], b"secret"[..]);
    assert!(seal_for(7, b"x", &k.public()).is_err());
    assert!(open_for(7, &ct, &k).is_err());
}

#[test]
fn signatures_and_keys_edge_cases() {
    let k = kp(12);
    let sig = k.sign(b"OHAI");
    k.public().verify(b"OHAI", &sig).unwrap();
    assert_eq!(
        k.public().verify(b"OHAI!", &sig).unwrap_err(),
        CryptoError::BadSignature
    );
    assert_eq!(
        kp(13).public().verify(b"OHAI", &sig).unwrap_err(),
        CryptoError::BadSignature
    );
    assert_eq!(
        k.public()
            .verify(b"OHAI", &Signature::from_array([0; 64]))
            .unwrap_err(),
        CryptoError::BadSignature
    );
    assert!(matches!(
        Signature::from_bytes(&[0; 63]),
        Err(CryptoError::BadLength { .. })
    ));
    assert!(matches!(
        PublicKey::from_bytes(&[0; 33]),
        Err(CryptoError::BadLength { .. })
    ));
    assert_eq!(Signature::from_hex("zz").unwrap_err(), CryptoError::BadHex);
    assert_eq!(
        PublicKey::from_hex(&k.public().to_hex()).unwrap(),
        k.public()
    );
    let g = KeyPair::generate().unwrap();
    assert_ne!(g.public(), KeyPair::generate().unwrap().public());
    let fp = k.public().fingerprint();
    assert_eq!(fp.len(), 39);
    assert_eq!(
        fp.replace(' ', ""),
        hex::encode(&blake2b_256(k.public().as_bytes())[..16])
    );
    assert_eq!(fp.split(' ').count(), 8);
}

#[test]
fn blake2b_known_answers_and_streaming() {
    assert_eq!(
        hex::encode(blake2b_256(b"")),
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
    );
    assert_eq!(
        hex::encode(blake2b_256(b"abc")),
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"
    );
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let mut h = Blake2b256::new();
    for c in data.chunks(4093) {
        h.update(c);
    }
    assert_eq!(h.finalize(), blake2b_256(&data));
}
