//! Every vector in testdata/vectors (positive and negative), byte for byte.

use cmtp_crypto::{CryptoError, KeyPair, PublicKey, Signature, Xzibit, open_for};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/vectors");

/// Loads a vector file; a missing folder or file fails the test (never a skip).
fn load(name: &str) -> Value {
    let path = format!("{DIR}/{name}");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors missing: cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: bad JSON: {e}"))
}

fn hx(v: &Value, key: &str) -> Vec<u8> {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key} missing in {v}"));
    hex::decode(s).unwrap_or_else(|e| panic!("field {key}: bad hex: {e}"))
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap_or("?")
}

fn list<'a>(d: &'a Value, key: &str) -> &'a Vec<Value> {
    let l = d[key].as_array().unwrap_or_else(|| panic!("no {key} list"));
    assert!(!l.is_empty(), "{key} list is empty");
    l
}

#[test]
fn ed25519_vectors() {
    let d = load("ed25519.json");
    let mut sigs = 0;
    for v in list(&d, "vectors") {
        let seed: [u8; 32] = hx(v, "seed").try_into().expect("seed length");
        let kp = KeyPair::from_seed(&seed).unwrap();
        assert_eq!(kp.public().as_bytes()[..], hx(v, "pk")[..], "{}", id(v));
        assert_eq!(kp.secret_bytes()[..], hx(v, "sk")[..], "{}", id(v));
        let kp2 = KeyPair::from_secret_bytes(&hx(v, "sk")).unwrap();
        assert_eq!(kp2.public(), kp.public());
        assert_eq!(PublicKey::from_bytes(&hx(v, "pk")).unwrap(), kp.public());
        for s in v["signatures"].as_array().expect("signatures") {
            let msg = hx(s, "message");
            let want = hx(s, "signature");
            let sig = kp.sign(&msg);
            assert_eq!(sig.as_bytes()[..], want[..], "{} sign", id(v));
            assert_eq!(
                Signature::from_hex(s["signature"].as_str().unwrap()).unwrap(),
                sig
            );
            assert_eq!(sig.to_hex(), s["signature"].as_str().unwrap());
            kp.public().verify(&msg, &sig).unwrap();
            sigs += 1;
        }
    }
    assert!(sigs >= 5);
    for n in list(&d, "negative") {
        assert_eq!(n["expect"], "verify fails");
        let pk = PublicKey::from_bytes(&hx(n, "pk")).unwrap();
        let sig = Signature::from_bytes(&hx(n, "signature")).unwrap();
        assert_eq!(
            pk.verify(&hx(n, "message"), &sig),
            Err(CryptoError::BadSignature),
            "{}",
            id(n)
        );
    }
}

#[test]
fn ed25519_to_curve25519_vectors() {
    let d = load("ed25519_to_curve25519.json");
    for v in list(&d, "vectors") {
        let seed: [u8; 32] = hx(v, "ed25519_seed").try_into().unwrap();
        let kp = KeyPair::from_seed(&seed).unwrap();
        assert_eq!(kp.public().as_bytes()[..], hx(v, "ed25519_pk")[..]);
        let kp = KeyPair::from_secret_bytes(&hx(v, "ed25519_sk")).unwrap();
        let pk = PublicKey::from_bytes(&hx(v, "ed25519_pk")).unwrap();
        assert_eq!(
            pk.to_x25519().unwrap()[..],
            hx(v, "x25519_pk")[..],
            "{}",
            id(v)
        );
        assert_eq!(kp.x25519_public()[..], hx(v, "x25519_pk")[..], "{}", id(v));
        assert_eq!(kp.x25519_secret()[..], hx(v, "x25519_sk")[..], "{}", id(v));
        let base =
            libsodium_rs::crypto_scalarmult::curve25519::scalarmult_base(&kp.x25519_secret()[..])
                .unwrap();
        assert_eq!(
            base[..],
            hx(v, "x25519_pk")[..],
            "{} scalarmult_base",
            id(v)
        );
    }
}

