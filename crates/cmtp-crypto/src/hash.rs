//! BLAKE2b-256 (libsodium `crypto_generichash`, 32-byte output, no key).

use libsodium_rs::crypto_generichash;

/// BLAKE2b with a 32-byte output of `data` (libsodium `crypto_generichash(out, 32, data, NULL, 0)`).
pub fn blake2b_256(data: &[u8]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(data);
    h.finalize()
}

/// Keyed BLAKE2b with a 32-byte output (libsodium `crypto_generichash` with a 32-byte
/// key): a MAC, for tokens that only the key's holder can compute (e.g. addresses in
/// logs, hashed for privacy).
pub fn blake2b_256_keyed(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let _ = crate::init();
    let mut out = [0u8; 32];
    if let Ok(v) = crypto_generichash::generichash(data, Some(key), 32)
        && v.len() == 32
    {
        out.copy_from_slice(&v);
    }
    out
}

/// Streaming BLAKE2b-256, so a large payload can be hashed chunk by chunk and its digest signed.
pub struct Blake2b256 {
    // None only if libsodium refused to create a state, which it cannot for a 32-byte output.
    state: Option<crypto_generichash::State>,
}

/// The name used in docs/architecture.md for the streaming hasher.
pub type Blake2b = Blake2b256;

impl Default for Blake2b256 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Blake2b256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blake2b256 { .. }")
    }
}

impl Blake2b256 {
    /// A fresh hasher.
    pub fn new() -> Self {
        let _ = crate::init();
        Self {
            state: crypto_generichash::State::new(None, 32).ok(),
        }
    }

    /// Absorbs more bytes.
    pub fn update(&mut self, data: &[u8]) {
        if let Some(s) = self.state.as_mut() {
            s.update(data);
        }
    }

    /// The 32-byte digest of everything absorbed.
    pub fn finalize(mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        if let Some(s) = self.state.as_mut() {
            let v = s.finalize();
            if v.len() == 32 {
                out.copy_from_slice(&v);
            }
        }
        out
    }
}

#[cfg(test)]
mod keyed_tests {
    use super::*;

    #[test]
    fn keyed_hash_depends_on_key_and_data() {
        let a = blake2b_256_keyed(&[1; 32], b"alice@example.org");
        assert_eq!(a, blake2b_256_keyed(&[1; 32], b"alice@example.org"));
        assert_ne!(a, blake2b_256_keyed(&[2; 32], b"alice@example.org"));
        assert_ne!(a, blake2b_256_keyed(&[1; 32], b"bob@example.org"));
        assert_ne!(a, blake2b_256(b"alice@example.org"));
        assert_ne!(a, [0; 32]);
    }
}
