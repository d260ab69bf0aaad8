//! Per-IP connection counting and command token buckets; per-mailbox MAIL buckets.
//!
//! Addresses in `exempt_networks` (loopback by default, like Postfix's `mynetworks`) are
//! not counted or rate limited per address: local submission clients and tools share one
//! address. They are still bounded by the global connection limit, and their MAIL still
//! draws from the recipient mailbox's bucket.
//!
//! One entry per client IP holds its open-connection count and its buckets. Entries are
//! kept after the last connection closes (so reconnecting does not refill a bucket) and
//! swept once their buckets would be full anyway, which loses nothing.
//!
//! An IPv6 client is keyed by its /64 (a host usually owns a whole /64, so keying by the
//! full address would let it take a fresh entry per address), an IPv4-mapped IPv6
//! address as the IPv4 address. The table holds at most `max_ips` entries: a new
//! address finding it full is refused. The sweep is O(entries) under the table's mutex,
//! so it runs at most every 30 s, or once a second while the table is full: never on
//! every accept.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};

use crate::config::RateLimits;
use crate::live::Live;

/// Which bucket a command draws from (besides the general one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any command: only the general bucket.
    Any,
    /// LOGIN.
    Login,
    /// KEYREQUEST for a user.
    KeyRequest,
    /// MAIL.
    Mail,
    /// OPAQUE1 (the start of an OPAQUE login).
    Opaque,
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
        self.refill_per_sec(f64::from(rate), burst, now);
    }

    fn refill_per_sec(&mut self, rate: f64, burst: u32, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(f64::from(burst.max(1)));
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
    mail: Bucket,
    mbox_fail: Bucket,
    opaque: Bucket,
}

/// One client IP's shared state (held by each of its connections).
#[derive(Debug)]
pub struct IpEntry {
    state: Mutex<IpState>,
    /// The limiter's rates, shared, so a reload reaches every address at once.
    rates: Arc<Live<RateLimits>>,
}

impl IpEntry {
    /// Takes a token for a command of class `class`; false = over the limit.
    pub fn allow(&self, class: Class) -> bool {
        let now = Instant::now();
        let r = &*self.rates.load();
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
            Class::Mail => s.mail.take(r.mail_per_sec, r.mail_burst, now),
            Class::Opaque => s.opaque.take(r.opaque_per_sec, r.opaque_burst, now),
        }
    }
}

impl IpEntry {
    /// Whether this IP may still fail mailbox authorisation (checked before the costly
    /// signature verification; does not spend a token).
    pub fn mbox_failures_left(&self) -> bool {
        let r = &*self.rates.load();
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
        let r = &*self.rates.load();
        if let Ok(mut s) = self.state.lock() {
            s.mbox_fail.take(
                r.mbox_auth_failures_per_sec,
                r.mbox_auth_failures_burst,
                Instant::now(),
            );
        }
    }
}

/// Sweep period while the table has room.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Sweep period while the table is full (new addresses are being refused).
const SWEEP_WHEN_FULL: Duration = Duration::from_secs(1);

/// Why [`Limiter::connect`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This address has `max_connections_per_ip` connections open.
    PerIp,
    /// The table of addresses is full of active entries.
    TableFull,
}

/// The key of an address's entry: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// All clients' entries.
#[derive(Debug)]
pub struct Limiter {
    entries: Mutex<(HashMap<IpAddr, Arc<IpEntry>>, Instant)>,
    rates: Arc<Live<RateLimits>>,
    per_ip: AtomicUsize,
    max_ips: usize,
    exempt: Live<Vec<IpNet>>,
}

/// A connection's hold on its address's entry: releases the slot when dropped, and
/// answers the per-address rate checks (always yes for an exempt address).
#[derive(Debug)]
pub struct IpSlot {
    /// `None` for an address in `exempt_networks`.
    entry: Option<Arc<IpEntry>>,
}

impl IpSlot {
    /// Takes a token for a command of class `class`; false = over the limit.
    pub fn allow(&self, class: Class) -> bool {
        self.entry.as_ref().is_none_or(|e| e.allow(class))
    }

