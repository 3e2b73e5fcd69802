//! The result cell shared by a submitted task and its handle, and the handle itself.
//!
//! A task's life is one atomic state (pending → running → done, or pending → cancelled) so
//! `done()`, `cancel()` and a worker's claim are single atomic operations. The result, the
//! waiting threads, an async waker and done-callbacks sit behind one small mutex that is taken
//! once by the finishing worker and once by whoever takes the result.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lovage_core::{kinds, TaskError};

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const SUCCEEDED: u8 = 2;
const FAILED: u8 = 3;
const CANCELLED: u8 = 4;

/// A callback run once when a task finishes, with a view of its outcome and when a worker
/// started it (None if none did).
pub(crate) type DoneCallback<T> = Box<dyn FnOnce(&Result<T, TaskError>, Option<SystemTime>) + Send>;

/// A callback given the outcome itself (see [`TaskHandle::take_when_done`]).
pub(crate) type TakeCallback<T> = Box<dyn FnOnce(Result<T, TaskError>, Option<SystemTime>) + Send>;

struct Slot<T> {
    result: Option<Result<T, TaskError>>,
    taken: bool,
    sleepers: u32,
    waker: Option<Waker>,
    callbacks: Vec<DoneCallback<T>>,
    /// The one callback that takes the outcome when it comes (the slot's `taken` then).
    taker: Option<TakeCallback<T>>,
}

/// Where a task's outcome lands; shared by the pool (writer) and the handle (reader).
pub(crate) struct Completion<T> {
    state: AtomicU8,
    /// When a worker started the task, in µs since the Unix epoch; 0 until then.
    started_us: AtomicU64,
    slot: Mutex<Slot<T>>,
    cond: Condvar,
}

impl<T> Default for Completion<T> {
    fn default() -> Self {
        Completion {
            state: AtomicU8::new(PENDING),
            started_us: AtomicU64::new(0),
            slot: Mutex::new(Slot {
                result: None,
                taken: false,
                sleepers: 0,
                waker: None,
                callbacks: Vec::new(),
                taker: None,
            }),
            cond: Condvar::new(),
        }
    }
}

