//! The one thread per [`Client`](super::Client) that watches every pending future's task in the
//! result store, so 100,000 pending futures cost a map entry each, not a thread each.
//!
//! Protocol: a future is registered (id → completer) before its task is sent, so a result
//! stored at once is still seen. Each pass asks the store to wait until one of a set of ids
//! is final ([`ResultStore::wait_any`](crate::ResultStore::wait_any), which blocks on the
//! backend's own wake-ups): the oldest pending ids (a queue is mostly first in, first out, so
//! they are the likeliest to finish next) plus a slice of the rest taken round-robin, so a
//! task that finishes out of order is seen within a bounded number of passes. Finished ids
//! leave the map and their futures are completed outside the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use lovage_core::{kinds, TaskError, TaskId, TaskState};
use lovage_pool::Completer;
use serde::de::DeserializeOwned;

use super::release::{Deferred, Held};
use crate::{Backend, ResultRecord};

/// The oldest pending ids in every pass.
const OLDEST: usize = 64;
/// The other pending ids read per pass, round-robin.
const SWEEP: usize = 256;
/// How long one pass blocks when nothing it watches finishes; new futures wait at most this
/// long to join the watched set.
const PASS: Duration = Duration::from_millis(200);

/// A pending future's completer with its type erased.
pub(crate) trait Pending: Send {
    /// The task was seen running.
    fn started(&mut self);
    /// The task's final record (`backend`: where a kept value's reader is released).
    fn finish(self: Box<Self>, rec: &ResultRecord, backend: &Backend);
    /// The watch ended without an outcome (the client was dropped with `cancel_on_drop`).
    fn abandon(self: Box<Self>, err: TaskError);
    /// Nobody wants the outcome any more (the future was cancelled).
    fn cancelled(&self) -> bool;
}

/// Two futures on one task.
struct Both(Box<dyn Pending>, Box<dyn Pending>);

impl Pending for Both {
    fn started(&mut self) {
        self.0.started();
        self.1.started();
    }
    fn finish(self: Box<Self>, rec: &ResultRecord, backend: &Backend) {
        self.0.finish(rec, backend);
        self.1.finish(rec, backend);
    }
    fn abandon(self: Box<Self>, err: TaskError) {
        self.0.abandon(err.clone());
        self.1.abandon(err);
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled() && self.1.cancelled()
    }
}

/// Work to do on the watcher thread once a task's record is final (see
/// [`Client::on_final`](super::Client::on_final)).
pub(crate) type FinalHook = Box<dyn FnOnce(&ResultRecord, &Backend) + Send>;

/// A [`FinalHook`] waiting for its task.
pub(crate) struct OnFinal(pub(crate) FinalHook);

impl Pending for OnFinal {
    fn started(&mut self) {}
    fn finish(self: Box<Self>, rec: &ResultRecord, backend: &Backend) {
        (self.0)(rec, backend);
    }
    fn abandon(self: Box<Self>, _: TaskError) {}
    fn cancelled(&self) -> bool {
        false
    }
}

/// How a finished record becomes a future's outcome.
pub(crate) type Decode<R> = fn(&ResultRecord) -> Result<R, TaskError>;

/// What a future holds once its task finished: the outcome, or (for a value its worker kept)
/// the record to fetch it from when the value is asked for, so a finished future costs no
/// transfer until `result()`.
pub(crate) enum Fetched<R> {
    /// Decoded already (an inline value, or an error). In a mutex so a future turned into a
    /// plain handle can move it out of a done callback.
    Ready(Mutex<Option<Result<R, TaskError>>>),
    /// Kept by a worker: fetched and decoded on demand.
    Kept(Box<KeptValue<R>>),
}

/// A finished future's kept value: the record to fetch it from. Dropping it (the future
/// dropped, or its result taken) releases the client's hold on the value, so its worker
/// frees it once every reader has (see [`crate::dataref::release`]).
pub(crate) struct KeptValue<R> {
    rec: Box<ResultRecord>,
    decode: Decode<R>,
    held: crate::ResultRef,
    backend: Backend,
}

impl<R> KeptValue<R> {
    fn get(&self) -> Result<R, TaskError> {
        (self.decode)(&self.rec)
    }
}

impl<R> Drop for KeptValue<R> {
    fn drop(&mut self) {
        crate::dataref::release(self.backend.results(), &self.held);
    }
}

