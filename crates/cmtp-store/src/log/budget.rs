//! The store-wide inline budget: bytes all deliveries together may buffer in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::shared::Shared;

/// Bytes of the store-wide inline budget held by one delivery; given back on drop.
pub(super) struct Budget {
    pub(super) shared: Arc<Shared>,
    pub(super) bytes: u64,
}

impl Budget {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, bytes: 0 }
    }

    /// Reserves `more` bytes if the budget allows.
    pub(super) fn try_grow(&mut self, more: u64) -> bool {
        let limit = self.shared.inline_budget;
        let ok = self
            .shared
            .inline_used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&n| n <= limit)
            })
            .is_ok();
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Moves the reservation out (to travel with the data it covers).
    pub(super) fn take(&mut self) -> Budget {
        Budget {
            shared: self.shared.clone(),
            bytes: std::mem::take(&mut self.bytes),
        }
    }

    pub(super) fn release(&mut self) {
        if self.bytes > 0 {
            self.shared
                .inline_used
                .fetch_sub(std::mem::take(&mut self.bytes), Ordering::AcqRel);
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.release();
    }
}
