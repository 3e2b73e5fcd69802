//! A work-stealing thread pool with the `concurrent.futures` surface.
//!
//! Submissions from outside the pool go to a shared injector queue; a task submitted from inside
//! a worker goes to that worker's own deque, where idle workers steal it (the rayon layout).
//! Idle workers spin briefly, then sleep on a condition variable; a submitter wakes one only
//! when the sleeper count says someone sleeps, so a busy pool makes no system calls per task.
//!
//! The pool can be resized while it runs ([`ThreadPool::resize`]): threads numbered at or
//! above the size park on their own condition variable (after the job they are running) and
//! wake when it grows again; growing past every thread started so far starts more.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use lovage_core::{kinds, TaskError};

use crate::handle::{Completion, HasCompletion, TaskHandle};
use crate::ordered::OrderedChunks;

/// A queued unit of work, type-erased.
trait Job: Send + Sync {
    /// Runs the job if it was not cancelled; either way releases its closure.
    fn run(self: Arc<Self>);
    /// Cancels the job if it has not started.
    fn cancel(&self);
    /// Fails the job with `err` if it has not started, and releases its closure.
    fn reject(self: Arc<Self>, err: TaskError);
}

type JobRef = Arc<dyn Job>;

/// A closure and its result cell in one allocation.
struct ThreadJob<T, F> {
    completion: Completion<T>,
    func: UnsafeCell<Option<F>>,
}

// SAFETY: `func` is touched only by `run`, and a job is queued exactly once, so one thread at a
// time takes the closure out; the completion synchronises itself.
unsafe impl<T: Send, F: Send> Sync for ThreadJob<T, F> {}

impl<T, F> Job for ThreadJob<T, F>
where
    T: Send,
    F: FnOnce() -> Result<T, TaskError> + Send,
{
    fn run(self: Arc<Self>) {
        // SAFETY: see the `Sync` impl: this is the one place the closure is taken.
        let Some(func) = (unsafe { (*self.func.get()).take() }) else {
            return;
        };
        if !self.completion.try_start() {
            return; // cancelled: `func` drops here, releasing whatever it captured
        }
        let result = catch_unwind(AssertUnwindSafe(func))
            .unwrap_or_else(|p| Err(TaskError::from_panic(&*p)));
        self.completion.finish(result);
    }

    fn cancel(&self) {
        self.completion.cancel();
    }

    fn reject(self: Arc<Self>, err: TaskError) {
        self.completion.fail_pending(err);
        self.run();
    }
}

impl<T: Send, F: Send> HasCompletion<T> for ThreadJob<T, F> {
    fn completion(&self) -> &Completion<T> {
        &self.completion
    }
}