    /// Whether this address may still fail mailbox authorisation.
    pub fn mbox_failures_left(&self) -> bool {
        self.entry.as_ref().is_none_or(|e| e.mbox_failures_left())
    }

    /// Spends one token for a refused mailbox request.
    pub fn charge_mbox_failure(&self) {
        if let Some(e) = &self.entry {
            e.charge_mbox_failure();
        }
    }

    /// Whether the address is exempt from per-address limits.
    pub fn is_exempt(&self) -> bool {
        self.entry.is_none()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(e) = &self.entry
            && let Ok(mut s) = e.state.lock()
        {
            s.connections = s.connections.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// A limiter with these rates, at most `per_ip` connections per address and at most
    /// `max_ips` addresses tracked; addresses in `exempt` are neither counted nor limited.
    pub fn new(rates: RateLimits, per_ip: usize, max_ips: usize, exempt: Vec<IpNet>) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), Instant::now())),
            rates: Arc::new(Live::new(rates)),
            per_ip: AtomicUsize::new(per_ip),
            max_ips: max_ips.max(1),
            exempt: Live::new(exempt),
        }
    }

    /// Applies reloaded limits (SIGHUP): every address's buckets use the new rates from
    /// its next command on (tokens already in a bucket are kept, capped by the new
    /// burst); the table size needs a restart.
    pub fn reload(&self, rates: RateLimits, per_ip: usize, exempt: Vec<IpNet>) {
        self.rates.store(rates);
        self.per_ip.store(per_ip, Relaxed);
        self.exempt.store(exempt);
    }

    /// How many addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.entries.lock().map(|g| g.0.len()).unwrap_or(0)
    }

    /// Registers a new connection from `ip`; refused when that address has too many or
    /// the table is full.
    pub fn connect(&self, ip: IpAddr) -> Result<IpSlot, Refused> {
        let canonical = ip.to_canonical();
        if self.exempt.load().iter().any(|n| n.contains(&canonical)) {
            return Ok(IpSlot { entry: None });
        }
        let ip = ip_key(ip);
        let now = Instant::now();
        let mut guard = self.entries.lock().map_err(|_| Refused::TableFull)?;
        let (map, last_sweep) = &mut *guard;
        let full = map.len() >= self.max_ips && !map.contains_key(&ip);
        let since = now.saturating_duration_since(*last_sweep);
        if since >= SWEEP_EVERY || (full && since >= SWEEP_WHEN_FULL) {
            *last_sweep = now;
            let r = &*self.rates.load();
            map.retain(|_, e| {
                let Ok(mut s) = e.state.lock() else {
                    return false;
                };
                let s = &mut *s;
                s.connections > 0
                    || !(s.all.is_full(r.commands_per_sec, r.commands_burst, now)
                        && s.login.is_full(r.login_per_sec, r.login_burst, now)
                        && s.key.is_full(r.keyrequest_per_sec, r.keyrequest_burst, now)
                        && s.mail.is_full(r.mail_per_sec, r.mail_burst, now)
                        && s.opaque.is_full(r.opaque_per_sec, r.opaque_burst, now)
                        && s.mbox_fail.is_full(
                            r.mbox_auth_failures_per_sec,
                            r.mbox_auth_failures_burst,
                            now,
                        ))
            });
        }
        if map.len() >= self.max_ips && !map.contains_key(&ip) {
            return Err(Refused::TableFull);
        }
        let entry = map
            .entry(ip)
            .or_insert_with(|| {
                let r = self.rates.load();
                Arc::new(IpEntry {
                    state: Mutex::new(IpState {
                        connections: 0,
                        all: Bucket::full(r.commands_burst, now),
                        login: Bucket::full(r.login_burst, now),
                        key: Bucket::full(r.keyrequest_burst, now),
                        mail: Bucket::full(r.mail_burst, now),
                        mbox_fail: Bucket::full(r.mbox_auth_failures_burst, now),
                        opaque: Bucket::full(r.opaque_burst, now),
                    }),
                    rates: self.rates.clone(),
                })
            })
            .clone();
        drop(guard);
        let mut s = entry.state.lock().map_err(|_| Refused::PerIp)?;
        if s.connections >= self.per_ip.load(Relaxed) {
            return Err(Refused::PerIp);
        }
        s.connections += 1;
        drop(s);
        Ok(IpSlot { entry: Some(entry) })
    }
}

