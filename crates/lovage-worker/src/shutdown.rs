//! Stopping a worker: the first request is graceful (stop reserving, finish what runs), the
//! second immediate (hand what runs back to the queue and return).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Where a worker is on its way out. Ordered: a later mode implies the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownMode {
    /// No stop asked for.
    Running,
    /// Stop reserving; let running tasks finish; hand back tasks waiting for a rate-limit slot.
    Graceful,
    /// Hand every running task back to the queue and return at once.
    Immediate,
}

impl ShutdownMode {
    fn from_u8(v: u8) -> ShutdownMode {
        match v {
            0 => ShutdownMode::Running,
            1 => ShutdownMode::Graceful,
            _ => ShutdownMode::Immediate,
        }
    }
}

/// Asks a running worker to stop; cheap to clone, safe to use from any thread.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicU8>);

impl Shutdown {
    /// Stop reserving, finish running tasks, then return.
    pub fn graceful(&self) {
        self.raise_to(ShutdownMode::Graceful);
    }

    /// Return running tasks to the queue and return at once.
    pub fn immediate(&self) {
        self.raise_to(ShutdownMode::Immediate);
    }

    /// One more request (a signal): graceful the first time, immediate after.
    pub fn request(&self) {
        let next = match self.mode() {
            ShutdownMode::Running => ShutdownMode::Graceful,
            _ => ShutdownMode::Immediate,
        };
        self.raise_to(next);
    }

    /// Where the worker is on its way out.
    pub fn mode(&self) -> ShutdownMode {
        ShutdownMode::from_u8(self.0.load(Ordering::SeqCst))
    }

    /// A stop of either kind was asked for.
    pub fn requested(&self) -> bool {
        self.mode() != ShutdownMode::Running
    }

    /// An immediate stop was asked for.
    pub fn immediate_requested(&self) -> bool {
        self.mode() == ShutdownMode::Immediate
    }

    /// Modes only rise: a graceful request after an immediate one changes nothing.
    fn raise_to(&self, mode: ShutdownMode) {
        self.0.fetch_max(mode as u8, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_escalate_and_never_go_back() {
        let s = Shutdown::default();
        assert_eq!(s.mode(), ShutdownMode::Running);
        s.request();
        assert_eq!(s.mode(), ShutdownMode::Graceful);
        s.graceful();
        assert_eq!(s.mode(), ShutdownMode::Graceful);
        s.request();
        assert_eq!(s.mode(), ShutdownMode::Immediate);
        s.graceful();
        s.request();
        assert_eq!(s.mode(), ShutdownMode::Immediate);
        assert!(s.requested() && s.immediate_requested());
    }

    #[test]
    fn an_immediate_stop_needs_no_graceful_one_first() {
        let s = Shutdown::default();
        s.immediate();
        assert!(s.immediate_requested());
    }
}
