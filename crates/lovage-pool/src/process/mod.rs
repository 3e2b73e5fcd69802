//! A pool of child processes running registered tasks, where a crash fails only its own task.
//!
//! Children are the current executable started again in child mode: `main` must call
//! [`child_main`] first. Requests and replies are length-prefixed frames over pipes (see
//! `frame`), sent in batches. Each child has a supervisor thread in the parent (see `slot`) that
//! notices when the child dies, fails the task it was running with `WorkerLost`, hands the tasks
//! queued behind it to a fresh child and carries on: there is no "broken pool".

pub(crate) mod child;
pub(crate) mod frame;
pub mod scope;
mod slot;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use lovage_core::{CancelToken, Codec, Registry, Signature, TaskError, TypedSignature};
use serde::de::DeserializeOwned;

use crate::handle::{Completion, HasCompletion, TaskHandle};
use crate::ordered::{ChunkResults, OrderedChunks};
use frame::Outcome;

pub use child::child_main;
pub use scope::{ProcessScope, ProcessScopeReport, ScopeFailure};

/// What a child is asked to run: one task, one or more argument sets.
pub(crate) struct CallRequest {
    task: String,
    codec: Codec,
    args: Vec<Vec<u8>>,
    time_limit: Option<Duration>,
    /// Revoke kills the child running it; a soft time limit is signalled to the child.
    cancel: Option<CancelToken>,
    /// Runs in a [`scope::ProcessScope`]: what it spawns comes back with its reply.
    scoped: bool,
}

/// A queued request with its result cell, type-erased for the supervisor threads.
pub(crate) trait ProcJob: Send + Sync {
    fn request(&self) -> &CallRequest;
    fn try_start(&self) -> bool;
    /// The child began this request (the reply before it arrived).
    fn mark_started(&self);
    fn cancel(&self) -> bool;
    /// Delivers the child's outcomes (one per argument set), or a failure of the whole request.
    fn finish(&self, outcomes: Result<Vec<Outcome>, TaskError>);
    /// Hands over what the call spawned (just before [`finish`](Self::finish)); only a scoped
    /// call's child may spawn, so other jobs get nothing.
    fn spawned(&self, _spawns: Vec<frame::Spawn>) {}
}

type Decode<T> = fn(Codec, Vec<Outcome>) -> Result<T, TaskError>;

struct ProcCell<T> {
    completion: Completion<T>,
    request: CallRequest,
    decode: Decode<T>,
}

impl<T: Send> ProcJob for ProcCell<T> {
    fn request(&self) -> &CallRequest {
        &self.request
    }
    fn try_start(&self) -> bool {
        self.completion.try_start()
    }
    fn mark_started(&self) {
        self.completion.mark_started();
    }
    fn cancel(&self) -> bool {
        self.completion.cancel()
    }
    fn finish(&self, outcomes: Result<Vec<Outcome>, TaskError>) {
        let result = outcomes.and_then(|o| (self.decode)(self.request.codec, o));
        self.completion.finish(result);
    }
}

impl<T: Send> HasCompletion<T> for ProcCell<T> {
    fn completion(&self) -> &Completion<T> {
        &self.completion
    }
}

fn decode_value<R: DeserializeOwned>(codec: Codec, bytes: Outcome) -> Result<R, TaskError> {
    Ok(codec.decode(&bytes?, "task result")?)
}

fn decode_single<R: DeserializeOwned>(
    codec: Codec,
    outcomes: Vec<Outcome>,
) -> Result<R, TaskError> {
    decode_value(codec, decode_raw(codec, outcomes))
}

/// The one outcome of a single call, still encoded.
fn decode_raw(_codec: Codec, outcomes: Vec<Outcome>) -> Result<Vec<u8>, TaskError> {
    outcomes.into_iter().next().unwrap_or_else(|| {
        Err(TaskError::new(
            lovage_core::kinds::WORKER_LOST,
            "the child sent no outcome",
        ))
    })
}

fn decode_chunk<R: DeserializeOwned>(
    codec: Codec,
    outcomes: Vec<Outcome>,
) -> Result<ChunkResults<R>, TaskError> {
    Ok(outcomes
        .into_iter()
        .map(|o| decode_value(codec, o))
        .collect())
}

