//! Property tests: round trips hold and arbitrary input never panics.

use cmtp_crypto::{KeyPair, PublicKey, Signature, Xzibit, open_for, seal};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn seal_open_round_trip(seed in any::<[u8; 32]>(), pt in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let k = KeyPair::from_seed(&seed).unwrap();
        let ct = seal(&pt, &k.public()).unwrap();
        prop_assert_eq!(ct.len(), pt.len() + 48);
        prop_assert_eq!(&k.open_sealed(&ct).unwrap()[..], &pt[..]);
    }

    #[test]
    fn sign_verify(seed in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<(usize, u8)>()) {
        let k = KeyPair::from_seed(&seed).unwrap();
        let sig = k.sign(&msg);
        prop_assert!(k.public().verify(&msg, &sig).is_ok());
        let mut bad = *sig.as_bytes();
        bad[flip.0 % 64] ^= flip.1 | 1;
        prop_assert!(k.public().verify(&msg, &Signature::from_array(bad)).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Xzibit::parse(&b);
        let _ = KeyPair::from_secret_bytes(&b);
        let _ = PublicKey::from_bytes(&b);
        let _ = Signature::from_bytes(&b);
        let k = KeyPair::from_seed(&[1; 32]).unwrap();
        prop_assert!(k.open_sealed(&b).is_err());
        let _ = open_for(u32::from(b.first().copied().unwrap_or(0)), &b, &k);
        if b.len() >= 32 {
            let pk = PublicKey::from_bytes(&b[..32]).unwrap();
            let _ = pk.to_x25519();
            let _ = seal(b"x", &pk);
            if b.len() >= 96 {
                let _ = pk.verify(&b[96..], &Signature::from_bytes(&b[32..96]).unwrap());
            }
        }
    }

    /// Arbitrary bodies behind valid v1/v2 headers: parse never panics, and opening with
    /// cheap limits only fails cleanly.
    #[test]
    fn xzibit_structured_never_panics(v2 in any::<bool>(), ops in 0u64..3, mem in prop_oneof![Just(8192u64), 0u64..20000, any::<u64>()], body in proptest::collection::vec(any::<u8>(), 184)) {
        let mut b = body;
        if v2 {
            b[..4].copy_from_slice(&2u32.to_be_bytes());
            b[4..8].copy_from_slice(&1u32.to_be_bytes());
            b[8..16].copy_from_slice(&ops.to_be_bytes());
            b[16..24].copy_from_slice(&mem.to_be_bytes());
            b[64..72].copy_from_slice(&112u64.to_be_bytes());
        } else {
            b.truncate(156);
            b[..4].copy_from_slice(&1u32.to_be_bytes());
            b[36..44].copy_from_slice(&112u64.to_be_bytes());
        }
        if let Ok(x) = Xzibit::parse(&b)
            && x.kdf_limits().is_some_and(|(o, m)| o <= 2 && m <= 20000)
        {
            prop_assert!(x.open(b"pw").is_err());
        }
    }
}
