//! Idle function instances give their memory back, and get it back when a
//! request comes (`mitosis daemon --offload-idle-after SECS`): an instance that has answered everything asked of it and then waited that
//! long is offloaded ([`crate::offload`]: its written pages to the memory
//! node, the rest dropped, to come back from its seed); the next request
//! starts a prefetch of everything offloaded before the runtime reads it
//! (prefetch on reuse), so the handler's touches mostly find their pages
//! there or on their way.
//!
//! A cold-started instance is offloaded the same way: its first offload
//! adopts its memory ([`crate::offload`]), and since no seed holds any of
//! it, every page it holds goes to the node. One that prepares a seed is
//! never offloaded.
//!
//! This is FaaSMem's semi-warm state in its simplest form: the whole
//! instance at once after a fixed delay, not drained gradually, and with no
//! packets (every page is treated alike).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Daemon;

/// One instance's idle clock.
pub struct IdleOffload {
    after: Duration,
    pid: i32,
    /// A request is in the runtime's hands.
    busy: AtomicBool,
    /// When it last answered (or started).
    last_answer: Mutex<Instant>,
    /// Offloaded since its last request (or being offloaded).
    offloaded: AtomicBool,
}

impl IdleOffload {
    pub fn new(after: Duration, pid: i32) -> IdleOffload {
        IdleOffload { after, pid, busy: AtomicBool::new(false), last_answer: Mutex::new(Instant::now()), offloaded: AtomicBool::new(false) }
    }

    /// A request came for the instance: if it was offloaded, its memory
    /// starts coming back now.
    pub fn on_request(&self, daemon: &Daemon) {
        self.busy.store(true, Ordering::SeqCst);
        if !self.offloaded.swap(false, Ordering::SeqCst) {
            return;
        }
        let Some(child) = daemon.children.find(&self.pid.to_string()) else { return };
        match crate::offload::prefetch(&child) {
            Ok((node, seed)) => tracing::debug!(pid = self.pid, from_node = node, from_seed = seed, "instance reused: prefetching its memory"),
            Err(e) => tracing::warn!(pid = self.pid, error = %e.message, "instance reused: no prefetch"),
        }
    }

    /// The instance answered its request.
    pub fn on_answer(&self) {
        *self.last_answer.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.busy.store(false, Ordering::SeqCst);
    }

    /// How long until the instance is due to be offloaded; `None` while it
    /// is busy or already offloaded.
    pub fn due_in(&self) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) || self.offloaded.load(Ordering::SeqCst) {
            return None;
        }
        let idle = self.last_answer.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        Some(self.after.saturating_sub(idle))
    }

    /// Offloads the instance if it is due.
    pub fn offload_if_due(&self, daemon: &Daemon) {
        if self.due_in() != Some(Duration::ZERO) {
            return;
        }
        // Marked first: a request that comes during the offload waits for
        // it and then starts the prefetch.
        self.offloaded.store(true, Ordering::SeqCst);
        let Some(child) = daemon.children.find(&self.pid.to_string()) else { return };
        match crate::offload::offload(daemon, &child) {
            Ok(r) => tracing::info!(pid = self.pid, pages_put = r.pages_put, rss_after = r.rss_after_bytes, "idle instance offloaded"),
            Err(e) => tracing::warn!(pid = self.pid, error = %e.message, "idle instance not offloaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_due_once_idle_and_not_while_busy() {
        let idle = IdleOffload::new(Duration::from_millis(50), 1);
        assert!(idle.due_in().unwrap() > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(idle.due_in(), Some(Duration::ZERO));
        idle.busy.store(true, Ordering::SeqCst);
        assert_eq!(idle.due_in(), None, "not while a request is in");
        idle.on_answer();
        assert!(idle.due_in().unwrap() > Duration::ZERO, "the clock starts again at the answer");
        idle.offloaded.store(true, Ordering::SeqCst);
        assert_eq!(idle.due_in(), None, "not twice");
    }
}
