//! Fuzz the xzibit parser, and the opener where it is cheap.
//!
//! `Xzibit::parse` refuses v2 limits above the D3 ceiling, but even the ceiling (16 passes
//! over 1 GiB) is far too slow for a fuzzer, so `open` runs only for version 1 (fixed scrypt
//! cost, ~50 ms) on a small share of inputs, and for version 2 with cheap limits.
#![no_main]

use cmtp_crypto::Xzibit;
use libfuzzer_sys::fuzz_target;

/// Largest v2 limits we let the fuzzer open: libsodium's Argon2id minimum cost and a little over.
const CHEAP_OPS: u64 = 2;
const CHEAP_MEM: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(x) = Xzibit::parse(data) else {
        return;
    };
    assert_eq!(x.as_bytes(), data);
    let run_kdf = match x.kdf_limits() {
        Some((ops, mem)) => ops <= CHEAP_OPS && mem <= CHEAP_MEM,
        // Version 1: scrypt at interactive limits; open one input in 64 to keep the pace.
        None => data.get(4).is_some_and(|b| b % 64 == 0),
    };
    if run_kdf {
        // A random ciphertext almost never authenticates; either way it must not panic.
        let _ = x.open(b"fuzz password");
    }
});
