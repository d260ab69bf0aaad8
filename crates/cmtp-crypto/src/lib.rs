//! CMTP crypto over libsodium (via `libsodium-rs`): Ed25519 identities, crypto
//! systems 0 (plain) and 1 (sealed boxes to the Ed25519 key converted to X25519),
//! BLAKE2b-256 digests and the xzibit (the password-encrypted key pair, versions 1 and 2).
//!
//! Nothing here is home-made cryptography: every primitive is one libsodium call.
//! Every entry point initialises libsodium once ([`init`]); every length is checked
//! before any call into C; no input makes this crate panic.

#![warn(missing_docs)]

mod der;
mod error;
mod hash;
mod keys;
pub mod opaque;
mod sealed;
mod xzibit;

pub use der::SPKI_DER_LEN;
pub use error::CryptoError;
pub use hash::{Blake2b, Blake2b256, blake2b_256, blake2b_256_keyed};
pub use keys::{KeyPair, PublicKey, SECRET_KEY_LEN, SEED_LEN, Signature};
pub use sealed::{CryptoSystem, SEAL_OVERHEAD, open_for, seal, seal_for};
pub use xzibit::{
    V2_MAX_MEMLIMIT, V2_MAX_OPSLIMIT, V2_MEMLIMIT, V2_OPSLIMIT, XZIBIT_V1_LEN, XZIBIT_V2_LEN,
    Xzibit,
};

/// Test knob: the version-1 scrypt key derivation, for checking vectors' derived keys.
#[cfg(feature = "test-knobs")]
pub use xzibit::v1_derive_key;

/// Result alias for this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;

static INIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Fills `buf` with random bytes from libsodium's CSPRNG (`randombytes_buf`).
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    init()?;
    libsodium_rs::random::fill_bytes(buf);
    Ok(())
}

/// Initialises libsodium exactly once (thread-safe); every public entry point calls it.
///
/// Fails only if `sodium_init` itself fails, which leaves libsodium unusable.
pub fn init() -> Result<()> {
    if *INIT.get_or_init(|| libsodium_rs::ensure_init().is_ok()) {
        Ok(())
    } else {
        Err(CryptoError::Init)
    }
}