pub(crate) struct Config {
    program: PathBuf,
    max_tasks_per_child: Option<usize>,
    time_limit: Option<Duration>,
    initializer: Option<Signature>,
    max_batch: usize,
}

struct Queue {
    jobs: VecDeque<Arc<dyn ProcJob>>,
    shutdown: bool,
    /// Supervisors with requests in flight; the others' children are idle (or not started).
    busy_slots: usize,
}

pub(crate) struct Shared {
    queue: Mutex<Queue>,
    cond: Condvar,
    config: Config,
    /// Slots numbered at or above this take no new work (see [`ProcessPool::resize`]); changed
    /// under the queue's lock.
    limit: AtomicUsize,
    /// One entry per slot started (its child's pid while it has one).
    pids: Mutex<Vec<Option<u32>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes up to `max` jobs, at most a fair share of the queue so other children get work.
    /// With `block` (the caller is idle), waits for work; `None` means shut down with nothing
    /// queued. `busy` is the caller's own mark in the count of busy supervisors.
    /// A slot beyond the pool's size takes nothing (and, idle, waits until it grows).
    fn take(
        &self,
        index: usize,
        max: usize,
        block: bool,
        busy: &mut bool,
    ) -> Option<Vec<Arc<dyn ProcJob>>> {
        let mut q = self.lock();
        let over = |q: &Queue| !q.shutdown && index >= self.limit.load(Ordering::SeqCst);
        if block {
            if *busy {
                q.busy_slots -= 1;
                *busy = false;
            }
            while (q.jobs.is_empty() || over(&q)) && !q.shutdown {
                q = self.cond.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
        if over(&q) {
            return Some(Vec::new());
        }
        if q.jobs.is_empty() {
            return if q.shutdown { None } else { Some(Vec::new()) };
        }
        let workers = self.limit.load(Ordering::SeqCst).max(1);
        // A busy child prefetches only what the idle children would not start at once.
        let idle = workers.saturating_sub(q.busy_slots);
        let available = if block {
            q.jobs.len()
        } else {
            q.jobs.len().saturating_sub(idle)
        };
        if available == 0 {
            return Some(Vec::new());
        }
        let share = available.div_ceil(workers).clamp(1, max);
        let taken: Vec<_> = q.jobs.drain(..share).collect();
        if !*busy {
            q.busy_slots += 1;
            *busy = true;
        }
        Some(taken)
    }

    /// The request for one call of `sig`, with its time limit: the call's own, else the
    /// task's registered one, else the pool's.
    fn call_request(&self, sig: Signature) -> CallRequest {
        let args = vec![sig.args.clone()];
        self.request(sig, args)
    }

    fn request(&self, sig: Signature, args: Vec<Vec<u8>>) -> CallRequest {
        let registered = Registry::global()
            .get(&sig.task)
            .ok()
            .map(|e| (e.options)());
        let time_limit = sig
            .options
            .time_limit
            .or_else(|| registered.and_then(|o| o.time_limit))
            .or(self.config.time_limit);
        CallRequest {
            task: sig.task,
            codec: sig.codec,
            args,
            time_limit,
            cancel: None,
            scoped: false,
        }
    }

    /// Queues `job` for the slots; false (and not queued) once the pool is shut down.
    fn push(&self, job: Arc<dyn ProcJob>) -> bool {
        {
            let mut q = self.lock();
            if q.shutdown {
                return false;
            }
            q.jobs.push_back(job);
        }
        self.cond.notify_one();
        true
    }

    fn set_pid(&self, index: usize, pid: Option<u32>) {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())[index] = pid;
    }
}

fn spawn_slot(shared: &Arc<Shared>, index: usize) -> io::Result<JoinHandle<()>> {
    let s = shared.clone();
    std::thread::Builder::new()
        .name(format!("lovage-proc-{index}"))
        .spawn(move || slot::Slot::new(s, index).run())
}

/// Builds a [`ProcessPool`].
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    workers: usize,
    program: Option<PathBuf>,
    max_tasks_per_child: Option<usize>,
    time_limit: Option<Duration>,
    initializer: Option<Signature>,
    max_batch: usize,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            program: None,
            max_tasks_per_child: None,
            time_limit: None,
            initializer: None,
            max_batch: 256,
        }
    }
}

