//! Scope joins on a process pool (rayon's `scope`, with tasks that spawn tasks across
//! processes): [`ProcessPool::scope`](super::ProcessPool::scope) returns when every task spawned
//! inside it has finished, including those the tasks themselves spawned with [`spawn`] or
//! [`spawn_keyed`] in their child process — the seeds' `queue.join()` for a crawler on a
//! process pool.
//!
//! A task in a child spawns by adding to a list that rides back in its call's reply, so the
//! parent counts the children before the call that made them leaves the scope: the scope never
//! sees zero open tasks while work it will contain is still unsent. A child process that dies
//! mid-call loses its spawns with its outcome (the call fails `WorkerLost`); a call that fails
//! in any other way keeps them, as on a broker, where `ctx.spawn` sends at once.

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use lovage_core::{kinds, Signature, TaskError, TypedSignature};
use serde::de::DeserializeOwned;

use super::frame::{Outcome, Spawn};
use super::{CallRequest, ProcJob, ProcessPool, Shared};

thread_local! {
    /// The spawns of the scoped call running on this thread of a child, if one is.
    static SPAWNS: RefCell<Option<Vec<Spawn>>> = const { RefCell::new(None) };
}

/// Runs `f` (a scoped call in a child) collecting what it spawns.
pub(crate) fn collecting_spawns<R>(f: impl FnOnce() -> R) -> (R, Vec<Spawn>) {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SPAWNS.with(|s| s.borrow_mut().take());
        }
    }
    SPAWNS.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let _clear = Clear;
    let out = f();
    let spawns = SPAWNS.with(|s| s.borrow_mut().take()).unwrap_or_default();
    (out, spawns)
}

/// Inside a task a [`ProcessScope`] runs in a pool's child: adds `sig` to the scope, to run on
/// the pool once this call returns. Fails outside such a task (in the parent, on a thread pool,
/// in a call sent with `submit`), and for arguments that did not encode. The call's own options
/// are not carried: the spawned task runs with its registered options.
pub fn spawn<R: DeserializeOwned>(sig: TypedSignature<R>) -> Result<(), TaskError> {
    push(None, sig)
}

/// [`spawn`] under a key: the scope runs one task per key, however many tasks spawn it (a page
/// found from two others is crawled once).
pub fn spawn_keyed<R: DeserializeOwned>(
    key: &str,
    sig: TypedSignature<R>,
) -> Result<(), TaskError> {
    push(Some(key.to_owned()), sig)
}

fn push<R: DeserializeOwned>(key: Option<String>, sig: TypedSignature<R>) -> Result<(), TaskError> {
    sig.check()?;
    let sig = sig.into_signature();
    SPAWNS.with(|s| match s.borrow_mut().as_mut() {
        Some(list) => {
            list.push(Spawn {
                task: sig.task,
                codec: sig.codec,
                key,
                args: sig.args,
            });
            Ok(())
        }
        None => Err(TaskError::new(
            kinds::FAILED,
            format!(
                "cannot spawn {}: lovage_pool::process::scope::spawn works only inside a task \
                 that a ProcessPool scope runs",
                sig.task
            ),
        )),
    })
}

/// A task of a scope that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeFailure {
    /// The registered task's name.
    pub task: String,
    /// Its key, if it was spawned with one.
    pub key: Option<String>,
    /// Why it failed.
    pub error: TaskError,
}

/// What a [`ProcessPool::scope`] ran: the closure's value and counts of every task spawned in
/// it, transitively.
#[derive(Debug)]
pub struct ProcessScopeReport<R> {
    /// What the closure returned.
    pub value: R,
    /// Tasks spawned (a key spawned again counts once).
    pub spawned: u64,
    /// Tasks that returned a value.
    pub succeeded: u64,
    /// Tasks that failed, in the order they finished.
    pub failed: Vec<ScopeFailure>,
}

#[derive(Default)]
struct Tally {
    open: usize,
    spawned: u64,
    succeeded: u64,
    failed: Vec<ScopeFailure>,
    keys: HashSet<String>,
}

struct ScopeState {
    shared: Arc<Shared>,
    tally: Mutex<Tally>,
    all_done: Condvar,
}

impl ScopeState {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `spawn` (unless its key ran already) and queues it on the pool.
    fn add(self: &Arc<Self>, spawn: Spawn) {
        {
            let mut t = self.lock();
            if let Some(k) = &spawn.key {
                if !t.keys.insert(k.clone()) {
                    return;
                }
            }
            t.open += 1;
            t.spawned += 1;
        }
        let sig = Signature::from_encoded(spawn.task, spawn.args, spawn.codec);
        let mut request = self.shared.call_request(sig);
        request.scoped = true;
        let job = Arc::new(ScopedCall {
            state: AtomicU8::new(PENDING),
            request,
            key: spawn.key,
            scope: self.clone(),
        });
        if !self.shared.push(job.clone()) {
            job.settle(Err(crate::thread::shutdown_error()));
        }
    }