impl<T> Completion<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panicking done-callback is caught, so poisoning only means an earlier panic
        // elsewhere; the slot's data is still consistent.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the task for running. False if it was cancelled (or already claimed).
    pub(crate) fn try_start(&self) -> bool {
        let claimed = self
            .state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if claimed {
            self.mark_started();
        }
        claimed
    }

    /// Records now as the time the task started (again, for a process pool: a claimed request
    /// may wait behind others in its child until the reply before it arrives).
    pub(crate) fn mark_started(&self) {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros().max(1) as u64);
        self.started_us.store(us, Ordering::Release);
    }

    /// When a worker started the task, if one did.
    pub(crate) fn started_at(&self) -> Option<SystemTime> {
        match self.started_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(UNIX_EPOCH + Duration::from_micros(us)),
        }
    }

    /// Claims a pending task and finishes it with `err` at once (shutdown, encode failure).
    pub(crate) fn fail_pending(&self, err: TaskError) -> bool {
        self.try_start() && {
            self.finish(Err(err));
            true
        }
    }

    /// Cancels a task that has not started. True if this call cancelled it.
    pub(crate) fn cancel(&self) -> bool {
        if self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.publish(Err(TaskError::new(
            kinds::CANCELLED,
            "the task was cancelled before it started",
        )));
        true
    }

    /// Stores the outcome of a task claimed with `try_start` and wakes everyone waiting for it.
    pub(crate) fn finish(&self, result: Result<T, TaskError>) {
        let state = if result.is_ok() { SUCCEEDED } else { FAILED };
        self.state.store(state, Ordering::Release);
        self.publish(result);
    }

    fn publish(&self, result: Result<T, TaskError>) {
        let started = self.started_at();
        let mut slot = self.lock();
        for cb in std::mem::take(&mut slot.callbacks) {
            run_callback(cb, &result, started);
        }
        let given = match slot.taker.take() {
            Some(taker) => {
                slot.taken = true;
                Some((taker, result))
            }
            None => {
                slot.result = Some(result);
                None
            }
        };
        let sleepers = slot.sleepers;
        let waker = slot.waker.take();
        drop(slot);
        if sleepers > 0 {
            self.cond.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        if let Some((taker, result)) = given {
            run_taker(taker, result, started);
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) >= SUCCEEDED
    }

    /// Done with a result (`Ok` or `Err`): the slot holds it or held it.
    fn has_result(slot: &Slot<T>) -> bool {
        slot.result.is_some() || slot.taken
    }

    /// Blocks until the task is done or `deadline` passes; true when done.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_done() && Self::has_result(&self.lock()) {
            return true;
        }
        // A short spin first: most waits in a busy pool end within microseconds, and parking
        // costs two system calls.
        for i in 0..64 {
            if self.is_done() {
                break;
            }
            if i < 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let mut slot = self.lock();
        while !Self::has_result(&slot) {
            slot.sleepers += 1;
            slot = match deadline {
                None => self.cond.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        slot.sleepers -= 1;
                        return false;
                    }
                    self.cond
                        .wait_timeout(slot, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            slot.sleepers -= 1;
        }
        true
    }

    /// Takes the result out; call only after `wait_until` returned true.
    fn take(&self) -> Result<T, TaskError> {
        Self::take_from(&mut self.lock())
    }

    /// Waits without a deadline and takes the result, locking once when it is already there
    /// (the common case for `result()` in a busy pool).
    fn wait_take(&self) -> Result<T, TaskError> {
        if self.is_done() {
            let mut slot = self.lock();
            if Self::has_result(&slot) {
                return Self::take_from(&mut slot);
            }
        }
        self.wait_until(None);
        self.take()
    }

    fn take_from(slot: &mut Slot<T>) -> Result<T, TaskError> {
        match slot.result.take() {
            Some(r) => {
                slot.taken = true;
                r
            }
            None => Err(TaskError::new(
                kinds::RESULT_TAKEN,
                "the result of this task was already taken",
            )),
        }
    }

    /// Runs `cb` when the task finishes, or now (on this thread) if it already has.
    pub(crate) fn on_done(&self, cb: DoneCallback<T>) {
        let started = self.started_at();
        let mut slot = self.lock();
        if let Some(r) = &slot.result {
            run_callback(cb, r, started);
        } else if slot.taken {
            run_callback(
                cb,
                &Err(TaskError::new(
                    kinds::RESULT_TAKEN,
                    "the result was already taken",
                )),
                started,
            );
        } else {
            slot.callbacks.push(cb);
        }
    }

    /// Gives the outcome to `cb` when the task finishes, or now (on this thread) if it has;
    /// `cb` gets `ResultTaken` when another taker, or a reader, had it first.
    pub(crate) fn on_done_take(&self, cb: TakeCallback<T>) {
        let started = self.started_at();
        let mut slot = self.lock();
        let now = if let Some(r) = slot.result.take() {
            slot.taken = true;
            r
        } else if slot.taken || slot.taker.is_some() {
            Err(TaskError::new(
                kinds::RESULT_TAKEN,
                "the result was already taken",
            ))
        } else {
            slot.taker = Some(cb);
            return;
        };
        drop(slot);
        run_taker(cb, now, started);
    }

    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T, TaskError>> {
        let mut slot = self.lock();
        if Self::has_result(&slot) {
            drop(slot);
            return Poll::Ready(self.take());
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }
}

fn run_callback<T>(
    cb: DoneCallback<T>,
    result: &Result<T, TaskError>,
    started: Option<SystemTime>,
) {
    // A callback's panic must not take the worker (or the waiting thread) down with it.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(result, started)));
}

fn run_taker<T>(cb: TakeCallback<T>, result: Result<T, TaskError>, started: Option<SystemTime>) {
    // As `run_callback`: a taker's panic is caught.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(result, started)));
}

/// Anything that owns a [`Completion`]: lets a thread-pool job keep its closure and its result
/// in one allocation while the handle sees only the result side.
pub(crate) trait HasCompletion<T>: Send + Sync {
    fn completion(&self) -> &Completion<T>;
}

impl<T: Send> HasCompletion<T> for Completion<T> {
    fn completion(&self) -> &Completion<T> {
        self
    }
}

/// A submitted task: wait for it, take its result, cancel it, or `.await` it.
///
/// The counterpart of `concurrent.futures.Future`. Dropping a handle does not cancel the task.
#[must_use = "a handle is how you get the result; drop it explicitly to fire and forget"]
pub struct TaskHandle<T> {
    inner: Arc<dyn HasCompletion<T>>,
}

impl<T: Send + 'static> TaskHandle<T> {
    pub(crate) fn from_shared(inner: Arc<dyn HasCompletion<T>>) -> Self {
        TaskHandle { inner }
    }

    /// A handle with nothing behind it yet, and the [`Completer`] that finishes it: for work
    /// that runs somewhere this crate does not see (a task sent to a broker).
    pub fn promise() -> (Completer<T>, TaskHandle<T>) {
        let inner = Arc::new(Completion::default());
        (
            Completer {
                inner: inner.clone(),
            },
            TaskHandle { inner },
        )
    }

    /// A handle that is already finished with `err` (a submit that could not happen).
    pub(crate) fn already_failed(err: TaskError) -> Self {
        let c = Completion::default();
        c.fail_pending(err);
        TaskHandle { inner: Arc::new(c) }
    }

    fn c(&self) -> &Completion<T> {
        self.inner.completion()
    }

    /// Blocks until the task finishes and returns its value, or its error: the task's own
    /// failure, a panic (`Panic`), `Cancelled`, `WorkerLost`, `TimeLimitExceeded`…
    ///
    /// Inside a task that a `lovage worker` runs, a wait that blocks gives the task's slot back
    /// for its length (an implicit `secede`/`rejoin`); see [`lovage_core::context`].
    pub fn result(self) -> Result<T, TaskError> {
        crate::thread::help_while(|| self.done());
        if !self.done() {
            return crate::thread::blocking(|| self.c().wait_take());
        }
        self.c().wait_take()
    }

    /// Like [`result`](Self::result) but gives up after `timeout` with a `Timeout` error; the
    /// task keeps running and the handle stays usable. The value can be taken once: later calls
    /// return `ResultTaken`.
    pub fn result_timeout(&self, timeout: Duration) -> Result<T, TaskError> {
        let deadline = Instant::now() + timeout;
        // Done turns true a moment before the value is in the slot: even then, wait for it
        // (without giving the pool slot up: it is there within instructions).
        let done = if self.done() {
            self.c().wait_until(Some(deadline))
        } else {
            crate::thread::blocking(|| self.c().wait_until(Some(deadline)))
        };
        if done {
            self.c().take()
        } else {
            Err(TaskError::new(
                kinds::TIMEOUT,
                format!("the task did not finish within {timeout:?}"),
            ))
        }
    }

    /// Blocks until the task finishes.
    pub fn wait(&self) {
        crate::thread::help_while(|| self.done());
        if !self.done() {
            crate::thread::blocking(|| self.c().wait_until(None));
        }
    }

    /// Blocks until the task finishes or `timeout` passes; true if it finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.done() || crate::thread::blocking(|| self.c().wait_until(Some(deadline)))
    }

    /// True once the task has finished: returned, failed or been cancelled.
    pub fn done(&self) -> bool {
        self.c().is_done()
    }

    /// True while a worker runs the task.
    pub fn running(&self) -> bool {
        self.c().state() == RUNNING
    }

    /// True if the task was cancelled before it started.
    pub fn cancelled(&self) -> bool {
        self.c().state() == CANCELLED
    }

    /// True if the task finished with an error (not counting cancellation).
    pub fn failed(&self) -> bool {
        self.c().state() == FAILED
    }

    /// Cancels the task if it has not started; true if it is cancelled, by this call or an
    /// earlier one (as `concurrent.futures.Future.cancel`). A running or finished task is not
    /// affected, and false says so.
    pub fn cancel(&self) -> bool {
        self.c().cancel() || self.cancelled()
    }

    /// Calls `f` with the outcome when the task finishes, on the thread that finishes it; if the
    /// task has already finished, calls it now on this thread. A panic in `f` is caught.
    pub fn add_done_callback<F>(&self, f: F)
    where
        F: FnOnce(&Result<T, TaskError>) + Send + 'static,
    {
        self.c().on_done(Box::new(move |r, _| f(r)));
    }

    /// Like [`add_done_callback`](Self::add_done_callback), and also tells `f` when a worker
    /// started the task (None when it never ran: cancelled, or failed before it started).
    /// In a process pool, when its child began it.
    pub fn add_done_callback_timed<F>(&self, f: F)
    where
        F: FnOnce(&Result<T, TaskError>, Option<SystemTime>) + Send + 'static,
    {
        self.c().on_done(Box::new(f));
    }

    /// Like [`add_done_callback_timed`](Self::add_done_callback_timed), but `f` gets the
    /// outcome itself rather than a view of it, so a large value is moved, not copied (a
    /// worker's encoded result, on its way to the store). The handle's own `result()` then
    /// answers `ResultTaken`, as after any take; only one taker gets the outcome, a second
    /// gets `ResultTaken`. Callbacks added with `add_done_callback` still see it, first.
    pub fn take_when_done<F>(&self, f: F)
    where
        F: FnOnce(Result<T, TaskError>, Option<SystemTime>) + Send + 'static,
    {
        self.c().on_done_take(Box::new(f));
    }

    /// When a worker started the task, if one has.
    pub fn started_at(&self) -> Option<SystemTime> {
        self.c().started_at()
    }
}