impl ProcessPoolBuilder {
    /// Number of child processes (default: the number of CPUs; at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The executable to start as a child (default: the current executable). It must call
    /// [`child_main`] first and register the same tasks.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Replace a child after it has run this many tasks (like Python's `max_tasks_per_child`).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// Hard time limit for tasks that set none themselves: the child is killed and the task fails
    /// with `TimeLimitExceeded`.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// A registered task each child runs once before its first task (e.g. to open a
    /// connection or load a model); its result is discarded, its failure fails the tasks sent to
    /// that child with `InitializerFailed`.
    pub fn initializer<R>(mut self, sig: TypedSignature<R>) -> Self
    where
        R: DeserializeOwned,
    {
        self.initializer = Some(sig.into_signature());
        self
    }

    /// Most requests in flight to one child at a time (default 256). Batches are sized to about
    /// a millisecond of work, up to this bound.
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Starts the supervisor threads; children start on first use.
    pub fn build(self) -> std::io::Result<ProcessPool> {
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe()?,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                shutdown: false,
                busy_slots: 0,
            }),
            cond: Condvar::new(),
            config: Config {
                program,
                max_tasks_per_child: self.max_tasks_per_child,
                time_limit: self.time_limit,
                initializer: self.initializer,
                max_batch: self.max_batch,
            },
            limit: AtomicUsize::new(self.workers),
            pids: Mutex::new(vec![None; self.workers]),
        });
        let mut threads = Vec::new();
        for index in 0..self.workers {
            match spawn_slot(&shared, index) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    shared.lock().shutdown = true;
                    shared.cond.notify_all();
                    return Err(e);
                }
            }
        }
        Ok(ProcessPool {
            shared,
            threads: Mutex::new(threads),
        })
    }
}

/// A pool of child processes running registered tasks, with the same handle API as
/// [`ThreadPool`](crate::ThreadPool).
///
/// A child that panics with abort, segfaults, calls `exit` or is killed fails only the task it
/// was running (`WorkerLost`) and is replaced; the pool keeps going.
///
/// ```
/// // With the `lovage` crate this is `#[lovage::task]` and `lovage::init()`.
/// #[lovage_macros::task(crate = lovage_core)]
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     lovage_pool::child_main(); // in a child, serves tasks and never returns
///     let pool = lovage_pool::ProcessPool::new(2);
///     assert_eq!(pool.submit(square::s(7)).result().unwrap(), 49);
///     let squares: Vec<u64> = pool.map(square::s, 0..100, 10).map(Result::unwrap).collect();
///     assert_eq!(squares[99], 9801);
/// }
/// ```
pub struct ProcessPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ProcessPool {
    /// A pool of `workers` child processes of the current executable.
    ///
    /// # Panics
    /// If the current executable cannot be found or threads cannot start; use
    /// [`ProcessPool::builder`] to get the error instead.
    #[allow(clippy::expect_used)] // documented above; the builder returns the error
    pub fn new(workers: usize) -> Self {
        Self::builder()
            .workers(workers)
            .build()
            .expect("cannot start the process pool")
    }

    /// A builder for a pool with more settings.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// Number of slots that take work (each runs one child; see [`resize`](Self::resize)).
    pub fn workers(&self) -> usize {
        self.shared.limit.load(Ordering::SeqCst)
    }

    /// Sets the number of slots that take work (at least 1). Shrinking never stops a running
    /// call: a slot beyond the new size finishes the calls it has sent, then idles (its child
    /// stays, ready for a grow). Growing wakes idle slots first and starts new ones only past
    /// every slot started so far. Fails after [`shutdown`](Self::shutdown), or when a new
    /// slot's thread cannot start (those started before it then take work).
    pub fn resize(&self, n: usize) -> std::io::Result<()> {
        let n = n.max(1);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if self.shared.lock().shutdown {
            return Err(io::Error::other("the process pool is shut down"));
        }
        let mut started = self
            .shared
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let mut result = Ok(());
        while started < n {
            self.shared
                .pids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(None);
            match spawn_slot(&self.shared, started) {
                Ok(t) => {
                    threads.push(t);
                    started += 1;
                }
                Err(e) => {
                    self.shared
                        .pids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop();
                    result = Err(e);
                    break;
                }
            }
        }
        {
            let _q = self.shared.lock();
            self.shared.limit.store(n.min(started), Ordering::SeqCst);
        }
        self.shared.cond.notify_all();
        result
    }

