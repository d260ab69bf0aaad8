//! The relay ids of recently committed messages (deleted or not), so a relayed message
//! sent again is recognised: relay id → commit time, pruned oldest first once outside
//! the window.

use std::collections::{HashMap, VecDeque};

use super::options::DEFAULT_RELAY_ID_WINDOW;

/// Relay id → commit time (Unix s) of the messages committed within the window.
///
/// Memory: one map entry (16 + 8 bytes + hashing overhead) and one queue entry (24 bytes)
/// per relay id in the window, about 60–110 bytes each with the collections' spare
/// capacity; capacity stays at its peak.
#[derive(Debug)]
pub(super) struct RelayIds {
    /// Seconds a relay id is remembered after its message's commit.
    window: u64,
    seen: HashMap<[u8; 16], u64>,
    /// Insertion (log) order, for pruning the oldest first.
    order: VecDeque<(u64, [u8; 16])>,
}

impl Default for RelayIds {
    fn default() -> Self {
        Self::new(DEFAULT_RELAY_ID_WINDOW)
    }
}

impl RelayIds {
    pub(super) fn new(window: u64) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn expired(&self, at: u64, now: u64) -> bool {
        now.saturating_sub(at) > self.window
    }

    /// Records a message committed at `received`; prunes what that time puts outside the
    /// window (commit times follow log order, so this keeps memory to the window's
    /// entries, during recovery too).
    pub(super) fn insert(&mut self, id: [u8; 16], received: u64) {
        self.prune(received);
        let at = self.seen.entry(id).or_insert(received);
        *at = (*at).max(received);
        self.order.push_back((received, id));
    }

    /// Whether `id` was committed within the window before `now`.
    pub(super) fn contains(&self, id: &[u8; 16], now: u64) -> bool {
        self.seen.get(id).is_some_and(|&at| !self.expired(at, now))
    }

    /// Forgets the entries outside the window at `now`, oldest first: amortised O(1) per
    /// entry. An id committed again later keeps its newer time.
    pub(super) fn prune(&mut self, now: u64) {
        while let Some(&(at, id)) = self.order.front() {
            // Commit times are not strictly ordered if the clock stepped back: the
            // front may be younger than a later entry, which then waits its turn.
            if !self.expired(at, now) {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&id).is_some_and(|&t| t == at) {
                self.seen.remove(&id);
            }
        }
    }

    /// The relay ids within the window at `now`, with their commit times.
    pub(super) fn entries(&self, now: u64) -> Vec<([u8; 16], u64)> {
        self.seen
            .iter()
            .filter(|&(_, &at)| !self.expired(at, now))
            .map(|(&id, &at)| (id, at))
            .collect()
    }

    /// Relay ids remembered right now (expired ones not yet pruned included).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_within_the_window_then_pruned() {
        let mut r = RelayIds::new(100);
        r.insert([1; 16], 1000);
        r.insert([2; 16], 1050);
        assert!(r.contains(&[1; 16], 1000));
        assert!(r.contains(&[1; 16], 1100), "the window's last second");
        assert!(!r.contains(&[1; 16], 1101));
        assert!(r.contains(&[2; 16], 1101));
        assert!(!r.contains(&[3; 16], 1000));
        // Pruned lazily: an insert at a later time drops the expired ones.
        assert_eq!(r.len(), 2);
        r.insert([3; 16], 1101);
        assert_eq!(r.len(), 2);
        assert!(!r.contains(&[1; 16], 1101));
        r.prune(10_000);
        assert_eq!((r.len(), r.order.len()), (0, 0));
    }

    /// An id committed again keeps its newer time: pruning the older entry does not
    /// forget it.
    #[test]
    fn a_repeated_id_keeps_its_newest_time() {
        let mut r = RelayIds::new(100);
        r.insert([1; 16], 1000);
        r.insert([1; 16], 1090);
        r.prune(1150);
        assert!(r.contains(&[1; 16], 1150));
        assert_eq!(r.len(), 1);
        r.prune(1191);
        assert_eq!(r.len(), 0);
    }

    /// Memory stays at the window's entries however many pass through.
    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut r = RelayIds::new(10);
        for t in 0..100_000u64 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&t.to_le_bytes());
            r.insert(id, 1_000_000 + t / 10);
        }
        // Ten per second, an 11-second window (the current second included).
        assert!(r.len() <= 110 && r.order.len() <= 110, "{}", r.len());
    }
}
