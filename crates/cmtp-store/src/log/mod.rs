//! The embedded mail store: an append-only segment log with group commit.
//!
//! One writer thread owns the active segment. Deliveries hand it complete records over a
//! channel; it takes everything pending, writes it into the page cache and hands the batch
//! to the syncer thread, then goes on with the next batch. The syncer does ONE
//! `fdatasync` (started after every batch it covers was written; never two at a time),
//! updates the in-memory index and only then completes the waiters (at low load, with
//! nothing queued and nothing in flight, the writer does this itself). A third thread keeps
//! the segment zero-filled ahead of the writer. Messages larger than the inline
//! threshold (or arriving while the store-wide inline budget is used up) stream to their
//! own blob file and are referenced by a small record.
//!
//! Message ids are assigned by the writer thread as it serialises records, so they ascend
//! in log (arrival) order; blob files are numbered by a separate counter and the BlobRef
//! record names its file.
//!
//! Modules, lowest first (a module imports only modules above it in this list):
//!
//! | module | what |
//! |---|---|
//! | `options` | [`Options`] |
//! | `relay_ids` | relay ids of recent commits, pruned outside their window |
//! | `index` | the in-memory index rebuilt from the log |
//! | `shared` | state shared by the handles and the threads; paths; fsync helpers |
//! | `scan` | reading records back: segment scan, zero-tail check |
//! | `budget` | the store-wide inline budget |
//! | `read_only` | the admin view: incremental rescans without the lock |
//! | `prealloc` | the zero-fill thread |
//! | `syncer` | the syncer thread: one fdatasync, index update, replies |
//! | `writer` | the writer thread: ids, batches, rotation |
//! | `inner` | the handle shared by the store and its deliveries |
//! | `recovery` | open as writer: recover, sweep, spawn |
//! | `delivery` | [`LogDelivery`]: inline buffering and blob spill |
//! | `reader` | [`MessageReader`] |
//! | `store` | [`LogMail`] and its [`crate::MailStore`] implementation |

mod budget;
mod delivery;
mod index;
mod inner;
mod options;
mod prealloc;
mod read_only;
mod reader;
mod recovery;
mod relay_ids;
mod scan;
mod shared;
mod store;
mod syncer;
mod writer;

#[cfg(test)]
mod tests;

pub use delivery::LogDelivery;
pub use options::Options;
pub use reader::MessageReader;
pub use store::LogMail;
