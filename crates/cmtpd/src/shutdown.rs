//! Graceful shutdown as seen by each task: a watch channel turned true once (mini-redis'
//! `Shutdown` habit), so the accept loops, connections and the HTTP side stop at their
//! next safe point.

use tokio::sync::watch;

/// The sending side, held by the server's run loop.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// One task's view of the shutdown signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl ShutdownTrigger {
    /// A trigger that has not fired, with nobody listening yet.
    pub fn new() -> Self {
        Self {
            tx: watch::channel(false).0,
        }
    }

    /// A listener for one task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }

    /// Tells every listener to stop.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Whether shutdown has begun (checked between commands).
    pub fn is_stopping(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown begins (or the trigger is gone). Cancel-safe, for `select!`.
    pub async fn stopped(&mut self) {
        // `wait_for`'s guard is not `Send`: drop it here rather than across an await.
        let _ = self.rx.wait_for(|s| *s).await.map(|_| ());
    }
}
