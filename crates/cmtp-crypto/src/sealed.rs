//! Crypto systems: 0 = plain, 1 = libsodium sealed boxes to the recipient's Ed25519 key
//! converted to X25519 (spec §7).

use crate::{CryptoError, KeyPair, PublicKey, Result};
use libsodium_rs::crypto_box;
use zeroize::Zeroizing;

/// Bytes a sealed box adds to its plaintext: ephemeral pk (32) + Poly1305 tag (16).
pub const SEAL_OVERHEAD: usize = 48;

/// Seals `plaintext` to the Ed25519 `recipient` (libsodium `crypto_box_seal` to
/// `crypto_sign_ed25519_pk_to_curve25519(recipient)`). Output is `plaintext.len() + 48` bytes.
pub fn seal(plaintext: &[u8], recipient: &PublicKey) -> Result<Vec<u8>> {
    crate::init()?;
    let xpk = crypto_box::PublicKey::from_bytes_exact(recipient.to_x25519()?);
    crypto_box::seal_box(plaintext, &xpk).map_err(|_| CryptoError::Sodium("crypto_box_seal"))
}

/// The crypto system a message uses, chosen by the message's version field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CryptoSystem {
    /// Version 0: no encryption (bodies travel as they are).
    Plain = 0,
    /// Version 1: libsodium sealed boxes (`crypto_box_seal`).
    Sodium = 1,
}

impl CryptoSystem {
    /// The system of message version `v`; unknown versions are [`CryptoError::UnsupportedVersion`].
    pub fn from_version(v: u32) -> Result<Self> {
        match v {
            0 => Ok(Self::Plain),
            1 => Ok(Self::Sodium),
            other => Err(CryptoError::UnsupportedVersion(other)),
        }
    }

    /// The message version number of this system.
    pub fn version(self) -> u32 {
        self as u32
    }

    /// Encrypts `plain` for `recipient` under this system (Plain copies it).
    pub fn seal(self, plain: &[u8], recipient: &PublicKey) -> Result<Vec<u8>> {
        match self {
            Self::Plain => Ok(plain.to_vec()),
            Self::Sodium => seal(plain, recipient),
        }
    }

    /// Decrypts `ct` with `keys` under this system (Plain copies it).
    pub fn open(self, ct: &[u8], keys: &KeyPair) -> Result<Zeroizing<Vec<u8>>> {
        match self {
            Self::Plain => Ok(Zeroizing::new(ct.to_vec())),
            Self::Sodium => keys.open_sealed(ct),
        }
    }
}

/// [`CryptoSystem::seal`] for message version `version`.
pub fn seal_for(version: u32, plain: &[u8], recipient: &PublicKey) -> Result<Vec<u8>> {
    CryptoSystem::from_version(version)?.seal(plain, recipient)
}

/// [`CryptoSystem::open`] for message version `version`.
pub fn open_for(version: u32, ct: &[u8], keys: &KeyPair) -> Result<Zeroizing<Vec<u8>>> {
    CryptoSystem::from_version(version)?.open(ct, keys)
}