    /// Process ids of the children running now (a child starts on first use).
    pub fn child_pids(&self) -> Vec<u32> {
        self.shared
            .pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    fn request(&self, sig: Signature, args: Vec<Vec<u8>>) -> CallRequest {
        self.shared.request(sig, args)
    }

    fn enqueue<T: Send + 'static>(&self, request: CallRequest, decode: Decode<T>) -> TaskHandle<T> {
        let cell = Arc::new(ProcCell {
            completion: Completion::default(),
            request,
            decode,
        });
        if !self.shared.push(cell.clone()) {
            cell.completion
                .fail_pending(crate::thread::shutdown_error());
        }
        TaskHandle::from_shared(cell)
    }

    /// Sends a call of a registered task to a child; returns its handle.
    pub fn submit<R>(&self, sig: TypedSignature<R>) -> TaskHandle<R>
    where
        R: DeserializeOwned + Send + 'static,
    {
        if let Err(e) = sig.check() {
            return TaskHandle::already_failed(e.into());
        }
        let sig = sig.into_signature();
        let args = vec![sig.args.clone()];
        let req = self.request(sig, args);
        self.enqueue(req, decode_single::<R>)
    }

    /// Sends a call whose result stays encoded (bytes in the signature's codec).
    pub fn submit_raw(&self, sig: Signature) -> TaskHandle<Vec<u8>> {
        self.submit_raw_cancellable(sig, None)
    }

    /// Like [`submit_raw`](Self::submit_raw), with a token: cancelled as revoked, the child
    /// running the call is killed and the call fails `Revoked`; cancelled for its soft time
    /// limit, the child is signalled so `lovage::check_cancelled()` there returns the error.
    pub fn submit_raw_cancellable(
        &self,
        sig: Signature,
        token: Option<CancelToken>,
    ) -> TaskHandle<Vec<u8>> {
        let args = vec![sig.args.clone()];
        let mut req = self.request(sig, args);
        req.cancel = token;
        self.enqueue(req, decode_raw)
    }

    /// Runs the task built by `make` on every item, `chunksize` calls per request, and yields the
    /// results in input order. Input is read lazily. A child that dies while running a chunk
    /// fails that chunk's items with `WorkerLost`.
    /// See the example on [`ProcessPool`].
    pub fn map<I, R, M>(
        &self,
        make: M,
        items: I,
        chunksize: usize,
    ) -> impl Iterator<Item = Result<R, TaskError>> + '_
    where
        I: IntoIterator,
        I::IntoIter: 'static,
        M: Fn(I::Item) -> TypedSignature<R> + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        OrderedChunks::new(
            items.into_iter(),
            chunksize,
            self.workers() * 4,
            move |chunk: Vec<I::Item>| self.submit_chunk(chunk.into_iter().map(&make).collect()),
        )
    }

    fn submit_chunk<R>(&self, sigs: Vec<TypedSignature<R>>) -> TaskHandle<ChunkResults<R>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let Some(first) = sigs.first() else {
            return TaskHandle::already_failed(TaskError::new(
                lovage_core::kinds::FAILED,
                "empty chunk",
            ));
        };
        let base = first.signature().clone();
        let mut args = Vec::with_capacity(sigs.len());
        for s in sigs {
            if let Err(e) = s.check() {
                return TaskHandle::already_failed(e.into());
            }
            args.push(s.into_signature().args);
        }
        let req = self.request(base, args);
        self.enqueue(req, decode_chunk::<R>)
    }

    /// Stops the pool: new submissions fail with `Shutdown`; with `cancel_pending`, queued tasks
    /// are cancelled (running ones finish); with `wait`, blocks until every child has exited.
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let cancelled: Vec<_> = {
            let mut q = self.shared.lock();
            q.shutdown = true;
            if cancel_pending {
                q.jobs.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for job in cancelled {
            job.cancel();
        }
        self.shared.cond.notify_all();
        if wait {
            let threads =
                std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.workers())
            .field("program", &self.shared.config.program)
            .finish()
    }
}
