//! Ed25519 identities (libsodium `crypto_sign_*`) and their X25519 conversions.

use crate::{CryptoError, Result, blake2b_256};
use libsodium_rs::{crypto_box, crypto_sign};
use zeroize::{Zeroize, Zeroizing};

/// Length of an Ed25519 seed.
pub const SEED_LEN: usize = 32;
/// Length of a libsodium Ed25519 secret key: seed(32) ‖ public key(32).
pub const SECRET_KEY_LEN: usize = 64;

/// An Ed25519 public key (32 bytes), as libsodium encodes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl PublicKey {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// Wraps exactly 32 bytes; any other length is [`CryptoError::BadLength`].
    /// The point is not validated here: [`PublicKey::verify`] and [`crate::seal`] reject
    /// what libsodium rejects.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadLength {
            what: "public key",
            len: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// Wraps a 32-byte array.
    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let v = hex::decode(s).map_err(|_| CryptoError::BadHex)?;
        Self::from_bytes(&v)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex of the 32 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short human fingerprint for comparing keys by eye or over the phone:
    /// the first 16 bytes (128 bits) of BLAKE2b-256(pk), lower-case hex, in 8 groups
    /// of 4 digits separated by single spaces, e.g. `"3f1a 09c2 … 77de"` (39 characters).
    pub fn fingerprint(&self) -> String {
        let d = blake2b_256(&self.0);
        let h = hex::encode(&d[..16]);
        let mut out = String::with_capacity(39);
        for (i, chunk) in h.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                out.push(' ');
            }
            // hex output is ASCII, so each chunk is valid UTF-8.
            out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        }
        out
    }

    /// Verifies a detached Ed25519 signature with libsodium `crypto_sign_verify_detached`
    /// (which rejects non-canonical and small-order encodings).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<()> {
        crate::init()?;
        let pk = crypto_sign::PublicKey::from_bytes_exact(self.0);
        if crypto_sign::verify_detached(&sig.0, msg, &pk) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// The X25519 public key (libsodium `crypto_sign_ed25519_pk_to_curve25519`);
    /// fails with [`CryptoError::BadPublicKey`] for keys libsodium refuses to convert.
    pub fn to_x25519(&self) -> Result<[u8; 32]> {
        crate::init()?;
        let pk = crypto_sign::PublicKey::from_bytes_exact(self.0);
        crypto_sign::ed25519_pk_to_curve25519(&pk).map_err(|_| CryptoError::BadPublicKey)
    }
}

/// A detached Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Signature {
    /// Length in bytes.
    pub const LEN: usize = 64;

    /// Wraps exactly 64 bytes; any other length is [`CryptoError::BadLength`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 64] = bytes.try_into().map_err(|_| CryptoError::BadLength {
            what: "signature",
            len: bytes.len(),
        })?;
        Ok(Self(arr))
    }

    /// Wraps a 64-byte array.
    pub const fn from_array(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// Parses 128 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self> {
        let v = hex::decode(s).map_err(|_| CryptoError::BadHex)?;
        Self::from_bytes(&v)
    }

    /// The 64 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Lower-case hex (128 digits), the form the mailbox extension puts on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// An Ed25519 key pair, libsodium layout (secret key = seed ‖ pk). The secret bytes and the
/// derived X25519 secret are zeroized on drop; `Debug` prints only the public key.
#[derive(Clone)]
pub struct KeyPair {
    sk: [u8; 64],
    x_sk: [u8; 32],
    public: PublicKey,
    x_pk: [u8; 32],
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        self.sk.zeroize();
        self.x_sk.zeroize();
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl KeyPair {
    /// A fresh random key pair (libsodium `crypto_sign_keypair` randomness via `randombytes`).
    pub fn generate() -> Result<Self> {
        crate::init()?;
        let mut seed = Zeroizing::new([0u8; 32]);
        libsodium_rs::random::fill_bytes(&mut seed[..]);
        Self::from_seed(&seed)
    }

    /// The key pair of a 32-byte seed (libsodium `crypto_sign_seed_keypair`).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        crate::init()?;
        let kp = crypto_sign::keypair_from_seed(seed)
            .map_err(|_| CryptoError::Sodium("crypto_sign_seed_keypair"))?;
        let mut sk = [0u8; 64];
        sk.copy_from_slice(kp.secret_key.as_bytes());
        let public = PublicKey(*kp.public_key.as_bytes());
        Self::assemble(sk, public)
    }

    /// The key pair of a 64-byte libsodium secret key (seed ‖ pk). The pair is rebuilt from
    /// the seed and the pk half must match, else [`CryptoError::KeyMismatch`].
    pub fn from_secret_bytes(sk: &[u8]) -> Result<Self> {
        if sk.len() != SECRET_KEY_LEN {
            return Err(CryptoError::BadLength {
                what: "secret key",
                len: sk.len(),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&sk[..32]);
        let kp = Self::from_seed(&seed)?;
        if kp.public.0[..] != sk[32..] {
            return Err(CryptoError::KeyMismatch);
        }
        Ok(kp)
    }

    fn assemble(sk: [u8; 64], public: PublicKey) -> Result<Self> {
        let mut kp = KeyPair {
            sk,
            x_sk: [0u8; 32],
            public,
            x_pk: [0u8; 32],
        };
        let lsk = crypto_sign::SecretKey::from_bytes_exact(kp.sk);
        kp.x_sk = crypto_sign::ed25519_sk_to_curve25519(&lsk)
            .map_err(|_| CryptoError::Sodium("ed25519_sk_to_curve25519"))?;
        kp.x_pk = public.to_x25519()?;
        Ok(kp)
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The 64-byte secret key (seed ‖ pk), zeroized when the returned value drops.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.sk)
    }

    /// The 32-byte seed, zeroized when the returned value drops.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(&self.sk[..32]);
        s
    }

    /// The X25519 public key (`crypto_sign_ed25519_pk_to_curve25519` of [`KeyPair::public`]).
    pub fn x25519_public(&self) -> [u8; 32] {
        self.x_pk
    }

    /// The X25519 secret key (`crypto_sign_ed25519_sk_to_curve25519`), zeroized on drop.
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.x_sk)
    }

    /// A detached Ed25519 signature of `msg` (libsodium `crypto_sign_detached`, deterministic).
    ///
    /// `crypto_sign_detached` cannot fail; were the wrapper ever to report a failure we
    /// return the all-zero signature, which libsodium's verifier rejects (small-order R).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        let _ = crate::init();
        let lsk = crypto_sign::SecretKey::from_bytes_exact(self.sk);
        Signature(crypto_sign::sign_detached(msg, &lsk).unwrap_or([0u8; 64]))
    }

    /// Opens a sealed box addressed to this key (libsodium `crypto_box_seal_open` with the
    /// X25519 conversion of this pair). Shorter than 48 bytes is [`CryptoError::BadLength`]
    /// without calling C; any other failure is [`CryptoError::DecryptFailed`].
    pub fn open_sealed(&self, ct: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if ct.len() < crate::SEAL_OVERHEAD {
            return Err(CryptoError::BadLength {
                what: "sealed box",
                len: ct.len(),
            });
        }
        crate::init()?;
        let pk = crypto_box::PublicKey::from_bytes_exact(self.x_pk);
        let sk = crypto_box::SecretKey::from_bytes_exact(self.x_sk);
        crypto_box::open_sealed_box(ct, &pk, &sk)
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::DecryptFailed)
    }
}