/// Most mailboxes whose MAIL buckets are tracked at once; past it, buckets that are full
/// anyway are swept, and if none is, the oldest-refilled are dropped (which only ever
/// forgives a sender, it never refuses one).
const MAX_TRACKED_MAILBOXES: usize = 65_536;

/// Per-recipient-mailbox MAIL token buckets: a flood at one mailbox from many addresses
/// (or from an exempt network) is slowed where it lands, before it fills the quota.
#[derive(Debug)]
pub struct MailboxLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    rate: AtomicU32,
    burst: AtomicU32,
}

impl MailboxLimiter {
    /// `rate` messages per second per mailbox, bursts of `burst`; a rate of 0 disables it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            rate: AtomicU32::new(rate),
            burst: AtomicU32::new(burst),
        }
    }

    /// Applies a reloaded rate and burst (SIGHUP), from the next message on.
    pub fn reload(&self, rate: u32, burst: u32) {
        self.rate.store(rate, Relaxed);
        self.burst.store(burst, Relaxed);
    }

    /// Takes a token for one message to `mailbox`; false = over the limit.
    pub fn allow(&self, mailbox: &str) -> bool {
        let (rate, burst) = (self.rate.load(Relaxed), self.burst.load(Relaxed));
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        if map.len() >= MAX_TRACKED_MAILBOXES && !map.contains_key(mailbox) {
            map.retain(|_, b| !b.is_full(rate, burst, now));
            if map.len() >= MAX_TRACKED_MAILBOXES {
                map.clear();
            }
        }
        match map.get_mut(mailbox) {
            Some(b) => b.take(rate, burst, now),
            None => {
                let mut b = Bucket::full(burst, now);
                let ok = b.take(rate, burst, now);
                map.insert(mailbox.to_owned(), b);
                ok
            }
        }
    }
}

/// Most account names tracked by the [`AccountLimiter`]; beyond it, names whose
/// buckets are full are forgotten first (which loses nothing).
const MAX_TRACKED_ACCOUNTS: usize = 65_536;

