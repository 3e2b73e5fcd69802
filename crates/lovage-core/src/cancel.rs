//! Cooperative cancellation: a running task asks whether it should stop.
//!
//! The worker cancels a task's token when the task is revoked while running or passes its soft
//! time limit. Task code calls [`check_cancelled`] (or [`is_cancelled`]) at convenient points
//! and returns early. In a process pool's child the parent's request arrives as a signal, so
//! the same calls work there.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{kinds, TaskError};

/// Why a task was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// It was revoked while running.
    Revoked,
    /// It ran past its soft time limit.
    SoftTimeLimit,
}

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            CancelReason::Revoked => 1,
            CancelReason::SoftTimeLimit => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(CancelReason::Revoked),
            2 => Some(CancelReason::SoftTimeLimit),
            _ => None,
        }
    }

    /// The error a task returns when it stops for this reason.
    pub fn error(self) -> TaskError {
        match self {
            CancelReason::Revoked => TaskError::new(kinds::REVOKED, "revoked while it ran"),
            CancelReason::SoftTimeLimit => TaskError::new(
                kinds::SOFT_TIME_LIMIT_EXCEEDED,
                "ran past its soft time limit",
            ),
        }
    }
}

/// A flag shared by whoever may cancel a task and the task itself.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicU8>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the task to stop (the first reason wins).
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self
            .0
            .compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Why it was cancelled, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_code(self.0.load(Ordering::SeqCst))
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

/// Set by a process pool child's signal handler; reset before each task.
static PROCESS_CANCEL: AtomicU8 = AtomicU8::new(0);

/// Runs `f` with `token` as this thread's current token.
pub fn with_token<R>(token: &CancelToken, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<CancelToken>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let prev = CURRENT.with(|c| c.borrow_mut().replace(token.clone()));
    let _restore = Restore(prev);
    f()
}

/// Why the running task should stop, if it should.
pub fn cancel_reason() -> Option<CancelReason> {
    CURRENT
        .with(|c| c.borrow().as_ref().and_then(CancelToken::reason))
        .or_else(|| CancelReason::from_code(PROCESS_CANCEL.load(Ordering::SeqCst)))
}

/// True when the running task has been asked to stop.
pub fn is_cancelled() -> bool {
    cancel_reason().is_some()
}

/// `Err` with the reason's error when the running task has been asked to stop: use it with `?`.
pub fn check_cancelled() -> Result<(), TaskError> {
    match cancel_reason() {
        Some(r) => Err(r.error()),
        None => Ok(()),
    }
}

/// For process pool children: marks this process's current task as cancelled. Async-signal
/// safe (one atomic store).
#[doc(hidden)]
pub fn cancel_process_task(reason: CancelReason) {
    PROCESS_CANCEL.store(reason.code(), Ordering::SeqCst);
}

/// For process pool children: clears the mark before the next task.
#[doc(hidden)]
pub fn reset_process_task() {
    PROCESS_CANCEL.store(0, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scoped_to_the_task() {
        assert!(!is_cancelled());
        let t = CancelToken::new();
        with_token(&t, || {
            assert!(check_cancelled().is_ok());
            t.cancel(CancelReason::SoftTimeLimit);
            t.cancel(CancelReason::Revoked);
            assert_eq!(
                check_cancelled().unwrap_err().kind,
                kinds::SOFT_TIME_LIMIT_EXCEEDED
            );
        });
        assert!(!is_cancelled(), "restored after the task");
    }
}
