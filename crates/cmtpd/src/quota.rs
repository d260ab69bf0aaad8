//! Mailbox quotas that hold under concurrency.
//!
//! The store's usage figures count only committed messages, so a check against them alone
//! lets every delivery in flight pass at once (100,007 messages were stored against a
//! 100,000 quota). Each admitted delivery therefore holds a reservation, counted with the
//! committed usage under one lock, until its commit has resolved (the store updates its
//! usage before it resolves a commit) or it is dropped: a mailbox can never exceed its
//! message quota, and exceeds its byte quota by at most the unannounced attachment bytes of
//! the messages in flight.
//!
//! The reservations are this process's: on a database several nodes share, another
//! node's deliveries in flight are invisible here, so the commit checks the quota again
//! in the store ([`QuotaHold::limit`] to `Delivery::commit_within`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// A mailbox's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most messages.
    pub messages: u64,
    /// Most stored bytes.
    pub bytes: u64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The mailbox is full (committed plus in-flight messages).
    #[error("mailbox over quota: {messages} messages, {bytes} bytes (with deliveries in flight)")]
    Full {
        /// Messages counted.
        messages: u64,
        /// Bytes counted.
        bytes: u64,
    },
    /// The store could not say how full the mailbox is: refuse (fail closed).
    #[error("mailbox usage unknown: {0}")]
    Unknown(String),
}

#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    messages: u64,
    bytes: u64,
}

/// Reservations of deliveries in flight, per mailbox.
#[derive(Debug, Default, Clone)]
pub struct QuotaGate {
    inflight: Arc<Mutex<HashMap<String, InFlight>>>,
}

/// One admitted delivery's reservation; released when dropped (after the commit resolved,
/// or on abort).
#[derive(Debug)]
pub struct QuotaHold {
    gate: QuotaGate,
    mailbox: String,
    bytes: u64,
    quota: Quota,
}

impl QuotaGate {
    /// Admits one message of (at least) `bytes` bytes to `mailbox` if committed usage (from
    /// `usage`, called under the gate's lock) plus reservations stay under `quota`.
    pub fn reserve<E: std::fmt::Display>(
        &self,
        mailbox: &str,
        bytes: u64,
        quota: Quota,
        usage: impl FnOnce() -> Result<(u64, u64), E>,
    ) -> Result<QuotaHold, QuotaError> {
        let mut map = self.inflight.lock();
        let (stored, stored_bytes) = usage().map_err(|e| QuotaError::Unknown(e.to_string()))?;
        let f = map.get(mailbox).copied().unwrap_or_default();
        let messages = stored.saturating_add(f.messages);
        let total = stored_bytes.saturating_add(f.bytes);
        if messages >= quota.messages || total >= quota.bytes {
            return Err(QuotaError::Full {
                messages,
                bytes: total,
            });
        }
        let e = map.entry(mailbox.to_owned()).or_default();
        e.messages += 1;
        e.bytes = e.bytes.saturating_add(bytes);
        Ok(QuotaHold {
            gate: self.clone(),
            mailbox: mailbox.to_owned(),
            bytes,
            quota,
        })
    }

    /// Deliveries in flight for `mailbox` (for tests and metrics).
    pub fn in_flight(&self, mailbox: &str) -> u64 {
        self.inflight.lock().get(mailbox).map_or(0, |f| f.messages)
    }
}

impl QuotaHold {
    /// The quota this delivery was admitted under, for the store to check again at its
    /// commit: this gate sees only this process's deliveries in flight, not another
    /// node's on a shared database.
    pub fn limit(&self) -> cmtp_store::MailboxLimit {
        cmtp_store::MailboxLimit {
            messages: self.quota.messages,
            bytes: self.quota.bytes,
        }
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        let mut map = self.gate.inflight.lock();
        if let Some(f) = map.get_mut(&self.mailbox) {
            f.messages = f.messages.saturating_sub(1);
            f.bytes = f.bytes.saturating_sub(self.bytes);
            if f.messages == 0 {
                map.remove(&self.mailbox);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        messages: 3,
        bytes: 1000,
    };

    fn ok(m: u64, b: u64) -> impl FnOnce() -> Result<(u64, u64), String> {
        move || Ok((m, b))
    }

    #[test]
    fn reservations_count_against_the_quota_until_dropped() {
        let g = QuotaGate::default();
        let a = g.reserve("bob", 10, Q, ok(1, 0)).unwrap();
        let b = g.reserve("bob", 10, Q, ok(1, 0)).unwrap();
        // 1 stored + 2 in flight = 3: full.
        assert!(matches!(
            g.reserve("bob", 10, Q, ok(1, 0)),
            Err(QuotaError::Full { messages: 3, .. })
        ));
        // Other mailboxes are not affected.
        assert!(g.reserve("carol", 10, Q, ok(0, 0)).is_ok());
        drop(a);
        assert_eq!(g.in_flight("bob"), 1);
        assert!(g.reserve("bob", 10, Q, ok(1, 0)).is_ok());
        drop(b);
    }

    #[test]
    fn bytes_count_and_unknown_usage_fails_closed() {
        let g = QuotaGate::default();
        let _a = g.reserve("bob", 600, Q, ok(0, 500)).unwrap();
        // 500 stored + 600 reserved: over 1000 bytes.
        assert_eq!(
            g.reserve("bob", 1, Q, ok(0, 500)).unwrap_err(),
            QuotaError::Full {
                messages: 1,
                bytes: 1100
            }
        );
        assert!(matches!(
            g.reserve("bob", 1, Q, || Err::<(u64, u64), _>("disk on fire")),
            Err(QuotaError::Unknown(_))
        ));
    }
}
