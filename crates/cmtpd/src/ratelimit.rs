//! Per-IP connection counting and command token buckets.
//!
//! One entry per client IP holds its open-connection count and its buckets. Entries are
//! kept after the last connection closes (so reconnecting does not refill a bucket) and
//! swept once their buckets would be full anyway, which loses nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::RateLimits;

/// Which bucket a command draws from (besides the general one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any command: only the general bucket.
    Any,
    /// LOGIN.
    Login,
    /// KEYREQUEST for a user.
    KeyRequest,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * f64::from(rate)).min(f64::from(burst.max(1)));
        self.last = now;
    }

    fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        rate == 0 || {
            self.refill(rate, burst, now);
            self.tokens >= f64::from(burst.max(1))
        }
    }
}

#[derive(Debug)]
struct IpState {
    connections: usize,
    all: Bucket,
    login: Bucket,
    key: Bucket,
    mbox_fail: Bucket,
}

/// One client IP's shared state (held by each of its connections).
#[derive(Debug)]
pub struct IpEntry {
    state: Mutex<IpState>,
    rates: RateLimits,
}

impl IpEntry {
    /// Takes a token for a command of class `class`; false = over the limit.
    pub fn allow(&self, class: Class) -> bool {
        let now = Instant::now();
        let r = &self.rates;
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        if !s.all.take(r.commands_per_sec, r.commands_burst, now) {
            return false;
        }
        match class {
            Class::Any => true,
            Class::Login => s.login.take(r.login_per_sec, r.login_burst, now),
            Class::KeyRequest => s.key.take(r.keyrequest_per_sec, r.keyrequest_burst, now),
        }
    }
}

impl IpEntry {
    /// Whether this IP may still fail mailbox authorisation (checked before the costly
    /// signature verification; does not spend a token).
    pub fn mbox_failures_left(&self) -> bool {
        let r = &self.rates;
        if r.mbox_auth_failures_per_sec == 0 {
            return true;
        }
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        s.mbox_fail.refill(
            r.mbox_auth_failures_per_sec,
            r.mbox_auth_failures_burst,
            Instant::now(),
        );
        s.mbox_fail.tokens >= 1.0
    }

    /// Spends one token for a refused mailbox request.
    pub fn charge_mbox_failure(&self) {
        let r = &self.rates;
        if let Ok(mut s) = self.state.lock() {
            s.mbox_fail.take(
                r.mbox_auth_failures_per_sec,
                r.mbox_auth_failures_burst,
                Instant::now(),
            );
        }
    }
}

/// All clients' entries.
#[derive(Debug)]
pub struct Limiter {
    entries: Mutex<(HashMap<IpAddr, Arc<IpEntry>>, Instant)>,
    rates: RateLimits,
    per_ip: usize,
}

/// Releases the connection's slot for its IP when dropped.
#[derive(Debug)]
pub struct IpSlot {
    /// The shared entry of this IP (for rate checks).
    pub entry: Arc<IpEntry>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut s) = self.entry.state.lock() {
            s.connections = s.connections.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// A limiter with these rates and at most `per_ip` connections per address.
    pub fn new(rates: RateLimits, per_ip: usize) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), Instant::now())),
            rates,
            per_ip,
        }
    }

    /// Registers a new connection from `ip`; None when that IP has too many.
    pub fn connect(&self, ip: IpAddr) -> Option<IpSlot> {
        let now = Instant::now();
        let mut guard = self.entries.lock().ok()?;
        let (map, last_sweep) = &mut *guard;
        if now.saturating_duration_since(*last_sweep).as_secs() >= 30 {
            *last_sweep = now;
            let r = &self.rates;
            map.retain(|_, e| {
                let Ok(mut s) = e.state.lock() else {
                    return false;
                };
                let s = &mut *s;
                s.connections > 0
                    || !(s.all.is_full(r.commands_per_sec, r.commands_burst, now)
                        && s.login.is_full(r.login_per_sec, r.login_burst, now)
                        && s.key.is_full(r.keyrequest_per_sec, r.keyrequest_burst, now)
                        && s.mbox_fail.is_full(
                            r.mbox_auth_failures_per_sec,
                            r.mbox_auth_failures_burst,
                            now,
                        ))
            });
        }
        let entry = map
            .entry(ip)
            .or_insert_with(|| {
                Arc::new(IpEntry {
                    state: Mutex::new(IpState {
                        connections: 0,
                        all: Bucket::full(self.rates.commands_burst, now),
                        login: Bucket::full(self.rates.login_burst, now),
                        key: Bucket::full(self.rates.keyrequest_burst, now),
                        mbox_fail: Bucket::full(self.rates.mbox_auth_failures_burst, now),
                    }),
                    rates: self.rates.clone(),
                })
            })
            .clone();
        drop(guard);
        let mut s = entry.state.lock().ok()?;
        if s.connections >= self.per_ip {
            return None;
        }
        s.connections += 1;
        drop(s);
        Some(IpSlot { entry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_connections_are_capped_and_released() {
        let l = Limiter::new(RateLimits::default(), 2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.connect(ip).unwrap();
        let _b = l.connect(ip).unwrap();
        assert!(l.connect(ip).is_none());
        assert!(l.connect([127, 0, 0, 2].into()).is_some());
        drop(a);
        assert!(l.connect(ip).is_some());
    }

    #[test]
    fn login_bucket_empties() {
        let rates = RateLimits {
            login_per_sec: 1,
            login_burst: 3,
            ..Default::default()
        };
        let l = Limiter::new(rates, 10);
        let s = l.connect([10, 0, 0, 1].into()).unwrap();
        let ok = (0..10).filter(|_| s.entry.allow(Class::Login)).count();
        // 3 from the burst, at most one more refilled during the loop.
        assert!((3..=4).contains(&ok), "{ok}");
        assert!(s.entry.allow(Class::Any));
    }
}