struct Shared {
    injector: Injector<JobRef>,
    stealers: Vec<Stealer<JobRef>>,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    sleep_cond: Condvar,
    /// Threads numbered at or above this park (see [`ThreadPool::resize`]).
    limit: AtomicUsize,
    /// Where parked threads wait, apart from the sleepers, so that waking a sleeper for a new
    /// job never wakes a parked thread instead.
    park_cond: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    /// Takes any queued job: from the injector, then from the workers' deques.
    fn steal_any(&self) -> Option<JobRef> {
        loop {
            let mut retry = false;
            match self.injector.steal() {
                Steal::Success(j) => return Some(j),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for s in &self.stealers {
                match s.steal() {
                    Steal::Success(j) => return Some(j),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    fn has_queued(&self) -> bool {
        !self.injector.is_empty() || self.stealers.iter().any(|s| !s.is_empty())
    }

    fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.sleep_cond.notify_one();
        }
    }

    fn wake_all(&self) {
        let _g = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sleep_cond.notify_all();
        self.park_cond.notify_all();
    }

    /// Whether thread `index` is beyond the pool's size now.
    fn over_limit(&self, index: usize) -> bool {
        index >= self.limit.load(Ordering::SeqCst)
    }

    /// Cancels and releases every queued job.
    fn cancel_queued(&self) {
        while let Some(job) = self.steal_any() {
            job.cancel();
            job.run();
        }
    }
}

/// What a worker thread knows about itself, reachable through a thread-local.
struct WorkerContext {
    shared: Arc<Shared>,
    local: Worker<JobRef>,
    index: usize,
    /// Whether the other threads can steal from `local`: not for threads started by a resize
    /// (the stealers are fixed at build), which therefore never take batches into it.
    stealable: bool,
}

impl WorkerContext {
    fn find_job(&self) -> Option<JobRef> {
        if let Some(j) = self.local.pop() {
            return Some(j);
        }
        // Take a batch only when the queue is long: batches make tiny tasks cheap, but with a
        // few long tasks they would park work behind a busy worker while another sits idle.
        let batch = self.stealable && self.shared.injector.len() > 4 * self.shared.stealers.len();
        loop {
            let stolen = if batch {
                self.shared.injector.steal_batch_and_pop(&self.local)
            } else {
                self.shared.injector.steal()
            };
            match stolen {
                Steal::Success(j) => return Some(j),
                Steal::Retry => continue,
                Steal::Empty => break,
            }
        }
        let n = self.shared.stealers.len();
        for k in 1..=n {
            let victim = &self.shared.stealers[(self.index + k) % n];
            if self.stealable && (self.index + k) % n == self.index {
                continue; // its own deque
            }
            loop {
                let stolen = if self.stealable {
                    victim.steal_batch_and_pop(&self.local)
                } else {
                    victim.steal()
                };
                match stolen {
                    Steal::Success(j) => return Some(j),
                    Steal::Retry => continue,
                    Steal::Empty => break,
                }
            }
        }
        None
    }
}

thread_local! {
    static CURRENT_WORKER: Cell<*const WorkerContext> = const { Cell::new(std::ptr::null()) };
    /// The pool this thread runs jobs for: a worker thread's or a stand-in's (see [`blocking`]).
    static CURRENT_POOL: std::cell::RefCell<Option<Arc<Shared>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, a blocking wait of a task a worker runs (one whose context lends a slot gate),
/// as Dask's `secede`/`rejoin`: the task's slot goes back to the worker for the wait, and a
/// stand-in thread runs the pool's queued jobs meanwhile, so the pool keeps its number of
/// running threads and a tree of waiting parents cannot hold every thread. Elsewhere `f` just
/// runs.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let in_task = lovage_core::context::current().is_some_and(|t| t.slots.is_some());
    let pool = CURRENT_POOL.with(|p| p.borrow().clone());
    let (Some(shared), true) = (pool, in_task) else {
        return f();
    };
    struct Release(Arc<AtomicBool>, Arc<Shared>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            self.1.wake_all();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (thread_stop, thread_shared) = (stop.clone(), shared.clone());
    let started = std::thread::Builder::new()
        .name("lovage-pool-standin".into())
        .spawn(move || stand_in(thread_shared, thread_stop));
    if let Err(e) = started {
        tracing::warn!(error = %e, "no stand-in thread for a waiting task; waiting in its slot");
        return f();
    }
    let _release = Release(stop, shared);
    lovage_core::context::seceded(f)
}

/// A stand-in for a pool thread whose task waits: runs queued jobs until `stop`.
fn stand_in(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    CURRENT_POOL.with(|p| *p.borrow_mut() = Some(shared.clone()));
    while !stop.load(Ordering::SeqCst) && !shared.shutdown.load(Ordering::SeqCst) {
        if let Some(job) = shared.steal_any() {
            job.run();
            continue;
        }
        let guard = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !shared.has_queued() && !stop.load(Ordering::SeqCst) {
            // Bounded: a stop that raced the check above is seen at the next turn.
            drop(
                shared
                    .sleep_cond
                    .wait_timeout(guard, Duration::from_millis(50))
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
    CURRENT_POOL.with(|p| *p.borrow_mut() = None);
}

/// Runs `f` with this thread's worker context, if this thread is a pool worker.
fn with_current_worker<R>(f: impl FnOnce(Option<&WorkerContext>) -> R) -> R {
    CURRENT_WORKER.with(|c| {
        let p = c.get();
        // SAFETY: the pointer is set for the whole life of the worker thread's main loop, which
        // owns the context on its stack, and cleared before the context is dropped.
        f(unsafe { p.as_ref() })
    })
}

/// On a pool worker thread, runs queued jobs until `done()` holds or the queues are empty, so a
/// task waiting for another task of the same pool cannot deadlock the pool.
pub(crate) fn help_while(done: impl Fn() -> bool) {
    with_current_worker(|ctx| {
        if let Some(ctx) = ctx {
            while !done() {
                match ctx.find_job() {
                    Some(job) => job.run(),
                    None => break,
                }
            }
        }
    })
}

const SPIN_ROUNDS: u32 = 64;

fn worker_main(ctx: WorkerContext) {
    CURRENT_WORKER.with(|c| c.set(&ctx));
    CURRENT_POOL.with(|p| *p.borrow_mut() = Some(ctx.shared.clone()));
    let shared = &ctx.shared;
    let mut idle = 0u32;
    loop {
        // Beyond the pool's size: park once its own deque is empty (nobody may be able to
        // steal from it), until the pool grows again or shuts down.
        if shared.over_limit(ctx.index) && ctx.local.is_empty() {
            let mut guard = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            while shared.over_limit(ctx.index) && !shared.shutdown.load(Ordering::SeqCst) {
                guard = shared
                    .park_cond
                    .wait(guard)
                    .unwrap_or_else(|p| p.into_inner());
            }
            drop(guard);
            idle = 0;
        }
        if let Some(job) = ctx.find_job() {
            job.run();
            idle = 0;
            continue;
        }
        if shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        idle += 1;
        if idle < SPIN_ROUNDS {
            if idle < 8 {
                for _ in 0..(1 << idle) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        let guard = shared.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Checked under the lock a resize notifies under, so a thread parked by a shrink is
        // never left among the sleepers (where a wake meant for a job could pick it).
        if !shared.has_queued()
            && !shared.shutdown.load(Ordering::SeqCst)
            && !shared.over_limit(ctx.index)
        {
            drop(
                shared
                    .sleep_cond
                    .wait(guard)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        idle = 0;
    }
    CURRENT_WORKER.with(|c| c.set(std::ptr::null()));
    CURRENT_POOL.with(|p| *p.borrow_mut() = None);
}

/// Builds a [`ThreadPool`] with a chosen size and thread names.
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    workers: usize,
    thread_name: String,
    stack_size: Option<usize>,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            thread_name: "lovage-worker".into(),
            stack_size: None,
        }
    }
}

impl ThreadPoolBuilder {
    /// Number of worker threads (default: the number of CPUs; at least 1).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Prefix of the worker threads' names (default `lovage-worker`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Stack size of each worker thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Starts the threads.
    pub fn build(self) -> std::io::Result<ThreadPool> {
        let locals: Vec<Worker<JobRef>> = (0..self.workers).map(|_| Worker::new_fifo()).collect();
        let shared = Arc::new(Shared {
            injector: Injector::new(),
            stealers: locals.iter().map(|w| w.stealer()).collect(),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            sleep_cond: Condvar::new(),
            limit: AtomicUsize::new(self.workers),
            park_cond: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(self.workers);
        for (index, local) in locals.into_iter().enumerate() {
            let ctx = WorkerContext {
                shared: shared.clone(),
                local,
                index,
                stealable: true,
            };
            match spawn_worker(&self.thread_name, self.stack_size, ctx) {
                Ok(h) => threads.push(h),
                Err(e) => {
                    shared.shutdown.store(true, Ordering::SeqCst);
                    shared.wake_all();
                    return Err(e);
                }
            }
        }
        Ok(ThreadPool {
            shared,
            threads: Mutex::new(Threads {
                handles: threads,
                started: self.workers,
            }),
            thread_name: self.thread_name,
            stack_size: self.stack_size,
        })
    }
}

fn spawn_worker(
    name: &str,
    stack_size: Option<usize>,
    ctx: WorkerContext,
) -> std::io::Result<JoinHandle<()>> {
    let mut b = std::thread::Builder::new().name(format!("{name}-{}", ctx.index));
    if let Some(s) = stack_size {
        b = b.stack_size(s);
    }
    b.spawn(move || worker_main(ctx))
}

/// The pool's threads: their handles (taken by a waiting shutdown) and how many were started.
struct Threads {
    handles: Vec<JoinHandle<()>>,
    started: usize,
}

/// A pool of worker threads running closures: `submit` returns a [`TaskHandle`], `map` runs a
/// function over an iterator in order, `scope` lets tasks borrow from the caller's stack.
///
/// A panicking task fails alone (its handle reports `Panic`); the pool lives on. Dropping the
/// pool waits for queued tasks to finish, like `with ThreadPoolExecutor() as ex:`.
///
/// ```
/// use lovage_pool::ThreadPool;
/// let pool = ThreadPool::new(2);
/// let h = pool.submit(|| 6 * 7);
/// assert_eq!(h.result().unwrap(), 42);
/// let squares: Vec<u64> = pool.map(|x: u64| x * x, 0..10, 4).map(Result::unwrap).collect();
/// assert_eq!(squares[9], 81);
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: Mutex<Threads>,
    thread_name: String,
    stack_size: Option<usize>,
}

impl ThreadPool {
    /// A pool of `workers` threads.
    ///
    /// # Panics
    /// If the operating system refuses to start a thread; use [`ThreadPool::builder`] to get the
    /// error instead.
    #[allow(clippy::expect_used)] // documented above; the builder returns the error
    pub fn new(workers: usize) -> Self {
        Self::builder()
            .workers(workers)
            .build()
            .expect("cannot start the thread pool's threads")
    }

    /// A builder for a pool with more settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// Number of worker threads that take jobs (the pool's size; see [`resize`](Self::resize)).
    pub fn workers(&self) -> usize {
        self.shared.limit.load(Ordering::SeqCst)
    }

    /// Sets the number of threads that take jobs (at least 1). Shrinking never stops a
    /// running job: a thread beyond the new size finishes its job, then parks. Growing wakes
    /// parked threads first and starts new ones only past every thread started so far.
    /// Fails after [`shutdown`](Self::shutdown), or when a new thread cannot start (the
    /// threads started before that one then take jobs).
    pub fn resize(&self, n: usize) -> std::io::Result<()> {
        let n = n.max(1);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_shutdown() {
            return Err(std::io::Error::other("the thread pool is shut down"));
        }
        let mut result = Ok(());
        while threads.started < n {
            let ctx = WorkerContext {
                shared: self.shared.clone(),
                local: Worker::new_fifo(),
                index: threads.started,
                stealable: false,
            };
            match spawn_worker(&self.thread_name, self.stack_size, ctx) {
                Ok(h) => {
                    threads.handles.push(h);
                    threads.started += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.shared
            .limit
            .store(n.min(threads.started), Ordering::SeqCst);
        // Under the sleep lock (see `worker_main`): parked threads within the size wake, and
        // sleepers beyond it go to park.
        self.shared.wake_all();
        result
    }

    /// Schedules `f` and returns its handle. After [`shutdown`](Self::shutdown) the handle is
    /// already failed with `Shutdown`.
    pub fn submit<F, T>(&self, f: F) -> TaskHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_fallible(move || Ok(f()))
    }

    /// Like [`submit`](Self::submit) for a closure that can fail: its `Err` becomes the
    /// handle's error as it is, instead of a value of type `Result`.
    pub fn submit_fallible<F, T>(&self, f: F) -> TaskHandle<T>
    where
        F: FnOnce() -> Result<T, TaskError> + Send + 'static,
        T: Send + 'static,
    {
        let job = Arc::new(ThreadJob {
            completion: Completion::default(),
            func: UnsafeCell::new(Some(f)),
        });
        self.push(job.clone());
        TaskHandle::from_shared(job)
    }

    /// Schedules `f` without a handle (fire and forget). A panic in `f` is caught and dropped.
    pub fn spawn<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        drop(self.submit(f));
    }

    fn push(&self, job: JobRef) {
        let shared = &self.shared;
        if shared.shutdown.load(Ordering::Acquire) {
            job.reject(shutdown_error());
            return;
        }
        let pushed_locally = with_current_worker(|ctx| match ctx {
            Some(ctx) if Arc::ptr_eq(&ctx.shared, shared) => {
                ctx.local.push(job.clone());
                true
            }
            _ => false,
        });
        if !pushed_locally {
            shared.injector.push(job);
        }
        shared.wake_one();
        // A shutdown that raced with this push may have let the workers exit already; make sure
        // nothing is left queued with nobody to run it.
        if shared.shutdown.load(Ordering::SeqCst) {
            shared.cancel_queued();
        }
    }

    /// Runs `f` on every item, `chunksize` items per task, and yields the results in input
    /// order. The input is read lazily: only a few chunks per worker are in flight, so an
    /// endless iterator is fine. A panic on one item becomes that item's `Err`.
    pub fn map<I, F, R>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> impl Iterator<Item = Result<R, TaskError>> + '_
    where
        I: IntoIterator,
        I::IntoIter: 'static,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let f = Arc::new(f);
        OrderedChunks::new(
            items.into_iter(),
            chunksize,
            self.workers() * 4,
            move |chunk| {
                let f = f.clone();
                self.submit(move || run_chunk(&*f, chunk))
            },
        )
    }

    /// Like [`map`](Self::map) but yields results as chunks finish, each with its input index.
    pub fn map_unordered<I, F, R>(
        &self,
        f: F,
        items: I,
        chunksize: usize,
    ) -> MapUnordered<'_, I::IntoIter, F, R>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let mut m = MapUnordered {
            pool: self,
            items: items.into_iter(),
            next_index: 0,
            f: Arc::new(f),
            chunksize: chunksize.max(1),
            tx,
            rx,
            in_flight: 0,
            current: Vec::new().into_iter(),
            max_in_flight: self.workers() * 4,
        };
        m.fill();
        m
    }

    /// Runs `f` with a [`Scope`] whose tasks may borrow from the caller's stack; returns when
    /// `f` has returned and every task submitted in the scope has finished. While waiting, the
    /// calling thread runs queued tasks itself.
    pub fn scope<'env, F, R>(&self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            pool: self,
            state: Arc::new(ScopeState::default()),
            _scope: PhantomData,
            _env: PhantomData,
        };
        let out = catch_unwind(AssertUnwindSafe(|| f(&scope)));
        scope.wait_all();
        match out {
            Ok(r) => r,
            Err(p) => resume_unwind(p),
        }
    }

    /// Stops the pool. New submissions fail with `Shutdown`. With `cancel_pending`, tasks that
    /// have not started are cancelled; otherwise they still run. With `wait`, blocks until the
    /// worker threads have exited.
    pub fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if cancel_pending {
            self.shared.cancel_queued();
        }
        self.shared.wake_all();
        if wait {
            let me = std::thread::current().id();
            let threads = std::mem::take(
                &mut self
                    .threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .handles,
            );
            for t in threads {
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
    }

    /// True after [`shutdown`](Self::shutdown).
    pub fn is_shutdown(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("workers", &self.workers())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

/// Runs one chunk: each item under its own panic guard, so one bad item fails alone.
fn run_chunk<T, R>(f: &impl Fn(T) -> R, chunk: Vec<T>) -> Vec<Result<R, TaskError>> {
    chunk
        .into_iter()
        .map(|item| {
            catch_unwind(AssertUnwindSafe(|| f(item))).map_err(|p| TaskError::from_panic(&*p))
        })
        .collect()
}

fn next_chunk<I: Iterator>(items: &mut I, size: usize) -> Vec<I::Item> {
    items.by_ref().take(size).collect()
}

/// The iterator returned by [`ThreadPool::map_unordered`]: `(input index, result)` pairs in
/// completion order.
pub struct MapUnordered<'p, I: Iterator, F, R> {
    pool: &'p ThreadPool,
    items: I,
    next_index: usize,
    f: Arc<F>,
    chunksize: usize,
    tx: mpsc::Sender<Vec<(usize, Result<R, TaskError>)>>,
    rx: mpsc::Receiver<Vec<(usize, Result<R, TaskError>)>>,
    in_flight: usize,
    current: std::vec::IntoIter<(usize, Result<R, TaskError>)>,
    max_in_flight: usize,
}

impl<I, F, R> MapUnordered<'_, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    fn fill(&mut self) {
        while self.in_flight < self.max_in_flight {
            let chunk = next_chunk(&mut self.items, self.chunksize);
            if chunk.is_empty() {
                break;
            }
            let first = self.next_index;
            let n = chunk.len();
            self.next_index += n;
            self.in_flight += 1;
            let (f, tx) = (self.f.clone(), self.tx.clone());
            let handle = self.pool.submit(move || {
                let out = run_chunk(&*f, chunk).into_iter().enumerate();
                let _ = tx.send(out.map(|(i, r)| (first + i, r)).collect());
            });
            // A chunk that never runs still reports, so the iterator cannot hang.
            let tx = self.tx.clone();
            handle.add_done_callback(move |r| {
                if let Err(e) = r {
                    let _ = tx.send((first..first + n).map(|i| (i, Err(e.clone()))).collect());
                }
            });
        }
    }
}

impl<I, F, R> Iterator for MapUnordered<'_, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'static,
    F: Fn(I::Item) -> R + Send + Sync + 'static,
    R: Send + 'static,
{
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(r);
            }
            if self.in_flight == 0 {
                return None;
            }
            let batch = self.rx.recv().ok()?;
            self.in_flight -= 1;
            self.fill();
            self.current = batch.into_iter();
        }
    }
}

#[derive(Default)]
struct ScopeState {
    pending: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

/// Decrements the scope's pending count when the task's closure is dropped, run or not.
struct ScopeGuard(Arc<ScopeState>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _g = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.0.cond.notify_all();
        }
    }
}

/// Tasks submitted through a scope may borrow anything that outlives the scope; see
/// [`ThreadPool::scope`].
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'scope ThreadPool,
    state: Arc<ScopeState>,
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// Schedules `f`, which may borrow from the enclosing stack, and returns its handle.
    pub fn submit<F, T>(&'scope self, f: F) -> TaskHandle<T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'static,
    {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        let guard = ScopeGuard(self.state.clone());
        let wrapped = move || {
            let _guard = guard;
            Ok(f())
        };
        let job = Arc::new(ThreadJob {
            completion: Completion::default(),
            func: UnsafeCell::new(Some(wrapped)),
        });
        let as_job: Arc<dyn Job + 'scope> = job.clone();
        let as_result: Arc<dyn HasCompletion<T> + 'scope> = job;
        // SAFETY: the closure is the only part that borrows for 'scope. `ThreadPool::scope` does
        // not return before every scoped closure has been run or dropped (the guard inside it
        // counts), after which the job holds `None` in its closure slot and nothing borrowed.
        let (as_job, as_result) = unsafe {
            (
                std::mem::transmute::<Arc<dyn Job + 'scope>, Arc<dyn Job>>(as_job),
                std::mem::transmute::<Arc<dyn HasCompletion<T> + 'scope>, Arc<dyn HasCompletion<T>>>(
                    as_result,
                ),
            )
        };
        self.pool.push(as_job);
        TaskHandle::from_shared(as_result)
    }

    /// Schedules `f`, which may borrow from the enclosing stack, without a handle; the scope
    /// still waits for it.
    pub fn spawn<F>(&'scope self, f: F)
    where
        F: FnOnce() + Send + 'scope,
    {
        drop(self.submit(f));
    }

    fn wait_all(&self) {
        let shared = &self.pool.shared;
        while self.state.pending.load(Ordering::Acquire) > 0 {
            if let Some(job) = shared.steal_any() {
                job.run();
                continue;
            }
            let g = self.state.lock.lock().unwrap_or_else(|p| p.into_inner());
            if self.state.pending.load(Ordering::Acquire) > 0 {
                // Wake up now and then to help with work queued meanwhile.
                let _ = self.state.cond.wait_timeout(g, Duration::from_millis(1));
            }
        }
    }
}

/// Error for a submission to a pool that was shut down.
pub(crate) fn shutdown_error() -> TaskError {
    TaskError::new(
        kinds::SHUTDOWN,
        "the pool was shut down before the task could run",
    )
}
