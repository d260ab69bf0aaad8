//! Fixtures: the shared test vectors, deterministic noise, messages, polling with a
//! deadline (never a sleep used as synchronisation).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Read timeout of test clients: a guard against hangs (a test fails instead), never a
/// synchronisation device.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How often [`poll`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// `testdata/vectors` at the workspace root: the shared test vectors.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/vectors"
    ))
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics (naming `what`)
/// once `deadline` has passed.
pub fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `cond` until it is true, or panics (naming `what`) after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    poll(what, timeout, || cond().then_some(()))
}

/// Seconds since the Unix epoch (the timestamps of signed mailbox requests).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Deterministic pseudo-random bytes (xorshift), so large payloads are not all zero.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Builds a message (spec §6): `dest` and `src` are (account, domain).
pub fn message(
    version: u32,
    dest: (&str, &str),
    src: (&str, &str),
    log: &[u8],
    body: &[u8],
    atts: &[&[u8]],
) -> Vec<u8> {
    let env = cmtp_proto::Envelope::new(version, dest.0, dest.1, src.0, src.1);
    let mut out = Vec::new();
    cmtp_proto::message::encode_message(&env, log, body, atts, &mut out)
        .expect("a test message within the protocol limits");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_and_not_constant() {
        let a = noise(1001, 7);
        assert_eq!(a.len(), 1001);
        assert_eq!(a, noise(1001, 7));
        assert_ne!(a, noise(1001, 8));
        assert!(a.iter().any(|&b| b != a[0]));
    }

    #[test]
    fn poll_returns_the_value_once_ready() {
        let mut n = 0;
        let v = poll("the third call", Duration::from_secs(10), || {
            n += 1;
            (n == 3).then_some(n * 10)
        });
        assert_eq!(v, 30);
    }

    #[test]
    #[should_panic(expected = "timed out waiting for nothing")]
    fn poll_panics_at_the_deadline() {
        wait_until("nothing", Duration::from_millis(20), || false);
    }

    #[test]
    fn vectors_dir_holds_the_vectors() {
        assert!(vectors_dir().join("message.json").is_file());
    }
}