impl<R> Fetched<R> {
    /// The outcome, fetching a kept value now.
    pub(crate) fn take(self) -> Result<R, TaskError> {
        match self {
            Fetched::Ready(m) => m
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| Err(taken())),
            Fetched::Kept(k) => k.get(),
        }
    }

    /// Calls `f` with the outcome, a kept value fetched for the call.
    pub(crate) fn peek<T>(&self, f: impl FnOnce(&Result<R, TaskError>) -> T) -> T {
        match self {
            Fetched::Ready(m) => match &*m.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(r) => f(r),
                None => f(&Err(taken())),
            },
            Fetched::Kept(k) => f(&k.get()),
        }
    }

    /// Moves the outcome out (a kept value fetched now); later calls get `ResultTaken`.
    pub(crate) fn take_shared(&self) -> Result<R, TaskError> {
        match self {
            Fetched::Ready(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| Err(taken())),
            Fetched::Kept(k) => k.get(),
        }
    }

    /// Whether the task failed (a kept value is a success).
    pub(crate) fn failed(&self) -> bool {
        match self {
            Fetched::Ready(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|r| r.is_err()),
            Fetched::Kept(..) => false,
        }
    }
}

fn taken() -> TaskError {
    TaskError::new(kinds::RESULT_TAKEN, "the result was already taken")
}

pub(crate) struct Typed<R> {
    completer: Completer<Fetched<R>>,
    decode: Decode<R>,
    started: bool,
}

impl<R> Typed<R> {
    pub(crate) fn new(completer: Completer<Fetched<R>>, decode: Decode<R>) -> Self {
        Typed {
            completer,
            decode,
            started: false,
        }
    }
}

/// The record's value decoded as `R`, or its error.
pub(crate) fn decode_value<R: DeserializeOwned>(rec: &ResultRecord) -> Result<R, TaskError> {
    rec.outcome::<R>().unwrap_or_else(|| Err(not_finished(rec)))
}

/// The record's value as stored (in the call's codec), or its error.
pub(crate) fn raw_value(rec: &ResultRecord) -> Result<Vec<u8>, TaskError> {
    match rec.state {
        TaskState::Success => {
            let value = rec.value.as_deref().ok_or_else(|| {
                TaskError::new(
                    kinds::BROKER,
                    format!("task {} succeeded but its value was not stored", rec.id),
                )
            })?;
            // A value kept by its worker (the data plane) is fetched from it.
            crate::dataref::resolve(value)
                .map(|v| v.into_owned())
                .map_err(|e| TaskError::new(kinds::BROKER, e.to_string()))
        }
        _ => match rec.outcome::<serde::de::IgnoredAny>() {
            Some(Err(e)) => Err(e),
            _ => Err(not_finished(rec)),
        },
    }
}

fn not_finished(rec: &ResultRecord) -> TaskError {
    TaskError::new(kinds::BROKER, format!("task {} is not finished", rec.id))
}

impl<R: Send + 'static> Pending for Typed<R> {
    fn started(&mut self) {
        if !self.started {
            self.started = self.completer.start();
        }
    }

    fn finish(self: Box<Self>, rec: &ResultRecord, backend: &Backend) {
        let fetched = if let (TaskState::Success, Some(Ok(r))) = (rec.state, rec.result_ref()) {
            Fetched::Kept(Box::new(KeptValue {
                rec: Box::new(rec.clone()),
                decode: self.decode,
                held: r,
                backend: backend.clone(),
            }))
        } else {
            Fetched::Ready(Mutex::new(Some((self.decode)(rec))))
        };
        self.completer.finish(Ok(fetched));
    }

    fn abandon(self: Box<Self>, err: TaskError) {
        self.completer.finish(Err(err));
    }

    fn cancelled(&self) -> bool {
        self.completer.is_cancelled()
    }
}

#[derive(Default)]
pub(super) struct Watched {
    pending: HashMap<TaskId, Box<dyn Pending>>,
    /// Who holds the records of the tasks this client sent (see `release.rs`).
    pub(super) held: HashMap<TaskId, Held>,
    /// Finished tasks no future holds any more, whose records the next pass forgets.
    pub(super) released: Vec<TaskId>,
    /// The ids of `released` (and `deferred`) whose holds were shared: the pass lets go of
    /// them with `unshare`, not `forget_unshared`.
    pub(super) unsharing: std::collections::HashSet<TaskId>,
    /// Counts the [`Held`] entries ever made (each one's generation).
    pub(super) generations: u64,
    /// When the oldest of `released` was released.
    pub(super) released_since: Option<std::time::Instant>,
    /// Released tasks a call still waits for, checked again later.
    pub(super) deferred: Deferred,
    /// Ids in the order they were registered; ids no longer pending are skipped and dropped
    /// lazily.
    order: VecDeque<TaskId>,
    /// Where the next round-robin slice starts in `order`.
    sweep: usize,
    pub(super) closed: bool,
}

