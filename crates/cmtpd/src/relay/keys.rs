//! The cache of relayed keys: positive answers for `key_cache_secs`, "no such key" for
//! `key_negative_cache_secs`. Bounded: when full, expired entries go, then the cache is
//! cleared (a refill costs one remote KEYREQUEST per key).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::Federation;

/// Most cached answers.
const MAX_ENTRIES: usize = 100_000;

/// `(user, domain)` → (the answer, when it expires).
type Answers = HashMap<(String, String), (Option<[u8; 32]>, Instant)>;

/// Cached answers to relayed KEYREQUESTs.
pub struct KeyCache {
    map: Mutex<Answers>,
    positive: Duration,
    negative: Duration,
}

impl KeyCache {
    /// An empty cache with the TTLs of `cfg`.
    pub fn new(cfg: &Federation) -> Self {
        KeyCache {
            map: Mutex::new(HashMap::new()),
            positive: Duration::from_secs(cfg.key_cache_secs),
            negative: Duration::from_secs(cfg.key_negative_cache_secs),
        }
    }

    /// The cached answer for `user@domain`, if fresh: `Some(None)` = "no such key".
    pub fn get(&self, user: &str, domain: &str) -> Option<Option<[u8; 32]>> {
        let map = self.map.lock();
        let (answer, until) = map.get(&(user.to_owned(), domain.to_owned()))?;
        (Instant::now() < *until).then_some(*answer)
    }

    /// Remembers an answer.
    pub fn put(&self, user: &str, domain: &str, answer: Option<[u8; 32]>) {
        let ttl = if answer.is_some() {
            self.positive
        } else {
            self.negative
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.map.lock();
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert((user.to_owned(), domain.to_owned()), (answer, now + ttl));
    }

    /// Forgets every answer about `domain` (its server key changed hands).
    pub fn forget_domain(&self, domain: &str) {
        self.map.lock().retain(|(_, d), _| d != domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_with_their_ttl() {
        let cfg = Federation {
            key_cache_secs: 3600,
            key_negative_cache_secs: 0,
            ..Federation::default()
        };
        let c = KeyCache::new(&cfg);
        c.put("bob", "b.test", Some([7; 32]));
        c.put("eve", "b.test", None);
        assert_eq!(c.get("bob", "b.test"), Some(Some([7; 32])));
        assert_eq!(c.get("eve", "b.test"), None, "negative TTL 0: not cached");
        c.forget_domain("b.test");
        assert_eq!(c.get("bob", "b.test"), None);
    }
}
