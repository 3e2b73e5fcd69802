//! Cooperative cancellation: a running task asks whether it should stop.
//!
//! The worker cancels a task's token when the task is revoked while running or passes its soft
//! time limit. Task code calls [`check_cancelled`] (or [`is_cancelled`]) at convenient points
//! and returns early. In a process pool's child the parent's request arrives as a signal, so
//! the same calls work there.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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

/// In a process pool's child: the parent's number for the task running now (0: none).
static PROCESS_TASK: AtomicU64 = AtomicU64::new(0);
/// In a process pool's child: the number of the task the parent last signalled past its soft
/// time limit. Kept per task rather than as one flag cleared before each task, so a signal that
/// arrives before its task begins is not lost, and one that arrives late for a finished task
/// does not stop the next.
static PROCESS_SOFT_LIMITED: AtomicU64 = AtomicU64::new(0);

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
        .or_else(process_cancel_reason)
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

/// In a process pool's child, why its current task should stop: the parent signalled this
/// task (by its number) past its soft time limit.
fn process_cancel_reason() -> Option<CancelReason> {
    let task = PROCESS_TASK.load(Ordering::SeqCst);
    (task != 0 && PROCESS_SOFT_LIMITED.load(Ordering::SeqCst) == task)
        .then_some(CancelReason::SoftTimeLimit)
}

/// For process pool children: the parent signalled that task number `task` (its request's
/// sequence number, never 0) ran past its soft time limit, whether or not it has begun here.
/// Async-signal safe (one atomic store).
#[doc(hidden)]
pub fn soft_limit_process_task(task: u64) {
    PROCESS_SOFT_LIMITED.store(task, Ordering::SeqCst);
}

/// For process pool children: task number `task` begins now.
#[doc(hidden)]
pub fn begin_process_task(task: u64) {
    PROCESS_TASK.store(task, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that read the process-wide statics, which `cargo test` runs on
    /// threads of one process.
    static PROCESS_STATICS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn tokens_are_scoped_to_the_task() {
        let _statics = PROCESS_STATICS.lock().unwrap_or_else(|p| p.into_inner());
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

    #[test]
    fn a_process_soft_limit_applies_to_its_own_task_alone() {
        let _statics = PROCESS_STATICS.lock().unwrap_or_else(|p| p.into_inner());
        // Signalled before its task begins (the child was still replying to the one before):
        // not lost.
        begin_process_task(1);
        soft_limit_process_task(2);
        assert!(!is_cancelled(), "not the task running now");
        begin_process_task(2);
        assert_eq!(cancel_reason(), Some(CancelReason::SoftTimeLimit));
        // Arriving after its task finished: not applied to the next.
        begin_process_task(3);
        assert!(!is_cancelled(), "a late signal for task 2 stops task 3");
        soft_limit_process_task(3);
        assert!(is_cancelled());
        begin_process_task(0);
        assert!(!is_cancelled(), "no task, nothing to stop");
    }
}
