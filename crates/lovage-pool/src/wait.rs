//! Waiting on many handles: `as_completed` and `wait`, as in `concurrent.futures`.

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lovage_core::{kinds, TaskError};

use crate::handle::TaskHandle;

fn timeout_error(timeout: Duration) -> TaskError {
    TaskError::new(
        kinds::TIMEOUT,
        format!("not every task finished within {timeout:?}"),
    )
}

/// Yields handles in the order their tasks finish. See [`as_completed`].
pub struct AsCompleted<T> {
    handles: Vec<Option<TaskHandle<T>>>,
    remaining: usize,
    rx: mpsc::Receiver<usize>,
    deadline: Option<(Instant, Duration)>,
    timed_out: bool,
}

/// Iterates over `handles` as their tasks finish (finished ones first). With a `timeout`, the
/// iterator yields one `Err(Timeout)` when it passes and then stops; the handles not yet
/// finished are left in [`AsCompleted::into_pending`].
///
/// ```
/// use lovage_pool::{as_completed, ThreadPool};
/// let pool = ThreadPool::new(2);
/// let handles: Vec<_> = (0..4u64).map(|i| pool.submit(move || i * 10)).collect();
/// let mut total = 0;
/// for h in as_completed(handles, None) {
///     total += h.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 60);
/// ```
pub fn as_completed<T: Send + 'static>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let (tx, rx) = mpsc::channel();
    let handles: Vec<Option<TaskHandle<T>>> = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let tx = tx.clone();
            h.add_done_callback(move |_| {
                let _ = tx.send(i);
            });
            Some(h)
        })
        .collect();
    AsCompleted {
        remaining: handles.len(),
        handles,
        rx,
        deadline: timeout.map(|t| (Instant::now() + t, t)),
        timed_out: false,
    }
}

impl<T> AsCompleted<T> {
    /// The handles that have not been yielded yet.
    pub fn into_pending(self) -> Vec<TaskHandle<T>> {
        self.handles.into_iter().flatten().collect()
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<TaskHandle<T>, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.timed_out {
            return None;
        }
        let index = match self.deadline {
            None => self.rx.recv().ok()?,
            Some((deadline, timeout)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(i) => i,
                    Err(_) => {
                        self.timed_out = true;
                        return Some(Err(timeout_error(timeout)));
                    }
                }
            }
        };
        self.remaining -= 1;
        self.handles[index].take().map(Ok)
    }
}

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any task finishes or is cancelled.
    FirstCompleted,
    /// As soon as any task fails (cancellation is not a failure); else when all finish.
    FirstException,
    /// When every task has finished or been cancelled.
    AllCompleted,
}

/// The two sets [`wait`] returns, in the order the handles were given.
#[derive(Debug)]
pub struct Waited<T> {
    /// Handles whose tasks finished (or were cancelled).
    pub done: Vec<TaskHandle<T>>,
    /// Handles whose tasks had not finished when `wait` returned.
    pub not_done: Vec<TaskHandle<T>>,
}

#[derive(Default)]
struct Tally {
    finished: usize,
    failed: bool,
}

/// Blocks until the condition `return_when` holds or `timeout` passes, then splits the handles
/// into done and not done. Like `concurrent.futures.wait`, a timeout is not an error: check
/// `not_done`.
pub fn wait<T: Send + 'static>(
    handles: impl IntoIterator<Item = TaskHandle<T>>,
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited<T> {
    let handles: Vec<TaskHandle<T>> = handles.into_iter().collect();
    let total = handles.len();
    let tally = Arc::new((Mutex::new(Tally::default()), Condvar::new()));
    for h in &handles {
        let tally = tally.clone();
        h.add_done_callback(move |r| {
            let (lock, cond) = &*tally;
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            t.finished += 1;
            t.failed |= matches!(r, Err(e) if !e.is(kinds::CANCELLED));
            cond.notify_all();
        });
    }
    let satisfied = |t: &Tally| match return_when {
        ReturnWhen::FirstCompleted => t.finished >= 1 || total == 0,
        ReturnWhen::FirstException => t.failed || t.finished == total,
        ReturnWhen::AllCompleted => t.finished == total,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let (lock, cond) = &*tally;
    let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
    while !satisfied(&t) {
        t = match deadline {
            None => cond.wait(t).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                cond.wait_timeout(t, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
    drop(t);
    let (done, not_done) = handles.into_iter().partition(|h| h.done());
    Waited { done, not_done }
}
