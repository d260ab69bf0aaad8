//! The DER forms of an Ed25519 key that TLS libraries take (RFC 8410): the public key as
//! a SubjectPublicKeyInfo (what a TLS raw public key is, RFC 7250) and the key pair as a
//! PKCS#8 v1 private key. Both are a fixed prefix followed by the 32 key bytes, so they
//! are built by concatenation, never parsed with a general DER reader.

use zeroize::Zeroizing;

use crate::{CryptoError, KeyPair, PublicKey, Result};

/// `SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING (0 unused bits) ... }`, RFC 8410 §4.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// `SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING ... } }`,
/// RFC 8410 §7 (the seed is the CurvePrivateKey).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Length of [`PublicKey::to_spki_der`]'s output.
pub const SPKI_DER_LEN: usize = SPKI_PREFIX.len() + 32;

impl PublicKey {
    /// The key as an RFC 8410 SubjectPublicKeyInfo (44 bytes): a TLS raw public key.
    pub fn to_spki_der(&self) -> [u8; SPKI_DER_LEN] {
        let mut out = [0u8; SPKI_DER_LEN];
        out[..SPKI_PREFIX.len()].copy_from_slice(&SPKI_PREFIX);
        out[SPKI_PREFIX.len()..].copy_from_slice(self.as_bytes());
        out
    }

    /// The key of an Ed25519 SubjectPublicKeyInfo in exactly the RFC 8410 form; anything
    /// else (another algorithm, another length, trailing bytes) is
    /// [`CryptoError::BadPublicKey`].
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => PublicKey::from_bytes(key),
            _ => Err(CryptoError::BadPublicKey),
        }
    }
}

impl KeyPair {
    /// The key pair as an RFC 8410 PKCS#8 v1 private key (48 bytes: prefix ‖ seed),
    /// zeroized when dropped. The seed is the first half of libsodium's secret key.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(PKCS8_PREFIX.len() + 32));
        out.extend_from_slice(&PKCS8_PREFIX);
        out.extend_from_slice(&self.seed()[..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_rejects_other_forms() {
        let kp = KeyPair::generate().unwrap();
        let der = kp.public().to_spki_der();
        assert_eq!(der.len(), 44);
        assert_eq!(PublicKey::from_spki_der(&der).unwrap(), kp.public());
        // Trailing byte, truncated key, wrong algorithm (X25519 is OID 1.3.101.110).
        let mut long = der.to_vec();
        long.push(0);
        assert!(PublicKey::from_spki_der(&long).is_err());
        assert!(PublicKey::from_spki_der(&der[..43]).is_err());
        let mut x25519 = der;
        x25519[8] = 0x6e;
        assert!(PublicKey::from_spki_der(&x25519).is_err());
    }

    #[test]
    fn pkcs8_carries_the_seed() {
        let kp = KeyPair::from_seed(&[7u8; 32]).unwrap();
        let der = kp.to_pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(&der[16..], &[7u8; 32]);
    }
}
