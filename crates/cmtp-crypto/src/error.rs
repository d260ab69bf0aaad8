//! The one error type of this crate.

/// Everything that can go wrong in `cmtp-crypto`. Bad input always lands here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// libsodium could not be initialised.
    #[error("libsodium initialisation failed")]
    Init,
    /// An input had the wrong length (`what` names it, `len` is what we got).
    #[error("bad length for {what}: {len} bytes")]
    BadLength {
        /// Which input.
        what: &'static str,
        /// The length received.
        len: usize,
    },
    /// A hex string did not decode.
    #[error("bad hex")]
    BadHex,
    /// A signature did not verify (libsodium `crypto_sign_verify_detached` rejected it).
    #[error("bad signature")]
    BadSignature,
    /// A public key is not usable (e.g. cannot be converted to X25519).
    #[error("bad public key")]
    BadPublicKey,
    /// A 64-byte secret key whose public half does not match its seed, or a decrypted
    /// xzibit whose public key does not match its secret key.
    #[error("key pair halves do not match")]
    KeyMismatch,
    /// A sealed box did not open (wrong recipient, tampered, or corrupt).
    #[error("decryption failed")]
    DecryptFailed,
    /// An xzibit did not open: wrong password, or its bytes were tampered with
    /// (the AEAD cannot tell the two apart).
    #[error("wrong password or tampered xzibit")]
    WrongPassword,
    /// A message or xzibit version this crate does not know.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u32),
    /// An xzibit v2 names a KDF other than 1 (Argon2id13).
    #[error("unsupported KDF {0}")]
    UnsupportedKdf(u32),
    /// A length field inside a structure disagrees with the format.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// Xzibit v2 KDF limits above our ceiling; refused before running the KDF.
    #[error("KDF limits too high (opslimit {opslimit}, memlimit {memlimit})")]
    LimitsTooHigh {
        /// opslimit found.
        opslimit: u64,
        /// memlimit found (bytes).
        memlimit: u64,
    },
    /// Xzibit v2 KDF limits below libsodium's minimums.
    #[error("KDF limits too low (opslimit {opslimit}, memlimit {memlimit})")]
    LimitsTooLow {
        /// opslimit found.
        opslimit: u64,
        /// memlimit found (bytes).
        memlimit: u64,
    },
    /// A libsodium call failed where it should not (e.g. out of memory in the KDF).
    #[error("libsodium operation failed: {0}")]
    Sodium(&'static str),
}