#[test]
fn sealed_box_vectors() {
    let d = load("sealed_box.json");
    for v in list(&d, "vectors") {
        let kp = KeyPair::from_secret_bytes(&hx(v, "recipient_ed25519_sk")).unwrap();
        assert_eq!(
            kp.public().as_bytes()[..],
            hx(v, "recipient_ed25519_pk")[..]
        );
        assert_eq!(kp.x25519_public()[..], hx(v, "recipient_x25519_pk")[..]);
        assert_eq!(kp.x25519_secret()[..], hx(v, "recipient_x25519_sk")[..]);
        let ct = hx(v, "ciphertext");
        let pt = hx(v, "plaintext");
        assert_eq!(ct.len(), pt.len() + 48);
        assert_eq!(kp.open_sealed(&ct).unwrap()[..], pt[..], "{}", id(v));
        assert_eq!(open_for(1, &ct, &kp).unwrap()[..], pt[..]);
        // A fresh seal is another valid instance: it opens to the same plaintext.
        let fresh = cmtp_crypto::seal(&pt, &kp.public()).unwrap();
        assert_eq!(kp.open_sealed(&fresh).unwrap()[..], pt[..]);
    }
    let negs = list(&d, "negative");
    assert_eq!(negs.len(), 3);
    for n in negs {
        let kp = KeyPair::from_secret_bytes(&hx(n, "recipient_ed25519_sk")).unwrap();
        assert_eq!(
            kp.public().as_bytes()[..],
            hx(n, "recipient_ed25519_pk")[..]
        );
        let ct = hx(n, "ciphertext");
        let err = kp.open_sealed(&ct).expect_err(id(n));
        if ct.len() < 48 {
            assert!(
                matches!(err, CryptoError::BadLength { .. }),
                "{}: {err:?}",
                id(n)
            );
        } else {
            assert_eq!(err, CryptoError::DecryptFailed, "{}", id(n));
        }
    }
}

#[test]
fn xzibit_vectors() {
    let d = load("xzibit.json");
    let vs = list(&d, "vectors");
    assert_eq!(vs.len(), 6);
    let mut adduser = 0;
    for v in vs {
        let bytes = hx(v, "xzibit");
        let pw = hx(v, "password_hex");
        assert_eq!(pw, v["password"].as_str().unwrap().as_bytes(), "{}", id(v));
        let x = Xzibit::parse(&bytes).unwrap();
        assert_eq!(x.version(), 1);
        assert_eq!(v["version"], 1);
        assert_eq!(x.as_bytes(), &bytes[..]);
        assert_eq!(bytes[4..36], hx(v, "salt")[..]);
        assert_eq!(hx(v, "nonce")[..], hx(v, "salt")[..8]);
        assert_eq!(bytes[44..], hx(v, "ciphertext")[..]);
        assert_eq!(v["ciphertext_length"], 112);

        let salt: [u8; 32] = hx(v, "salt").try_into().unwrap();
        let key = cmtp_crypto::v1_derive_key(&pw, &salt).unwrap();
        assert_eq!(key[..], hx(v, "derived_key")[..], "{} derived key", id(v));

        let kp = x.open(&pw).unwrap_or_else(|e| panic!("{}: {e}", id(v)));
        assert_eq!(kp.public().as_bytes()[..], hx(v, "pk")[..], "{}", id(v));
        assert_eq!(kp.secret_bytes()[..], hx(v, "sk")[..], "{}", id(v));
        if v["source"] == "cmtp_adduser (reference C)" {
            adduser += 1;
            assert_eq!(kp.public().as_bytes()[..], hx(v, "public_key_file")[..]);
        }

        // Same key pair, same password, same salt: the same bytes as the reference.
        let again = Xzibit::create_v1_with_salt(&kp, &pw, &salt).unwrap();
        assert_eq!(again.as_bytes(), &bytes[..], "{} re-create", id(v));
    }
    assert_eq!(adduser, 3);

    let negs = list(&d, "negative");
    assert_eq!(negs.len(), 2);
    for n in negs {
        let pw = hx(n, "password_hex");
        assert_eq!(pw, n["password"].as_str().unwrap().as_bytes());
        let x = Xzibit::parse(&hx(n, "xzibit")).unwrap();
        assert_eq!(
            x.open(&pw).unwrap_err(),
            CryptoError::WrongPassword,
            "{}",
            id(n)
        );
    }
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

#[test]
fn message_bodies_open() {
    let d = load("message.json");
    for v in list(&d, "vectors") {
        let msg = hx(v, "message");
        let off = v["body_offset"].as_u64().unwrap() as usize;
        let len = v["body_length"].as_u64().unwrap() as usize;
        assert_eq!(be_u64(&msg[16..24]) as usize, len, "{}", id(v));
        let body = &msg[off..off + len];
        assert_eq!(body, &hx(v, "body")[..], "{}", id(v));
        let kp = KeyPair::from_secret_bytes(&hx(v, "recipient_ed25519_sk")).unwrap();
        assert_eq!(
            kp.public().as_bytes()[..],
            hx(v, "recipient_ed25519_pk")[..]
        );
        let version = u32::from_be_bytes(msg[..4].try_into().unwrap());
        assert_eq!(v["version"], version);
        let plain = open_for(version, body, &kp).unwrap_or_else(|e| panic!("{}: {e}", id(v)));
        assert_eq!(plain[..], hx(v, "plaintext")[..], "{}", id(v));
    }
}
