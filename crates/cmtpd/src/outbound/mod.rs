//! The outbound side of federation: the relay queue's scheduler and its delivery
//! workers (docs/federation.md, "The queue").
//!
//! Queued messages live in the store (mailbox `cmtp_store::RELAY_QUEUE`), each with its
//! delivery state as its note; this module keeps only an index of them in memory,
//! rebuilt from the store at start. A message leaves the queue only once the remote
//! server's signed SUCCESS has been verified (then it is deleted), or once it is given
//! up (then its sender gets a notice). The state is saved after every attempt.

pub mod bounce;
pub mod control;
mod worker;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::relay::{QueueInbox, QueueNote, Queued};
use crate::shared::{Backend, Shared};
use crate::shutdown::Shutdown;

/// One queued message as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Delivery state (as saved in the store).
    pub note: QueueNote,
    /// Sender account.
    pub src_account: String,
    /// Sender domain.
    pub src_domain: String,
}

/// The in-memory index of the queue.
#[derive(Default)]
pub(crate) struct State {
    items: HashMap<u64, Item>,
    /// Waiting for their next attempt: (time, id).
    waiting: BTreeSet<(u64, u64)>,
    /// Due now, per domain, in order.
    ready: HashMap<String, VecDeque<u64>>,
    /// Open workers per domain.
    active: HashMap<String, usize>,
    /// Open workers in total.
    total_active: usize,
}

impl State {
    /// Indexes a message; one the index has already is left as it is (the same message
    /// can arrive both from a scan of the store and from this node's own hand-off).
    fn insert(&mut self, id: u64, item: Item, now: u64) {
        if self.items.contains_key(&id) {
            return;
        }
        if item.note.next <= now {
            self.ready
                .entry(item.note.to_domain.clone())
                .or_default()
                .push_back(id);
        } else {
            self.waiting.insert((item.note.next, id));
        }
        self.items.insert(id, item);
    }

    /// Moves what is due from `waiting` to `ready`.
    fn promote(&mut self, now: u64) {
        while let Some(&(t, id)) = self.waiting.first() {
            if t > now {
                return;
            }
            self.waiting.pop_first();
            if let Some(item) = self.items.get(&id) {
                self.ready
                    .entry(item.note.to_domain.clone())
                    .or_default()
                    .push_back(id);
            }
        }
    }

    /// Up to `n` due messages for `domain`.
    pub(crate) fn take(&mut self, domain: &str, n: usize) -> Vec<(u64, Item)> {
        let Some(q) = self.ready.get_mut(domain) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n.min(q.len()));
        while out.len() < n {
            let Some(id) = q.pop_front() else { break };
            if let Some(item) = self.items.get(&id) {
                out.push((id, item.clone()));
            }
        }
        if q.is_empty() {
            self.ready.remove(domain);
        }
        out
    }

    /// Every due message for `domain` (the domain is down: all of them wait).
    pub(crate) fn take_all(&mut self, domain: &str) -> Vec<(u64, Item)> {
        self.take(domain, usize::MAX)
    }

    /// The message has left the queue.
    pub(crate) fn remove(&mut self, id: u64) {
        self.items.remove(&id);
    }

    /// The message waits for its next attempt (its note updated).
    pub(crate) fn reschedule(&mut self, id: u64, note: QueueNote) {
        if let Some(item) = self.items.get_mut(&id) {
            self.waiting.insert((note.next, id));
            item.note = note;
        }
    }

    /// Makes waiting messages due now (`cmtpd queue retry`); `None` = all.
    pub(crate) fn retry_now(&mut self, id: Option<u64>) -> usize {
        let picked: Vec<(u64, u64)> = self
            .waiting
            .iter()
            .filter(|(_, i)| id.is_none_or(|x| x == *i))
            .copied()
            .collect();
        for w in &picked {
            self.waiting.remove(w);
            if let Some(item) = self.items.get_mut(&w.1) {
                item.note.next = 0;
                self.ready
                    .entry(item.note.to_domain.clone())
                    .or_default()
                    .push_back(w.1);
            }
        }
        picked.len()
    }

    fn oldest(&self) -> u64 {
        self.items
            .values()
            .map(|i| i.note.queued)
            .min()
            .unwrap_or(0)
    }
}

/// What workers share with the scheduler.
pub(crate) struct Queue {
    pub(crate) state: Mutex<State>,
    /// Wakes the scheduler (a worker ended, a retry was asked).
    pub(crate) wake: Notify,
    /// This node's name in the queue's leases ([`cmtp_store::MailStore::claim`]).
    pub(crate) node: String,
}

/// Messages read per listing of the queue.
const SCAN_BATCH: usize = 1000;

