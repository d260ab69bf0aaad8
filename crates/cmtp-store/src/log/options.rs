//! Tuning of the embedded mail log.

/// Largest inline threshold accepted (records must stay below `record::MAX_PAYLOAD`).
pub(super) const MAX_INLINE: usize = 64 * 1024 * 1024;

/// Default of [`Options::relay_id_window_secs`]: a week.
pub(super) const DEFAULT_RELAY_ID_WINDOW: u64 = 7 * 86400;

/// Tuning of the embedded mail log.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages up to this size are stored inline in the log; larger ones in their own
    /// blob file. Capped at 64 MiB. Default 1 MiB.
    pub inline_threshold: usize,
    /// A new segment is started once the active one would exceed this size. Default 256 MiB.
    pub segment_size: u64,
    /// Most bytes one group commit takes from the queue (the rest go in the next one).
    /// Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Most bytes all deliveries together may buffer in memory (inline messages being
    /// received or waiting for their group commit). A delivery that cannot reserve more
    /// spills to its blob file instead, whatever its size. Default 256 MiB.
    pub inline_budget: u64,
    /// Seconds the store remembers the relay id of a committed message (deleted or
    /// not), for [`crate::MailStore::seen_relay_id`]: a message is seen while
    /// `now - received <= relay_id_window_secs`. Costs about 60–110 bytes of memory per
    /// relay id in the window. Default 7 days.
    pub relay_id_window_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            inline_threshold: 1 << 20,
            segment_size: 256 << 20,
            max_batch_bytes: 16 << 20,
            inline_budget: 256 << 20,
            relay_id_window_secs: DEFAULT_RELAY_ID_WINDOW,
        }
    }
}
