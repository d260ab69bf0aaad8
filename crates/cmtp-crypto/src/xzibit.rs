//! The xzibit: a user's Ed25519 key pair encrypted under their password (spec §7,
//! docs/protocol.md §D3). Servers store it and hand it to anyone; only the password opens it.
//!
//! Version 1 (the 2016 reference, 156 bytes, all integers big-endian):
//! ```text
//! 0   u32 version = 1
//! 4   salt (32)          scrypt salt; salt[0..8] is also the AEAD nonce
//! 36  u64 ct_len = 112
//! 44  ct (112)           crypto_aead_chacha20poly1305 (ORIGINAL, 8-byte nonce), no AD,
//!                        key = crypto_pwhash_scryptsalsa208sha256(pw, salt, OPS/MEM INTERACTIVE)
//!                        of pk(32) || sk(64)
//! ```
//! Version 2 (new accounts, 184 bytes):
//! ```text
//! 0   u32 version = 2
//! 4   u32 kdf = 1        Argon2id13 (crypto_pwhash, ALG_ARGON2ID13)
//! 8   u64 opslimit
//! 16  u64 memlimit       bytes
//! 24  salt (16)
//! 40  nonce (24)         XChaCha20-Poly1305-IETF, random
//! 64  u64 ct_len = 112
//! 72  ct (112)           crypto_aead_xchacha20poly1305_ietf of pk(32) || sk(64),
//!                        AD = bytes 0..72
//! ```

use crate::{CryptoError, KeyPair, Result};
use libsodium_rs::crypto_aead::{chacha20poly1305, xchacha20poly1305};
use libsodium_rs::crypto_pwhash::{argon2id, scryptsalsa208sha256};
use zeroize::Zeroizing;

/// Total length of a version-1 xzibit.
pub const XZIBIT_V1_LEN: usize = 156;
/// Total length of a version-2 xzibit.
pub const XZIBIT_V2_LEN: usize = 184;

/// Length of the encrypted key pair: pk(32) + sk(64) + tag(16).
const CT_LEN: usize = 112;
const PLAIN_LEN: usize = 96;
const V1_SALT: usize = 32;
const V2_SALT: usize = 16;
const V2_NONCE: usize = 24;
const V2_AD_LEN: usize = 72;
const V2_KDF_ARGON2ID13: u32 = 1;

/// scrypt limits of version 1 (`crypto_pwhash_scryptsalsa208sha256_*_INTERACTIVE`):
/// 524288 and 16 MiB, i.e. N = 2^14, r = 8, p = 1.
const V1_OPSLIMIT: u64 = 524_288;
const V1_MEMLIMIT: usize = 16_777_216;

/// Argon2id opslimit for new version-2 xzibits.
///
/// Chosen with [`V2_MEMLIMIT`] (256 MiB, libsodium's MODERATE memory) to cost about half a
/// second for the one user who opens the xzibit. Measured 2026-11-25 on the project build
/// machine (AMD EPYC, 2 cores, bundled libsodium at opt-level 3), best of 3
/// `crypto_pwhash_argon2id(32, ..)` runs:
/// ```text
/// ops 3 / 64 MiB 0.071 s   ops 3 / 256 MiB 0.345 s   ops 5 / 256 MiB 0.513 s  <- chosen
/// ops 5 / 64 MiB 0.103 s   ops 4 / 256 MiB 0.421 s   ops 3 / 384 MiB 0.540 s
/// ```
/// Both stay well under the reader ceiling ([`V2_MAX_OPSLIMIT`], [`V2_MAX_MEMLIMIT`]).
pub const V2_OPSLIMIT: u64 = 5;
/// Argon2id memlimit (bytes) for new version-2 xzibits: 256 MiB, see [`V2_OPSLIMIT`].
pub const V2_MEMLIMIT: u64 = 256 * 1024 * 1024;