/// Adds the queue's messages with an id above `after` to the index (all of them at
/// start; later, those other nodes queued meanwhile: ids ascend in commit order, so
/// newer messages always have larger ids); returns the highest id seen. Messages the
/// index has already (queued by this node) are left as they are.
async fn scan<S: Backend>(sh: &Shared<S>, state: &Mutex<State>, mut after: u64) -> u64 {
    let mut n = 0usize;
    loop {
        let batch = match sh
            .store
            .list_range(cmtp_store::RELAY_QUEUE, after, SCAN_BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the relay queue");
                return after;
            }
        };
        let Some(last) = batch.last() else { break };
        after = last.id;
        let full = batch.len() == SCAN_BATCH;
        let now = crate::unix_now();
        let mut st = state.lock();
        for info in batch {
            if st.items.contains_key(&info.id) {
                continue;
            }
            let Some(note) = QueueNote::decode(&info.meta.note) else {
                tracing::error!(
                    id = info.id,
                    "queued message without a readable note: left alone"
                );
                continue;
            };
            st.insert(
                info.id,
                Item {
                    note,
                    src_account: info.meta.src_account,
                    src_domain: info.meta.src_domain,
                },
                now,
            );
            n += 1;
        }
        if !full {
            break;
        }
    }
    if n > 0 {
        tracing::info!(messages = n, "relay queue: messages loaded from the store");
    }
    after
}

/// This node's name in the leases of the shared queue: host, process and start time,
/// so that a restarted node does not mistake its dead predecessor's leases for its own.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "cmtpd".to_owned()
    } else {
        host
    };
    format!("{host}:{}:{}", std::process::id(), crate::unix_now())
}

/// Runs the scheduler until shutdown: takes newly queued messages, wakes waiting ones
/// when due, and starts workers within the connection limits.
pub async fn run<S: Backend>(sh: Arc<Shared<S>>, mut inbox: QueueInbox, mut stop: Shutdown) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        node: node_name(),
    });
    let mut scanned = scan(&sh, &queue.state, 0).await;
    let rescan_every = Duration::from_secs(sh.relay.config.load().queue_rescan_secs);
    let mut rescan_at = tokio::time::Instant::now() + rescan_every;
    let data_dir = sh.config.load().data_dir.clone();
    if let Some((listener, path)) = control::bind(&data_dir) {
        tokio::spawn(control::serve(
            sh.clone(),
            queue.clone(),
            listener,
            path,
            stop.clone(),
        ));
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            // Waiting messages are promoted at least every tick (retry delays are whole
            // seconds).
            let mut st = queue.state.lock();
            st.promote(crate::unix_now());
            spawn_workers(&sh, &queue, &mut st);
        }
        tokio::select! {
            _ = stop.stopped() => break,
            q = inbox.recv() => {
                let Some(q) = q else { break };
                let mut st = queue.state.lock();
                let now = crate::unix_now();
                add(&mut st, q, now);
                // Take whatever else arrived meanwhile under the same lock.
                while let Ok(q) = inbox.try_recv() {
                    add(&mut st, q, now);
                }
            }
            _ = queue.wake.notified() => {}
            _ = tick.tick() => {
                if tokio::time::Instant::now() >= rescan_at {
                    scanned = scan(&sh, &queue.state, scanned).await;
                    let every = sh.relay.config.load().queue_rescan_secs;
                    rescan_at = tokio::time::Instant::now() + Duration::from_secs(every);
                }
                let st = queue.state.lock();
                sh.relay.metrics.oldest.store(st.oldest(), Relaxed);
                sh.relay.metrics.depth.store(st.items.len() as u64, Relaxed);
            }
        }
    }
}

fn add(st: &mut State, q: Queued, now: u64) {
    st.insert(
        q.id,
        Item {
            note: q.note,
            src_account: q.src_account,
            src_domain: q.src_domain,
        },
        now,
    );
}

/// Starts a worker for each domain with due messages, within the limits.
fn spawn_workers<S: Backend>(sh: &Arc<Shared<S>>, queue: &Arc<Queue>, st: &mut State) {
    let cfg = sh.relay.config.load();
    sh.relay.metrics.depth.store(st.items.len() as u64, Relaxed);
    let domains: Vec<(String, usize)> =
        st.ready.iter().map(|(d, q)| (d.clone(), q.len())).collect();
    for (domain, due) in domains {
        loop {
            let active = st.active.get(&domain).copied().unwrap_or(0);
            // One worker per `pipeline` due messages, up to the per-domain limit.
            let wanted = due
                .div_ceil(cfg.pipeline)
                .min(cfg.max_connections_per_domain);
            if active >= wanted.max(1) || st.total_active >= cfg.max_connections {
                break;
            }
            *st.active.entry(domain.clone()).or_default() += 1;
            st.total_active += 1;
            tokio::spawn(worker::run(sh.clone(), queue.clone(), domain.clone()));
        }
    }
}

impl Queue {
    /// A worker for `domain` ended.
    pub(crate) fn worker_done(&self, domain: &str) {
        let mut st = self.state.lock();
        if let Some(n) = st.active.get_mut(domain) {
            *n -= 1;
            if *n == 0 {
                st.active.remove(domain);
            }
        }
        st.total_active -= 1;
        drop(st);
        self.wake.notify_one();
    }
}
