//! The delivery state of one queued message, kept in the store as the message's note
//! (`MessageMeta::note`) and rewritten after every attempt, so a restart resumes the
//! schedule where it was.

use serde::{Deserialize, Serialize};

/// Most bytes of a remote answer or error kept in the note.
const MAX_ERROR: usize = 512;

/// State of a queued message (one recipient: one envelope has one recipient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNote {
    /// Layout version of this note.
    pub v: u32,
    /// Recipient account.
    pub to_account: String,
    /// Recipient domain (lower-case).
    pub to_domain: String,
    /// When it was queued, Unix seconds.
    pub queued: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Earliest time of the next attempt, Unix seconds (0 = now).
    pub next: u64,
    /// What the last attempt ran into ("" before the first).
    pub last_error: String,
    /// A delivery-failure notice itself: never bounced when it fails.
    pub bounce: bool,
}

impl QueueNote {
    /// A fresh note for a message queued now.
    pub fn new(to_account: &str, to_domain: &str, now: u64, bounce: bool) -> Self {
        QueueNote {
            v: 1,
            to_account: to_account.to_owned(),
            to_domain: to_domain.to_ascii_lowercase(),
            queued: now,
            attempts: 0,
            next: now,
            last_error: String::new(),
            bounce,
        }
    }

    /// The recipient as `account@domain`.
    pub fn recipient(&self) -> String {
        format!("{}@{}", self.to_account, self.to_domain)
    }

    /// Records a failed attempt at `now` and schedules the next one from `retry_secs`;
    /// `false` when the message is older than `max_age` (it must be bounced).
    pub fn failed(&mut self, now: u64, error: &str, retry_secs: &[u64], max_age: u64) -> bool {
        self.attempts = self.attempts.saturating_add(1);
        self.last_error = truncate(error, MAX_ERROR);
        let i = (self.attempts as usize - 1).min(retry_secs.len().saturating_sub(1));
        let delay = retry_secs.get(i).copied().unwrap_or(3600);
        self.next = now.saturating_add(delay);
        now.saturating_sub(self.queued) < max_age
    }

    /// The note's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a note; `None` if it is not one of ours.
    pub fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_follows_the_delays_then_repeats_the_last() {
        let mut n = QueueNote::new("bob", "B.Test", 1000, false);
        assert_eq!(n.to_domain, "b.test");
        assert!(n.failed(1000, "refused", &[60, 300], 10_000));
        assert_eq!((n.attempts, n.next), (1, 1060));
        assert!(n.failed(1060, "refused", &[60, 300], 10_000));
        assert_eq!(n.next, 1360);
        assert!(n.failed(1360, "refused", &[60, 300], 10_000));
        assert_eq!(n.next, 1660);
        assert!(!n.failed(11_000, "refused", &[60, 300], 10_000), "expired");
        assert_eq!(QueueNote::decode(&n.encode()), Some(n));
    }

    #[test]
    fn long_errors_are_cut_at_a_character() {
        let e = "é".repeat(400);
        let mut n = QueueNote::new("bob", "b.test", 0, false);
        n.failed(1, &e, &[1], 10);
        assert!(n.last_error.len() <= MAX_ERROR);
        assert!(n.encode().len() < 1024);
        assert_eq!(QueueNote::decode(b"garbage"), None);
    }
}