    fn settle(&self, task: &str, key: Option<&str>, result: Result<(), TaskError>) {
        let mut t = self.lock();
        t.open -= 1;
        match result {
            Ok(()) => t.succeeded += 1,
            Err(error) => t.failed.push(ScopeFailure {
                task: task.to_owned(),
                key: key.map(str::to_owned),
                error,
            }),
        }
        if t.open == 0 {
            self.all_done.notify_all();
        }
    }

    fn wait_all(&self) {
        let mut t = self.lock();
        while t.open > 0 {
            t = self.all_done.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }
}

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// One task of a scope, queued on the pool. Its value is dropped: a scope reports counts and
/// failures (results a caller needs go through `submit`).
struct ScopedCall {
    state: AtomicU8,
    request: CallRequest,
    key: Option<String>,
    scope: Arc<ScopeState>,
}

impl ScopedCall {
    /// Leaves the scope once, however the call ended.
    fn settle(&self, result: Result<(), TaskError>) {
        if self.state.swap(DONE, Ordering::AcqRel) != DONE {
            self.scope
                .settle(&self.request.task, self.key.as_deref(), result);
        }
    }
}

impl ProcJob for ScopedCall {
    fn request(&self) -> &CallRequest {
        &self.request
    }
    fn try_start(&self) -> bool {
        self.state
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
    fn mark_started(&self) {}
    fn cancel(&self) -> bool {
        let cancelled = self
            .state
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if cancelled {
            let err = TaskError::new(kinds::CANCELLED, "the pool was shut down before it ran");
            self.scope
                .settle(&self.request.task, self.key.as_deref(), Err(err));
        }
        cancelled
    }
    fn finish(&self, outcomes: Result<Vec<Outcome>, TaskError>) {
        let result = outcomes.and_then(|o| {
            o.into_iter()
                .next()
                .map(|r| r.map(drop))
                .unwrap_or_else(|| {
                    Err(TaskError::new(
                        kinds::WORKER_LOST,
                        "the child sent no outcome",
                    ))
                })
        });
        self.settle(result);
    }
    fn spawned(&self, spawns: Vec<Spawn>) {
        for s in spawns {
            self.scope.add(s);
        }
    }
}

/// Spawns tasks into a [`ProcessPool::scope`].
pub struct ProcessScope<'p> {
    _pool: &'p ProcessPool,
    state: Arc<ScopeState>,
}

impl ProcessScope<'_> {
    /// Queues `sig` on the pool, counted in this scope; tasks it spawns count too.
    pub fn spawn<R: DeserializeOwned>(&self, sig: TypedSignature<R>) -> Result<(), TaskError> {
        self.add(None, sig)
    }

    /// [`spawn`](Self::spawn) under a key: one task per key in the scope, whoever spawns it.
    pub fn spawn_keyed<R: DeserializeOwned>(
        &self,
        key: &str,
        sig: TypedSignature<R>,
    ) -> Result<(), TaskError> {
        self.add(Some(key.to_owned()), sig)
    }

    fn add<R: DeserializeOwned>(
        &self,
        key: Option<String>,
        sig: TypedSignature<R>,
    ) -> Result<(), TaskError> {
        sig.check()?;
        let sig = sig.into_signature();
        self.state.add(Spawn {
            task: sig.task,
            codec: sig.codec,
            key,
            args: sig.args,
        });
        Ok(())
    }
}

impl ProcessPool {
    /// Runs `f` with a [`ProcessScope`]; returns when `f` has returned and every task spawned in
    /// the scope has finished — those `f` spawned and, transitively, those the tasks spawned in
    /// their child processes with [`spawn`] / [`spawn_keyed`].
    ///
    /// ```
    /// #[lovage_macros::task(crate = lovage_core)]
    /// fn countdown(n: u32) -> u32 {
    ///     if n > 0 {
    ///         lovage_pool::process::scope::spawn(countdown::s(n - 1)).unwrap();
    ///     }
    ///     n
    /// }
    ///
    /// fn main() {
    ///     lovage_pool::child_main();
    ///     let pool = lovage_pool::ProcessPool::new(2);
    ///     let report = pool.scope(|s| s.spawn(countdown::s(9)).unwrap());
    ///     assert_eq!((report.spawned, report.succeeded), (10, 10));
    /// }
    /// ```
    pub fn scope<R>(&self, f: impl FnOnce(&ProcessScope<'_>) -> R) -> ProcessScopeReport<R> {
        let scope = ProcessScope {
            _pool: self,
            state: Arc::new(ScopeState {
                shared: self.shared.clone(),
                tally: Mutex::new(Tally::default()),
                all_done: Condvar::new(),
            }),
        };
        let value = catch_unwind(AssertUnwindSafe(|| f(&scope)));
        scope.state.wait_all();
        let value = value.unwrap_or_else(|p| resume_unwind(p));
        let t = std::mem::take(&mut *scope.state.lock());
        ProcessScopeReport {
            value,
            spawned: t.spawned,
            succeeded: t.succeeded,
            failed: t.failed,
        }
    }
}