/// Per-account-name buckets for the OPAQUE login (`opaque_account_per_min`): a guesser
/// spread over many addresses is slowed per account. Keyed by the folded name, whether
/// or not it is an account, so the limit does not reveal which names exist.
#[derive(Debug, Default)]
pub struct AccountLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl AccountLimiter {
    /// Takes a token for one login attempt at `account` (folded), `per_min` attempts a
    /// minute in bursts of `burst`; a rate of 0 disables it. false = over the limit.
    pub fn allow(&self, account: &str, per_min: u32, burst: u32) -> bool {
        if per_min == 0 {
            return true;
        }
        let rate = f64::from(per_min) / 60.0;
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        if map.len() >= MAX_TRACKED_ACCOUNTS && !map.contains_key(account) {
            map.retain(|_, b| {
                b.refill_per_sec(rate, burst, now);
                b.tokens < f64::from(burst.max(1))
            });
            if map.len() >= MAX_TRACKED_ACCOUNTS {
                // Every tracked name is being guessed at: the table cannot grow without
                // bound, so the oldest state is dropped (a guesser regains a burst).
                map.clear();
            }
        }
        let b = map
            .entry(account.to_owned())
            .or_insert_with(|| Bucket::full(burst, now));
        b.refill_per_sec(rate, burst, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_limiter_counts_per_name_from_every_address() {
        let l = AccountLimiter::default();
        for _ in 0..3 {
            assert!(l.allow("alice", 1, 3));
        }
        assert!(!l.allow("alice", 1, 3), "a fourth attempt within a minute");
        assert!(l.allow("bob", 1, 3), "another name has its own bucket");
        assert!(l.allow("alice", 0, 3), "rate 0 turns the limit off");
    }

    #[test]
    fn per_ip_connections_are_capped_and_released() {
        let l = Limiter::new(RateLimits::default(), 2, 100, vec![]);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.connect(ip).unwrap();
        let _b = l.connect(ip).unwrap();
        assert_eq!(l.connect(ip).unwrap_err(), Refused::PerIp);
        assert!(l.connect([127, 0, 0, 2].into()).is_ok());
        drop(a);
        assert!(l.connect(ip).is_ok());
    }

    #[test]
    fn ipv6_is_keyed_by_64_and_mapped_ipv4_by_ipv4() {
        let l = Limiter::new(RateLimits::default(), 2, 100, vec![]);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _x = l.connect(a).unwrap();
        let _y = l.connect(b).unwrap();
        assert_eq!(l.connect(a).unwrap_err(), Refused::PerIp);
        assert!(l.connect(other).is_ok());
        let v4: IpAddr = [192, 0, 2, 7].into();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _p = l.connect(v4).unwrap();
        let _q = l.connect(mapped).unwrap();
        assert_eq!(l.connect(v4).unwrap_err(), Refused::PerIp);
        assert_eq!(ip_key(mapped), v4);
        assert_eq!(l.tracked(), 3);
    }

    #[test]
    fn table_is_capped() {
        let l = Limiter::new(RateLimits::default(), 10, 2, vec![]);
        let _a = l.connect([10, 0, 0, 1].into()).unwrap();
        let _b = l.connect([10, 0, 0, 2].into()).unwrap();
        // Both entries hold a connection: nothing to sweep, the third address is refused.
        assert_eq!(
            l.connect([10, 0, 0, 3].into()).unwrap_err(),
            Refused::TableFull
        );
        // Known addresses still get in.
        assert!(l.connect([10, 0, 0, 1].into()).is_ok());
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn login_bucket_empties() {
        let rates = RateLimits {
            login_per_sec: 1,
            login_burst: 3,
            ..Default::default()
        };
        let l = Limiter::new(rates, 10, 100, vec![]);
        let s = l.connect([10, 0, 0, 1].into()).unwrap();
        let ok = (0..10).filter(|_| s.allow(Class::Login)).count();
        // 3 from the burst, at most one more refilled during the loop.
        assert!((3..=4).contains(&ok), "{ok}");
        assert!(s.allow(Class::Any));
    }

    #[test]
    fn exempt_networks_are_not_counted_or_limited() {
        let rates = RateLimits {
            login_per_sec: 1,
            login_burst: 1,
            ..Default::default()
        };
        let exempt = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let l = Limiter::new(rates, 1, 1, exempt);
        let slots: Vec<_> = (0..300)
            .map(|_| l.connect([127, 0, 0, 1].into()).unwrap())
            .collect();
        assert!(slots.iter().all(|s| s.is_exempt()));
        assert!((0..50).all(|_| slots[0].allow(Class::Login)));
        assert!(l.connect("::1".parse().unwrap()).unwrap().is_exempt());
        assert!(
            l.connect("::ffff:127.0.0.9".parse().unwrap())
                .unwrap()
                .is_exempt()
        );
        // Nothing tracked: the one-entry table is still free for a real address, which is
        // limited.
        assert_eq!(l.tracked(), 0);
        let a = l.connect([192, 0, 2, 1].into()).unwrap();
        assert!(!a.is_exempt());
        assert_eq!(
            l.connect([192, 0, 2, 1].into()).unwrap_err(),
            Refused::PerIp
        );
    }

    #[test]
    fn mailbox_buckets_are_per_mailbox() {
        let m = MailboxLimiter::new(1, 5);
        let ok = (0..20).filter(|_| m.allow("bob")).count();
        assert!((5..=6).contains(&ok), "{ok}");
        assert!(m.allow("carol"));
        let off = MailboxLimiter::new(0, 0);
        assert!((0..1000).all(|_| off.allow("bob")));
    }
}