/// The writing side of a handle made by [`TaskHandle::promise`]: whatever runs the work
/// elsewhere (a broker's worker, watched by a client) reports through it.
///
/// ```
/// let (done, handle) = lovage_pool::TaskHandle::<u32>::promise();
/// assert!(done.start());
/// done.finish(Ok(7));
/// assert_eq!(handle.result().unwrap(), 7);
/// ```
pub struct Completer<T> {
    inner: Arc<Completion<T>>,
}

impl<T: Send + 'static> Completer<T> {
    /// Marks the work as running (the handle's `running()` turns true); false if the handle
    /// was cancelled first or the work was already marked.
    pub fn start(&self) -> bool {
        self.inner.try_start()
    }

    /// Delivers the outcome and wakes everyone waiting on the handle. A handle cancelled
    /// before the work started keeps its `Cancelled` outcome and this one is dropped.
    pub fn finish(self, result: Result<T, TaskError>) {
        let c = &self.inner;
        if c.state() == PENDING && !c.try_start() {
            return;
        }
        if c.state() == RUNNING {
            c.finish(result);
        }
    }

    /// True if the handle was cancelled (nobody wants the outcome any more).
    pub fn is_cancelled(&self) -> bool {
        self.inner.state() == CANCELLED
    }
}

impl<T> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.completion().poll_take(cx)
    }
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.inner.completion().state() {
            PENDING => "pending",
            RUNNING => "running",
            SUCCEEDED => "succeeded",
            FAILED => "failed",
            _ => "cancelled",
        };
        f.debug_struct("TaskHandle").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `result_timeout` right after `done()` turns true gets the value: the state turns done
    /// a moment before the value is in the slot, and a reader in between must wait for it,
    /// not report it taken. Many rounds, since the window is a few instructions wide.
    #[test]
    fn a_result_read_the_moment_it_is_done_is_there() {
        for round in 0..20_000 {
            let (completer, handle) = TaskHandle::<u32>::promise();
            let finisher = std::thread::spawn(move || {
                completer.start();
                completer.finish(Ok(round));
            });
            while !handle.done() {
                std::hint::spin_loop();
            }
            assert_eq!(
                handle.result_timeout(Duration::from_secs(60)),
                Ok(round),
                "round {round}"
            );
            finisher.join().unwrap();
        }
    }

    /// A taker added before the end gets the value itself, after the viewers; the handle's
    /// reader and a second taker then get `ResultTaken`.
    #[test]
    fn a_taker_gets_the_value_and_the_handle_then_says_it_was_taken() {
        let (completer, handle) = TaskHandle::<Vec<u8>>::promise();
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = tx.clone();
        handle.add_done_callback(move |r| seen.send(("viewer", r.clone())).unwrap());
        handle.take_when_done(move |r, _| tx.send(("taker", r)).unwrap());
        completer.start();
        completer.finish(Ok(vec![7; 3]));
        assert_eq!(rx.recv().unwrap(), ("viewer", Ok(vec![7; 3])));
        assert_eq!(rx.recv().unwrap(), ("taker", Ok(vec![7; 3])));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.take_when_done(move |r, _| tx.send(r).unwrap());
        assert_eq!(rx.recv().unwrap().unwrap_err().kind, kinds::RESULT_TAKEN);
        assert_eq!(
            handle
                .result_timeout(Duration::from_secs(5))
                .unwrap_err()
                .kind,
            kinds::RESULT_TAKEN
        );
    }

    /// A taker added after the end gets the value at once; one added after a reader took it
    /// gets `ResultTaken`.
    #[test]
    fn a_late_taker_gets_the_value_unless_it_was_read() {
        let (completer, handle) = TaskHandle::<u32>::promise();
        completer.start();
        completer.finish(Ok(5));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.take_when_done(move |r, _| tx.send(r).unwrap());
        assert_eq!(rx.recv().unwrap(), Ok(5));

        let (completer, handle) = TaskHandle::<u32>::promise();
        completer.start();
        completer.finish(Ok(6));
        assert_eq!(handle.result_timeout(Duration::from_secs(5)), Ok(6));
        let (tx, rx) = std::sync::mpsc::channel();
        handle.take_when_done(move |r, _| tx.send(r).unwrap());
        assert_eq!(rx.recv().unwrap().unwrap_err().kind, kinds::RESULT_TAKEN);
    }
}