/// Readers refuse a v2 opslimit above this (D3) before running the KDF.
pub const V2_MAX_OPSLIMIT: u64 = 16;
/// Readers refuse a v2 memlimit above this, 1 GiB (D3), before running the KDF.
pub const V2_MAX_MEMLIMIT: u64 = 1 << 30;

/// libsodium's Argon2id minimums (`crypto_pwhash_argon2id_OPSLIMIT_MIN` / `MEMLIMIT_MIN`).
const V2_MIN_OPSLIMIT: u64 = 1;
const V2_MIN_MEMLIMIT: u64 = 8192;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    V1,
    V2 { opslimit: u64, memlimit: u64 },
}

/// A parsed xzibit (v1 or v2). It keeps its exact bytes, which LOGIN sends as they are.
#[derive(Clone, PartialEq, Eq)]
pub struct Xzibit {
    bytes: Vec<u8>,
    kind: Kind,
}

impl std::fmt::Debug for Xzibit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Xzibit");
        d.field("version", &self.version());
        if let Some((o, m)) = self.kdf_limits() {
            d.field("opslimit", &o).field("memlimit", &m);
        }
        d.finish_non_exhaustive()
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn check_v2_limits(opslimit: u64, memlimit: u64) -> Result<()> {
    if opslimit > V2_MAX_OPSLIMIT || memlimit > V2_MAX_MEMLIMIT {
        return Err(CryptoError::LimitsTooHigh { opslimit, memlimit });
    }
    if opslimit < V2_MIN_OPSLIMIT || memlimit < V2_MIN_MEMLIMIT {
        return Err(CryptoError::LimitsTooLow { opslimit, memlimit });
    }
    Ok(())
}