impl Watched {
    /// Drops finished and cancelled ids from `order` when they make up most of it.
    fn compact(&mut self) {
        self.pending.retain(|_, p| !p.cancelled());
        if self.order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.order.retain(|id| pending.contains_key(id));
            self.sweep = 0;
        }
        while self
            .order
            .front()
            .is_some_and(|id| !self.pending.contains_key(id))
        {
            self.order.pop_front();
            self.sweep = self.sweep.saturating_sub(1);
        }
    }

    /// The ids one pass reads: the oldest pending, then a round-robin slice of the rest.
    fn pass_ids(&mut self) -> Vec<TaskId> {
        let mut ids = Vec::with_capacity(OLDEST + SWEEP);
        let mut i = 0;
        while ids.len() < OLDEST && i < self.order.len() {
            let id = self.order[i];
            if self.pending.contains_key(&id) {
                ids.push(id);
            }
            i += 1;
        }
        let rest = self.order.len().saturating_sub(i);
        if rest > 0 {
            if self.sweep < i || self.sweep >= self.order.len() {
                self.sweep = i;
            }
            let mut seen = 0;
            while ids.len() < OLDEST + SWEEP && seen < rest {
                let id = self.order[self.sweep];
                if self.pending.contains_key(&id) {
                    ids.push(id);
                }
                seen += 1;
                self.sweep += 1;
                if self.sweep >= self.order.len() {
                    self.sweep = i;
                }
            }
        }
        ids
    }
}

/// What the client and its watcher thread share.
pub(crate) struct Watch {
    state: Mutex<Watched>,
    pub(super) changed: Condvar,
    /// Taken while released records are checked and forgotten, and by a keyed submit while
    /// it takes its hold and reads the record: a record is never forgotten under a keyed
    /// submit that just found it.
    pub(super) forgetting: Mutex<()>,
    /// This client's key in the holders dicts of the tasks it shares
    /// ([`crate::holders_dict`]).
    pub(super) token: Vec<u8>,
}

