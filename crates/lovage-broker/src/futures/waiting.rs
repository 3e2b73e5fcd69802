//! Waiting on many client futures: `as_completed` (with `add`) and `wait`.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lovage_core::TaskId;
use lovage_pool::ReturnWhen;

use super::TaskFuture;

/// Yields futures as their tasks finish (Dask's `as_completed`); [`add`](Self::add) puts more
/// in while iterating. Each yielded future is done: its `result()` does not block.
pub struct AsCompleted<R> {
    waiting: HashMap<TaskId, TaskFuture<R>>,
    tx: mpsc::Sender<TaskId>,
    rx: mpsc::Receiver<TaskId>,
}

impl<R: Send + 'static> AsCompleted<R> {
    pub(super) fn new(futures: impl IntoIterator<Item = TaskFuture<R>>) -> Self {
        let (tx, rx) = mpsc::channel();
        let mut me = AsCompleted {
            waiting: HashMap::new(),
            tx,
            rx,
        };
        for f in futures {
            me.add(f);
        }
        me
    }

    /// Adds a future to those being waited on.
    pub fn add(&mut self, future: TaskFuture<R>) {
        let tx = self.tx.clone();
        let id = future.id;
        // Registered before the callback can fire: a finished future calls it at once.
        self.waiting.insert(id, future);
        if let Some(f) = self.waiting.get(&id) {
            f.on_done(move |_| {
                let _ = tx.send(id);
            });
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

    /// The next future to finish, waiting at most `timeout`; None if none finished by then
    /// (or none is left).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<TaskFuture<R>> {
        let deadline = Instant::now() + timeout;
        while !self.waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let id = self.rx.recv_timeout(left).ok()?;
            if let Some(f) = self.waiting.remove(&id) {
                return Some(f);
            }
        }
        None
    }
}

impl<R: Send + 'static> Iterator for AsCompleted<R> {
    type Item = TaskFuture<R>;

    fn next(&mut self) -> Option<TaskFuture<R>> {
        while !self.waiting.is_empty() {
            // The sender half lives in `self`, so this never sees a disconnect.
            let id = self.rx.recv().ok()?;
            if let Some(f) = self.waiting.remove(&id) {
                return Some(f);
            }
        }
        None
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
