//! Waiting on many client futures: `as_completed` (with `add`) and `wait`.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use lovage_core::TaskId;
use lovage_pool::ReturnWhen;

use super::TaskFuture;

/// Yields futures as their tasks finish (Dask's `as_completed`); [`add`](Self::add) puts more
/// in while iterating. Each yielded future is done: its `result()` does not block.
///
/// Both an [`Iterator`] (blocking) and a [`Stream`](futures_core::Stream) (for async code: it
/// parks no thread, the futures' completion wakes the task polling it).
pub struct AsCompleted<R> {
    waiting: HashMap<TaskId, TaskFuture<R>>,
    finished: Arc<Finished>,
}

/// Ids whose futures finished, in the order they did, and who to wake.
#[derive(Default)]
struct Finished {
    state: Mutex<FinishedState>,
    changed: Condvar,
}

#[derive(Default)]
struct FinishedState {
    ids: VecDeque<TaskId>,
    waker: Option<Waker>,
}

impl Finished {
    fn lock(&self) -> MutexGuard<'_, FinishedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, id: TaskId) {
        let waker = {
            let mut st = self.lock();
            st.ids.push_back(id);
            st.waker.take()
        };
        self.changed.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<R: Send + 'static> AsCompleted<R> {
    pub(super) fn new(futures: impl IntoIterator<Item = TaskFuture<R>>) -> Self {
        let mut me = AsCompleted {
            waiting: HashMap::new(),
            finished: Arc::default(),
        };
        for f in futures {
            me.add(f);
        }
        me
    }

    /// Adds a future to those being waited on.
    pub fn add(&mut self, future: TaskFuture<R>) {
        let finished = Arc::clone(&self.finished);
        let id = future.id;
        // Registered before the callback can fire: a finished future calls it at once.
        self.waiting.insert(id, future);
        if let Some(f) = self.waiting.get(&id) {
            f.on_done(move |_| finished.push(id));
        }
    }

    /// How many futures have not been yielded yet.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when every future has been yielded.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes the next finished future out of `st`, if one is there.
    fn take(&mut self, st: &mut FinishedState) -> Option<TaskFuture<R>> {
        while let Some(id) = st.ids.pop_front() {
            if let Some(f) = self.waiting.remove(&id) {
                return Some(f);
            }
        }
        None
    }

    /// The next future to finish, waiting at most `timeout`; None if none finished by then
    /// (or none is left).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<TaskFuture<R>> {
        let deadline = Instant::now() + timeout;
        let finished = Arc::clone(&self.finished);
        let mut st = finished.lock();
        while !self.waiting.is_empty() {
            if let Some(f) = self.take(&mut st) {
                return Some(f);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = finished
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        None
    }
}

impl<R: Send + 'static> Iterator for AsCompleted<R> {
    type Item = TaskFuture<R>;

    fn next(&mut self) -> Option<TaskFuture<R>> {
        let finished = Arc::clone(&self.finished);
        let mut st = finished.lock();
        while !self.waiting.is_empty() {
            if let Some(f) = self.take(&mut st) {
                return Some(f);
            }
            st = finished.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        None
    }
}

impl<R: Send + 'static> futures_core::Stream for AsCompleted<R> {
    type Item = TaskFuture<R>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.waiting.is_empty() {
            return Poll::Ready(None);
        }
        let finished = Arc::clone(&this.finished);
        let mut st = finished.lock();
        match this.take(&mut st) {
            Some(f) => Poll::Ready(Some(f)),
            None => {
                // Stored under the same lock `push` takes: a finish after this is not missed.
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.waiting.len()))
    }
}

/// What [`Client::wait`](super::Client::wait) returns: the futures split by whether they
/// finished, each side in the order given.
#[derive(Debug)]
pub struct Waited<R> {
    /// Finished (or cancelled) futures.
    pub done: Vec<TaskFuture<R>>,
    /// The rest.
    pub not_done: Vec<TaskFuture<R>>,
}

pub(super) fn wait<R: Send + 'static>(
    futures: Vec<TaskFuture<R>>,
    when: ReturnWhen,
    timeout: Option<Duration>,
) -> Waited<R> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let (tx, rx) = mpsc::channel::<bool>();
    for f in &futures {
        let tx = tx.clone();
        f.on_done(move |failed| {
            let _ = tx.send(failed);
        });
    }
    drop(tx);
    let total = futures.len();
    let mut finished = 0;
    let satisfied = |finished: usize, failed: bool| match when {
        ReturnWhen::FirstCompleted => finished > 0,
        ReturnWhen::FirstException => failed || finished == total,
        ReturnWhen::AllCompleted => finished == total,
    };
    let mut failed = false;
    while !satisfied(finished, failed) {
        let got = match deadline {
            None => rx.recv().ok(),
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .ok(),
        };
        match got {
            Some(err) => {
                finished += 1;
                failed |= err;
            }
            None => break,
        }
    }
    let (done, not_done) = futures.into_iter().partition(|f| f.done());
    Waited { done, not_done }
}