impl Xzibit {
    /// Parses an xzibit strictly: version 1 must be exactly 156 bytes, version 2 exactly
    /// 184 bytes with kdf = 1 and KDF limits within `[libsodium minimum, D3 ceiling]`;
    /// the ciphertext length field must say 112. Nothing is decrypted here.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 4 {
            return Err(CryptoError::BadLength {
                what: "xzibit",
                len: bytes.len(),
            });
        }
        let kind = match be_u32(bytes, 0) {
            1 => {
                if bytes.len() != XZIBIT_V1_LEN {
                    return Err(CryptoError::BadLength {
                        what: "xzibit v1",
                        len: bytes.len(),
                    });
                }
                if be_u64(bytes, 36) != CT_LEN as u64 {
                    return Err(CryptoError::Malformed("xzibit ciphertext length"));
                }
                Kind::V1
            }
            2 => {
                if bytes.len() != XZIBIT_V2_LEN {
                    return Err(CryptoError::BadLength {
                        what: "xzibit v2",
                        len: bytes.len(),
                    });
                }
                let kdf = be_u32(bytes, 4);
                if kdf != V2_KDF_ARGON2ID13 {
                    return Err(CryptoError::UnsupportedKdf(kdf));
                }
                let (opslimit, memlimit) = (be_u64(bytes, 8), be_u64(bytes, 16));
                check_v2_limits(opslimit, memlimit)?;
                if be_u64(bytes, 64) != CT_LEN as u64 {
                    return Err(CryptoError::Malformed("xzibit ciphertext length"));
                }
                Kind::V2 { opslimit, memlimit }
            }
            v => return Err(CryptoError::UnsupportedVersion(v)),
        };
        Ok(Self {
            bytes: bytes.to_vec(),
            kind,
        })
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The exact bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// 1 or 2.
    pub fn version(&self) -> u32 {
        match self.kind {
            Kind::V1 => 1,
            Kind::V2 { .. } => 2,
        }
    }

    /// `(opslimit, memlimit)` of a version-2 xzibit; `None` for version 1 (fixed scrypt limits).
    pub fn kdf_limits(&self) -> Option<(u64, u64)> {
        match self.kind {
            Kind::V1 => None,
            Kind::V2 { opslimit, memlimit } => Some((opslimit, memlimit)),
        }
    }

    /// Decrypts the key pair with `password` (its exact bytes: no trimming, no normalising).
    ///
    /// A failed AEAD check is [`CryptoError::WrongPassword`] (wrong password and tampering
    /// look alike). The decrypted pk must equal the secret key's pk half and the secret key
    /// must match its seed, else [`CryptoError::KeyMismatch`]. v2 limits are re-checked
    /// against the ceiling before the KDF runs.
    pub fn open(&self, password: &[u8]) -> Result<KeyPair> {
        crate::init()?;
        let plain = match self.kind {
            Kind::V1 => {
                let salt = &self.bytes[4..4 + V1_SALT];
                let key = scrypt_key(password, salt)?;
                let mut nonce = [0u8; 8];
                nonce.copy_from_slice(&salt[..8]);
                let key = chacha20poly1305::Key::from_bytes(&key[..])
                    .map_err(|_| CryptoError::Sodium("chacha20poly1305 key"))?;
                chacha20poly1305::decrypt(
                    &self.bytes[44..44 + CT_LEN],
                    None,
                    &chacha20poly1305::Nonce::from_bytes(nonce),
                    &key,
                )
                .map(Zeroizing::new)
                .map_err(|_| CryptoError::WrongPassword)?
            }
            Kind::V2 { opslimit, memlimit } => {
                check_v2_limits(opslimit, memlimit)?;
                let salt = &self.bytes[24..24 + V2_SALT];
                let key = argon2_key(password, salt, opslimit, memlimit)?;
                let mut nonce = [0u8; V2_NONCE];
                nonce.copy_from_slice(&self.bytes[40..40 + V2_NONCE]);
                let key = xchacha20poly1305::Key::from_bytes(&key[..])
                    .map_err(|_| CryptoError::Sodium("xchacha20poly1305 key"))?;
                xchacha20poly1305::decrypt(
                    &self.bytes[V2_AD_LEN..V2_AD_LEN + CT_LEN],
                    Some(&self.bytes[..V2_AD_LEN]),
                    &xchacha20poly1305::Nonce::from_bytes(nonce),
                    &key,
                )
                .map(Zeroizing::new)
                .map_err(|_| CryptoError::WrongPassword)?
            }
        };
        if plain.len() != PLAIN_LEN {
            return Err(CryptoError::Malformed("xzibit plaintext"));
        }
        let kp = KeyPair::from_secret_bytes(&plain[32..96])?;
        if kp.public().as_bytes()[..] != plain[..32] {
            return Err(CryptoError::KeyMismatch);
        }
        Ok(kp)
    }

    /// A version-1 xzibit (the 2016 format, scrypt interactive limits) with a random salt.
    /// Kept so we can write what 2016 clients read; new accounts use [`Xzibit::create_v2`].
    pub fn create_v1(keys: &KeyPair, password: &[u8]) -> Result<Self> {
        crate::init()?;
        let mut salt = [0u8; V1_SALT];
        libsodium_rs::random::fill_bytes(&mut salt);
        Self::v1_with_salt(keys, password, &salt)
    }

    /// A version-2 xzibit with our Argon2id limits ([`V2_OPSLIMIT`], [`V2_MEMLIMIT`]),
    /// random salt and nonce.
    pub fn create_v2(keys: &KeyPair, password: &[u8]) -> Result<Self> {
        Self::v2_with_limits(keys, password, V2_OPSLIMIT, V2_MEMLIMIT)
    }

    /// Test knob: version 1 with a chosen salt (reproduces reference xzibits byte for byte).
    #[cfg(feature = "test-knobs")]
    pub fn create_v1_with_salt(keys: &KeyPair, password: &[u8], salt: &[u8; 32]) -> Result<Self> {
        Self::v1_with_salt(keys, password, salt)
    }

    /// Test knob: version 2 with chosen (e.g. cheap: ops 1, mem 8192) Argon2id limits.
    #[cfg(feature = "test-knobs")]
    pub fn create_v2_with_limits(
        keys: &KeyPair,
        password: &[u8],
        opslimit: u64,
        memlimit: u64,
    ) -> Result<Self> {
        Self::v2_with_limits(keys, password, opslimit, memlimit)
    }

    fn plaintext(keys: &KeyPair) -> Zeroizing<[u8; PLAIN_LEN]> {
        let mut p = Zeroizing::new([0u8; PLAIN_LEN]);
        p[..32].copy_from_slice(keys.public().as_bytes());
        p[32..].copy_from_slice(&keys.secret_bytes()[..]);
        p
    }

    fn v1_with_salt(keys: &KeyPair, password: &[u8], salt: &[u8; 32]) -> Result<Self> {
        crate::init()?;
        let key = scrypt_key(password, salt)?;
        let key = chacha20poly1305::Key::from_bytes(&key[..])
            .map_err(|_| CryptoError::Sodium("chacha20poly1305 key"))?;
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&salt[..8]);
        let ct = chacha20poly1305::encrypt(
            &Self::plaintext(keys)[..],
            None,
            &chacha20poly1305::Nonce::from_bytes(nonce),
            &key,
        )
        .map_err(|_| CryptoError::Sodium("chacha20poly1305 encrypt"))?;
        let mut b = Vec::with_capacity(XZIBIT_V1_LEN);
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(salt);
        b.extend_from_slice(&(ct.len() as u64).to_be_bytes());
        b.extend_from_slice(&ct);
        Self::parse(&b)
    }

    fn v2_with_limits(
        keys: &KeyPair,
        password: &[u8],
        opslimit: u64,
        memlimit: u64,
    ) -> Result<Self> {
        crate::init()?;
        check_v2_limits(opslimit, memlimit)?;
        let mut salt = [0u8; V2_SALT];
        libsodium_rs::random::fill_bytes(&mut salt);
        let mut nonce = [0u8; V2_NONCE];
        libsodium_rs::random::fill_bytes(&mut nonce);
        let mut b = Vec::with_capacity(XZIBIT_V2_LEN);
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&V2_KDF_ARGON2ID13.to_be_bytes());
        b.extend_from_slice(&opslimit.to_be_bytes());
        b.extend_from_slice(&memlimit.to_be_bytes());
        b.extend_from_slice(&salt);
        b.extend_from_slice(&nonce);
        b.extend_from_slice(&(CT_LEN as u64).to_be_bytes());
        let key = argon2_key(password, &salt, opslimit, memlimit)?;
        let key = xchacha20poly1305::Key::from_bytes(&key[..])
            .map_err(|_| CryptoError::Sodium("xchacha20poly1305 key"))?;
        let ct = xchacha20poly1305::encrypt(
            &Self::plaintext(keys)[..],
            Some(&b[..]),
            &xchacha20poly1305::Nonce::from_bytes(nonce),
            &key,
        )
        .map_err(|_| CryptoError::Sodium("xchacha20poly1305 encrypt"))?;
        b.extend_from_slice(&ct);
        Self::parse(&b)
    }
}

/// scrypt key of version 1 (`crypto_pwhash_scryptsalsa208sha256`, interactive limits).
fn scrypt_key(password: &[u8], salt: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    scryptsalsa208sha256::pwhash(32, password, salt, V1_OPSLIMIT, V1_MEMLIMIT)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Sodium("crypto_pwhash_scryptsalsa208sha256"))
}

/// Argon2id13 key of version 2; limits must already be checked.
fn argon2_key(
    password: &[u8],
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
) -> Result<Zeroizing<Vec<u8>>> {
    let mem =
        usize::try_from(memlimit).map_err(|_| CryptoError::LimitsTooHigh { opslimit, memlimit })?;
    argon2id::pwhash(32, password, salt, opslimit, mem)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Sodium("crypto_pwhash argon2id"))
}

/// Derives the version-1 key exactly as the reference does; exposed for vector tests.
#[cfg(feature = "test-knobs")]
pub fn v1_derive_key(password: &[u8], salt: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>> {
    crate::init()?;
    scrypt_key(password, salt)
}