impl Watch {
    pub(crate) fn new() -> Arc<Watch> {
        Arc::new(Watch {
            state: Mutex::new(Watched::default()),
            changed: Condvar::new(),
            forgetting: Mutex::new(()),
            token: TaskId::new().to_string().into_bytes(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Watched> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching `id`.
    pub(crate) fn add(&self, id: TaskId, pending: Box<dyn Pending>) {
        self.add_locked(self.lock(), id, pending);
    }

    /// [`add`](Self::add) under a lock already taken (released here).
    pub(super) fn add_locked(
        &self,
        mut st: MutexGuard<'_, Watched>,
        id: TaskId,
        pending: Box<dyn Pending>,
    ) {
        if st.closed {
            drop(st);
            pending.abandon(TaskError::new(
                kinds::CANCELLED,
                "the client was dropped before the task finished (the task itself goes on)",
            ));
            return;
        }
        // A second future on the same task (`Client::future` of an id already watched)
        // completes with the first: both are kept.
        match st.pending.remove(&id) {
            Some(earlier) => {
                st.pending.insert(id, Box::new(Both(earlier, pending)));
            }
            None => {
                st.pending.insert(id, pending);
                st.order.push_back(id);
            }
        }
        drop(st);
        self.changed.notify_one();
    }

    /// Stops watching `id` (its future was handed to fire-and-forget, or its send failed).
    pub(crate) fn remove(&self, id: TaskId) -> Option<Box<dyn Pending>> {
        self.lock().pending.remove(&id)
    }

    /// True while `id` waits to be seen finished.
    pub(super) fn is_pending(st: &Watched, id: TaskId) -> bool {
        st.pending.contains_key(&id)
    }

    /// True while some future waits on `id`.
    pub(crate) fn contains(&self, id: TaskId) -> bool {
        self.lock().pending.contains_key(&id)
    }

    /// How many futures are watched.
    pub(crate) fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Ends the watcher thread; every future still pending fails with `err`.
    pub(crate) fn close(&self, err: TaskError) {
        let mut st = self.lock();
        st.closed = true;
        let left: Vec<Box<dyn Pending>> = st.pending.drain().map(|(_, p)| p).collect();
        st.order.clear();
        drop(st);
        self.changed.notify_all();
        for p in left {
            p.abandon(err.clone());
        }
    }

    /// The watcher thread's loop; returns when the watch is closed.
    pub(crate) fn run(self: Arc<Self>, backend: Backend) {
        let mut failures = 0u32;
        loop {
            self.release(&backend);
            let ids = {
                let mut st = self.lock();
                loop {
                    if st.closed {
                        return;
                    }
                    st.compact();
                    if !st.pending.is_empty() {
                        break;
                    }
                    st = match st.release_due() {
                        Some(at) => {
                            let left = at.saturating_duration_since(std::time::Instant::now());
                            let (st, _) = self
                                .changed
                                .wait_timeout(st, left)
                                .unwrap_or_else(|p| p.into_inner());
                            drop(st);
                            self.release(&backend);
                            self.lock()
                        }
                        None => self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
                    };
                }
                st.pass_ids()
            };
            let recs = match backend.results().wait_any(&ids, PASS) {
                Ok(recs) => {
                    failures = 0;
                    recs
                }
                Err(e) => {
                    // The broker went away: the futures stay pending (a caller's own timeout
                    // decides how long to wait) and the watch tries again, slower each time.
                    failures = (failures + 1).min(6);
                    tracing::warn!(error = %e, "result watch failed; retrying");
                    std::thread::sleep(Duration::from_millis(50) * (1 << failures));
                    continue;
                }
            };
            let mut done = Vec::new();
            {
                let mut st = self.lock();
                for (id, rec) in ids.iter().zip(recs) {
                    let Some(rec) = rec else { continue };
                    if rec.state.is_final() {
                        if let Some(p) = st.pending.remove(id) {
                            st.finished(*id);
                            done.push((p, rec));
                        }
                    } else if rec.state == TaskState::Started {
                        if let Some(p) = st.pending.get_mut(id) {
                            p.started();
                        }
                    }
                }
            }
            for (p, rec) in done {
                p.finish(&rec, &backend);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Pending for Nothing {
        fn started(&mut self) {}
        fn finish(self: Box<Self>, _: &ResultRecord, _: &Backend) {}
        fn abandon(self: Box<Self>, _: TaskError) {}
        fn cancelled(&self) -> bool {
            false
        }
    }

    #[test]
    fn two_futures_on_one_task_both_end() {
        let w = Watch::new();
        let id = TaskId::new();
        let (first, first_handle) = lovage_pool::TaskHandle::<Fetched<Vec<u8>>>::promise();
        let (second, second_handle) = lovage_pool::TaskHandle::<Fetched<Vec<u8>>>::promise();
        w.add(id, Box::new(Typed::new(first, raw_value)));
        w.add(id, Box::new(Typed::new(second, raw_value)));
        assert_eq!(w.len(), 1, "one task watched");
        w.close(TaskError::new(kinds::CANCELLED, "closed"));
        let wait = std::time::Duration::from_secs(5);
        assert_eq!(
            first_handle.result_timeout(wait).err().unwrap().kind,
            kinds::CANCELLED
        );
        assert_eq!(
            second_handle.result_timeout(wait).err().unwrap().kind,
            kinds::CANCELLED
        );
    }

    #[test]
    fn every_pending_id_is_read_within_a_bounded_number_of_passes() {
        let mut w = Watched::default();
        let ids: Vec<TaskId> = (0..2000).map(|_| TaskId::new()).collect();
        for id in &ids {
            w.pending.insert(*id, Box::new(Nothing));
            w.order.push_back(*id);
        }
        let mut seen = std::collections::HashSet::new();
        let passes = (2000 - OLDEST).div_ceil(SWEEP) + 1;
        for _ in 0..passes {
            let pass = w.pass_ids();
            assert!(pass.len() <= OLDEST + SWEEP);
            seen.extend(pass);
        }
        assert_eq!(seen.len(), 2000, "some ids were never read");
    }

    #[test]
    fn finished_ids_leave_the_order_and_the_oldest_move_up() {
        let mut w = Watched::default();
        let ids: Vec<TaskId> = (0..10).map(|_| TaskId::new()).collect();
        for id in &ids {
            w.pending.insert(*id, Box::new(Nothing));
            w.order.push_back(*id);
        }
        for id in &ids[..5] {
            w.pending.remove(id);
        }
        w.compact();
        assert_eq!(w.order.len(), 5);
        assert_eq!(w.pass_ids(), ids[5..].to_vec());
    }
}
