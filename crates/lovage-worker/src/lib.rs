//! The worker: reserves tasks from a broker, runs them on a thread or process pool, records their
//! results, retries failures by their policy, and renews the leases of what it runs.
//!
//! Three threads share the work:
//! - the **fetcher** (the caller of [`Worker::run`]) reserves batches, bounded by concurrency +
//!   prefetch, drops revoked and expired tasks, and hands the rest to the pool;
//! - the **finisher** collects outcomes as the pool reports them and writes them in batches:
//!   results first, then acks (a crash between the two runs the task again: at least once);
//!   failures are retried through the broker with backoff, or dead-lettered;
//! - the **keeper** renews the leases of running tasks and writes the worker's heartbeat.
//!
//! A broker that goes away is retried with backoff, logged once per outage; nothing is dropped.

mod signals;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lovage_broker::{
    Backend, BrokerError, Delivery, Envelope, Lease, ResultRecord, Timestamp, WorkerInfo,
};
use lovage_core::{
    kinds, parse_rate, CancelReason, CancelToken, Registry, RetryPolicy, Signature, TaskError,
    TaskId, TaskState,
};
use lovage_flow::Finished;
use lovage_pool::{Executor, ProcessPool, TaskHandle, ThreadPool};

pub use signals::install_signal_handlers;

/// Which pool runs the task bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Threads of this process: cheapest, a panic fails only its task.
    Threads,
    /// Child processes: a crash fails only its task; hard time limits kill the child.
    Processes,
}

impl std::str::FromStr for PoolKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "threads" | "thread" => Ok(PoolKind::Threads),
            "processes" | "process" | "prefork" => Ok(PoolKind::Processes),
            other => Err(format!(
                "unknown pool {other:?} (expected threads or processes)"
            )),
        }
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to consume, in no particular order (priority decides within them).
    pub queues: Vec<String>,
    /// Tasks running at once (pool size).
    pub concurrency: usize,
    /// Which pool.
    pub pool: PoolKind,
    /// Tasks reserved beyond those running, so the pool never waits for the broker.
    pub prefetch: usize,
    /// Lease on reserved tasks; renewed every third of it while they run.
    pub lease: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How long a reserve waits for work before checking for shutdown.
    pub poll: Duration,
    /// Results are kept this long (None: forever).
    pub result_ttl: Option<Duration>,
    /// Name part of the worker id (`name@host.pid`).
    pub name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkerConfig {
            queues: vec![lovage_broker::DEFAULT_QUEUE.to_owned()],
            concurrency: cpus,
            pool: PoolKind::Threads,
            prefetch: cpus * 64,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(2),
            poll: Duration::from_millis(500),
            result_ttl: Some(Duration::from_secs(24 * 3600)),
            name: "worker".into(),
        }
    }
}

/// Asks a running worker to stop: the first request is graceful (finish what runs), the
/// second immediate (return what runs to the queue and exit).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownState>);

#[derive(Default)]
struct ShutdownState {
    requests: AtomicU64,
}

impl Shutdown {
    /// Stop reserving, finish running tasks, then return.
    pub fn graceful(&self) {
        let _ = self
            .0
            .requests
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Return running tasks to the queue and return at once.
    pub fn immediate(&self) {
        self.0.requests.store(2, Ordering::SeqCst);
    }

    /// One more request: graceful the first time, immediate after.
    pub fn request(&self) {
        let n = self.0.requests.fetch_add(1, Ordering::SeqCst);
        if n >= 2 {
            self.0.requests.store(2, Ordering::SeqCst);
        }
    }

    fn level(&self) -> u64 {
        self.0.requests.load(Ordering::SeqCst)
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks that ended SUCCESS.
    pub succeeded: u64,
    /// Tasks that ended FAILURE.
    pub failed: u64,
    /// Failures sent back for a retry.
    pub retried: u64,
    /// Tasks dropped as revoked or expired.
    pub revoked: u64,
    /// Tasks handed back to the queue by an immediate shutdown.
    pub requeued: u64,
}

struct Running {
    lease: Lease,
    /// Cancelled when the task is revoked while running or passes its soft time limit.
    token: CancelToken,
    /// The pool's handle, to see when the task leaves the pool's queue and starts.
    handle: Option<TaskHandle<Vec<u8>>>,
    /// When the keeper first saw it running: the soft time limit counts from here, not from
    /// the time it waited in the pool as prefetch.
    run_started: Option<Instant>,
    soft_time_limit: Option<Duration>,
}

/// State shared by the worker's threads.
struct Shared {
    backend: Backend,
    config: WorkerConfig,
    id: String,
    info: Mutex<WorkerInfo>,
    running: Mutex<HashMap<TaskId, Running>>,
    /// Signalled when a running task is finished (room for more).
    room: Condvar,
    /// Rate-limited tasks waiting here for their booked slots.
    paced: Mutex<Vec<(Instant, Ready)>>,
    /// Signalled when `paced` changes.
    paced_changed: Condvar,
    /// Running tasks revoked while they ran: their outcome is recorded REVOKED.
    revoked_running: Mutex<HashSet<TaskId>>,
    shutdown: Shutdown,
    done: AtomicBool,
    report: Mutex<WorkerReport>,
    /// Set while the broker is failing, so an outage is logged once.
    broker_down: AtomicBool,
    /// Moving average of a task's run time, in microseconds (0: none measured yet).
    avg_run_us: AtomicU64,
}

/// Reserve about this much work beyond what runs: enough that the pool never waits for the
/// broker, little enough that one worker does not hoard slow tasks other workers could start.
const PREFETCH_WORK: Duration = Duration::from_millis(20);

/// How often a worker deletes results past their TTL.
const RESULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

impl Shared {
    /// How many tasks to hold beyond the running ones, from the measured task run time.
    fn prefetch(&self) -> usize {
        let avg = self.avg_run_us.load(Ordering::Relaxed);
        // No measurement yet (0): hold one extra task per slot.
        let per_slot = (PREFETCH_WORK.as_micros() as u64)
            .checked_div(avg)
            .map_or(1, |n| n.max(1) as usize);
        let adaptive = per_slot * self.config.concurrency;
        adaptive.min(self.config.prefetch)
    }

    fn observe_run(&self, took: Duration) {
        let us = took.as_micros().max(1) as u64;
        let old = self.avg_run_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.avg_run_us.store(new.max(1), Ordering::Relaxed);
    }

    fn running(&self) -> MutexGuard<'_, HashMap<TaskId, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a broker operation until it succeeds, backing off; gives up only on immediate
    /// shutdown (the leases then bring the tasks back).
    fn retry_broker<T>(&self, op: &str, f: impl FnMut() -> Result<T, BrokerError>) -> Option<T> {
        self.retry_broker_until(op, || self.shutdown.level() >= 2, f)
    }

    /// Like `retry_broker`, giving up as soon as `give_up()` holds (e.g. a graceful stop, for
    /// work not yet started such as reserving, or the end of the run, for the keeper).
    fn retry_broker_until<T>(
        &self,
        op: &str,
        give_up: impl Fn() -> bool,
        mut f: impl FnMut() -> Result<T, BrokerError>,
    ) -> Option<T> {
        let mut delay = Duration::from_millis(50);
        loop {
            match f() {
                Ok(v) => {
                    if self.broker_down.swap(false, Ordering::SeqCst) {
                        tracing::info!(worker = %self.id, "broker is back");
                    }
                    return Some(v);
                }
                Err(e) => {
                    if !self.broker_down.swap(true, Ordering::SeqCst) {
                        tracing::warn!(worker = %self.id, error = %e, "broker {op} failed; retrying with backoff until it answers");
                    }
                    if give_up() {
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Books rate-limit slots (shared by all workers, through the broker) for the tasks that
    /// have a rate limit: a task whose slot is now starts now, one whose slot is within
    /// [`PACE_HORIZON`] waits here for it, and the rest go back to the broker until slots free
    /// up, without counting an attempt. Returns the tasks to start now.
    fn hold_back_over_limit(&self, deliveries: Vec<Delivery>) -> Vec<Ready> {
        let mut now = Vec::with_capacity(deliveries.len());
        let mut limited: BTreeMap<(String, Duration), Vec<Ready>> = BTreeMap::new();
        for d in deliveries {
            let r = Ready {
                options: options_of(&d.envelope),
                d,
            };
            let env = &r.d.envelope;
            match r.options.rate_limit.as_deref().map(parse_rate) {
                None => now.push(r),
                Some(Ok(interval)) => limited
                    .entry((env.task.clone(), interval))
                    .or_default()
                    .push(r),
                Some(Err(e)) => {
                    tracing::warn!(task_id = %env.id, task = %env.task, error = %e, "ignoring a rate limit that does not parse");
                    now.push(r);
                }
            }
        }
        let horizon = PACE_HORIZON.min(self.config.lease / 4);
        for ((task, interval), held) in limited {
            let key = format!("task:{task}");
            let (slots, next) = self
                .retry_broker("rate limit", || {
                    self.backend
                        .rate_limits()
                        .acquire(&key, interval, held.len() as u32, horizon)
                })
                .unwrap_or((Vec::new(), interval));
            let mut held = held.into_iter();
            let started = Instant::now();
            for (slot, r) in slots.iter().zip(held.by_ref()) {
                if *slot <= Duration::from_millis(1) {
                    now.push(r);
                } else {
                    self.paced().push((started + *slot, r));
                }
            }
            self.paced_changed.notify_all();
            // The rest wait in the broker, spread one interval apart, from when slots free up.
            for (k, r) in held.enumerate() {
                let delay = next + interval * k as u32;
                tracing::debug!(task_id = %r.d.envelope.id, task = %task, ?delay, "over its rate limit: back to the broker");
                self.retry_broker("defer", || self.backend.broker().snooze(&r.d.lease, delay));
            }
        }
        now
    }

    fn paced(&self) -> MutexGuard<'_, Vec<(Instant, Ready)>> {
        self.paced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands tasks waiting for their rate-limit slots back to the broker (not an attempt).
    fn hand_back_paced(&self) {
        let left: Vec<(Instant, Ready)> = self.paced().drain(..).collect();
        for (_, r) in left {
            self.retry_broker("defer", || {
                self.backend.broker().snooze(&r.d.lease, Duration::ZERO)
            });
        }
    }

    fn flow_context(&self) -> lovage_flow::Context<'_> {
        lovage_flow::Context {
            backend: &self.backend,
            result_ttl: self.config.result_ttl,
            worker: Some(&self.id),
        }
    }

    /// Continues the workflows these tasks belong to, retrying while the broker is down.
    fn advance_flows(&self, finished: &[(&Envelope, Finished<'_>)]) {
        if finished.iter().all(|(env, _)| env.flow.is_empty()) {
            return;
        }
        let ctx = self.flow_context();
        self.retry_broker("continue workflows", || {
            lovage_flow::advance_many(&ctx, finished)
        });
    }

    /// Works out what follows these tasks in their workflows (joins and records done); the
    /// returned steps are for the caller to send (with the acks).
    fn plan_flows(&self, finished: &[(&Envelope, Finished<'_>)]) -> Option<Vec<Envelope>> {
        if finished.iter().all(|(env, _)| env.flow.is_empty()) {
            return Some(Vec::new());
        }
        let ctx = self.flow_context();
        self.retry_broker("continue workflows", || {
            lovage_flow::plan_many(&ctx, finished)
        })
    }

    fn record(
        &self,
        d: &Delivery,
        state: TaskState,
        value: Option<Vec<u8>>,
        error: Option<TaskError>,
        started: Option<Timestamp>,
    ) -> ResultRecord {
        let now = Timestamp::now();
        ResultRecord {
            id: d.envelope.id,
            task: d.envelope.task.clone(),
            state,
            value,
            codec: d.envelope.codec,
            error,
            attempts: d.envelope.attempts,
            worker: Some(self.id.clone()),
            started,
            updated: now,
            expires: self.config.result_ttl.map(|t| now + t),
        }
    }
}

/// One finished run, on its way from the pool to the finisher.
struct Outcome {
    delivery: Delivery,
    result: Result<Vec<u8>, TaskError>,
    started: Timestamp,
}

/// A worker bound to a backend. [`run`](Worker::run) blocks until it is shut down.
pub struct Worker {
    shared: Arc<Shared>,
    executor: Arc<dyn Executor>,
}

impl Worker {
    /// A worker with its pool started.
    pub fn new(backend: Backend, config: WorkerConfig) -> std::io::Result<Worker> {
        let executor: Arc<dyn Executor> = match config.pool {
            PoolKind::Threads => Arc::new(
                ThreadPool::builder()
                    .workers(config.concurrency)
                    .thread_name("lovage-task")
                    .build()?,
            ),
            PoolKind::Processes => {
                Arc::new(ProcessPool::builder().workers(config.concurrency).build()?)
            }
        };
        let host = hostname();
        let pid = std::process::id();
        let id = format!("{}@{host}.{pid}", config.name);
        let now = Timestamp::now();
        let info = WorkerInfo {
            id: id.clone(),
            host,
            pid,
            queues: config.queues.clone(),
            pool: format!(
                "{} x{}",
                match config.pool {
                    PoolKind::Threads => "threads",
                    PoolKind::Processes => "processes",
                },
                config.concurrency
            ),
            started: now,
            heartbeat: now,
            tasks_done: 0,
            active: 0,
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                backend,
                config,
                id,
                info: Mutex::new(info),
                running: Mutex::new(HashMap::new()),
                room: Condvar::new(),
                paced: Mutex::new(Vec::new()),
                paced_changed: Condvar::new(),
                revoked_running: Mutex::new(HashSet::new()),
                shutdown: Shutdown::default(),
                done: AtomicBool::new(false),
                report: Mutex::new(WorkerReport::default()),
                broker_down: AtomicBool::new(false),
                avg_run_us: AtomicU64::new(0),
            }),
            executor,
        })
    }

    /// The worker's id, `name@host.pid`.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// A handle to stop the worker from another thread (or a signal handler thread).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// Consumes the queues until shut down; returns counts of what happened.
    pub fn run(&self) -> WorkerReport {
        let s = &self.shared;
        tracing::info!(worker = %s.id, queues = ?s.config.queues, pool = %s.info.lock().unwrap_or_else(|p| p.into_inner()).pool, "worker started");
        s.retry_broker_until(
            "heartbeat",
            || s.shutdown.level() >= 1,
            || {
                s.backend
                    .presence()
                    .heartbeat(&s.info.lock().unwrap_or_else(|p| p.into_inner()))
            },
        );
        let (tx, rx) = mpsc::channel::<Outcome>();
        let finisher = {
            let s = s.clone();
            std::thread::Builder::new()
                .name("lovage-finisher".into())
                .spawn(move || finish_loop(&s, rx))
                .expect("start finisher thread")
        };
        let keeper = {
            let s = s.clone();
            std::thread::Builder::new()
                .name("lovage-keeper".into())
                .spawn(move || keep_loop(&s))
                .expect("start keeper thread")
        };
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lovage-pacer".into())
                .spawn_scoped(scope, || self.pace_loop(&tx))
                .expect("start pacer thread");
            self.fetch_loop(&tx);
            s.paced_changed.notify_all();
        });
        // The fetcher may have booked slots after the pacer left: hand those back too.
        s.hand_back_paced();
        drop(tx);
        if s.shutdown.level() >= 2 {
            self.requeue_running();
        } else {
            // Graceful: let what runs finish.
            let mut running = s.running();
            while !running.is_empty() && s.shutdown.level() < 2 {
                running = s
                    .room
                    .wait_timeout(running, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            drop(running);
            if s.shutdown.level() >= 2 {
                self.requeue_running();
            }
        }
        s.done.store(true, Ordering::SeqCst);
        if s.shutdown.level() < 2 {
            let _ = finisher.join();
        }
        let _ = keeper.join();
        let _ = s.backend.presence().unregister(&s.id);
        self.executor.shutdown(s.shutdown.level() < 2, true);
        let report = s.report.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tracing::info!(worker = %s.id, ?report, "worker stopped");
        report
    }

    fn fetch_loop(&self, tx: &mpsc::Sender<Outcome>) {
        let s = &self.shared;
        while s.shutdown.level() == 0 {
            let capacity = s.config.concurrency + s.prefetch();
            let room = {
                let mut running = s.running();
                while running.len() >= capacity && s.shutdown.level() == 0 {
                    running = s
                        .room
                        .wait_timeout(running, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                capacity.saturating_sub(running.len())
            };
            if s.shutdown.level() != 0 {
                break;
            }
            // Nothing reserved yet, so a graceful stop need not wait for the broker.
            let got = s.retry_broker_until(
                "reserve",
                || s.shutdown.level() >= 1,
                || {
                    s.backend.broker().reserve(
                        &s.config.queues,
                        room,
                        s.config.lease,
                        s.config.poll,
                    )
                },
            );
            let Some(deliveries) = got else { break };
            if deliveries.is_empty() {
                if s.running().is_empty() {
                    // Idle: what we measured may not fit the next tasks, so start cautious.
                    s.avg_run_us.store(0, Ordering::Relaxed);
                }
                continue;
            }
            let ids: Vec<TaskId> = deliveries.iter().map(|d| d.envelope.id).collect();
            let revoked: HashSet<TaskId> = s
                .retry_broker("revoked", || s.backend.broker().revoked(&ids))
                .unwrap_or_default()
                .into_iter()
                .collect();
            let now = Timestamp::now();
            let mut dropped = Vec::new();
            let mut ready = Vec::with_capacity(deliveries.len());
            for d in deliveries {
                let expired = d.envelope.expires.is_some_and(|e| e <= now);
                if revoked.contains(&d.envelope.id) || expired {
                    let why = if expired {
                        format!(
                            "expired at {} before a worker started it",
                            d.envelope.expires.expect("checked")
                        )
                    } else {
                        "revoked before it started".to_owned()
                    };
                    dropped.push((d, why));
                    continue;
                }
                ready.push(d);
            }
            for r in s.hold_back_over_limit(ready) {
                self.start(r, tx);
            }
            if !dropped.is_empty() {
                let records: Vec<ResultRecord> = dropped
                    .iter()
                    .map(|(d, why)| {
                        s.record(
                            d,
                            TaskState::Revoked,
                            None,
                            Some(TaskError::new(kinds::REVOKED, why.clone())),
                            None,
                        )
                    })
                    .collect();
                let leases: Vec<Lease> = dropped.iter().map(|(d, _)| d.lease).collect();
                if s.retry_broker("store results", || s.backend.results().store(&records))
                    .is_some()
                {
                    let finished: Vec<(&Envelope, Finished<'_>)> = records
                        .iter()
                        .zip(&dropped)
                        .filter_map(|(record, (d, _))| {
                            Some((&d.envelope, Finished::Failure(record.error.as_ref()?)))
                        })
                        .collect();
                    s.advance_flows(&finished);
                    s.retry_broker("ack", || s.backend.broker().complete(&leases));
                }
                s.report.lock().unwrap_or_else(|p| p.into_inner()).revoked += dropped.len() as u64;
            }
        }
    }

    /// Starts rate-limited tasks at their booked slots; on shutdown hands those still waiting
    /// back to the broker (not an attempt).
    fn pace_loop(&self, tx: &mpsc::Sender<Outcome>) {
        let s = &self.shared;
        let mut paced = s.paced();
        loop {
            if s.shutdown.level() != 0 {
                drop(paced);
                s.hand_back_paced();
                return;
            }
            let now = Instant::now();
            let due: Vec<Ready> = {
                let (ready, waiting): (Vec<_>, Vec<_>) =
                    paced.drain(..).partition(|(at, _)| *at <= now);
                *paced = waiting;
                ready.into_iter().map(|(_, r)| r).collect()
            };
            if !due.is_empty() {
                drop(paced);
                for r in due {
                    self.start(r, tx);
                }
                paced = s.paced();
                continue;
            }
            let wait = paced
                .iter()
                .map(|(at, _)| at.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            paced = s
                .paced_changed
                .wait_timeout(paced, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Hands a delivery to the pool; its outcome goes to the finisher.
    fn start(&self, r: Ready, tx: &mpsc::Sender<Outcome>) {
        let s = &self.shared;
        let Ready { d, options } = r;
        let env = &d.envelope;
        if options.track_started == Some(true) {
            let started = s.record(&d, TaskState::Started, None, None, Some(Timestamp::now()));
            s.retry_broker("store started", || {
                s.backend.results().store(std::slice::from_ref(&started))
            });
        }
        if options.acks_late == Some(false) {
            // Early ack: from here on the task is the worker's alone (at most once).
            s.retry_broker("ack", || s.backend.broker().complete(&[d.lease]));
        }
        let sig = Signature {
            task: env.task.clone(),
            args: env.args.clone(),
            codec: env.codec,
            options,
        };
        let token = CancelToken::new();
        s.running().insert(
            env.id,
            Running {
                lease: d.lease,
                token: token.clone(),
                handle: None,
                run_started: None,
                soft_time_limit: sig.options.soft_time_limit,
            },
        );
        tracing::debug!(task_id = %env.id, task = %env.task, attempt = env.attempts, "starting");
        let started = Timestamp::now();
        let id = env.id;
        let handle = self.executor.submit_cancellable(sig, token);
        let tx = tx.clone();
        handle.add_done_callback(move |result| {
            let _ = tx.send(Outcome {
                delivery: d,
                result: result.clone(),
                started,
            });
        });
        // Unless it already finished (and the finisher removed it), keep the handle for the keeper.
        if let Some(r) = s.running().get_mut(&id) {
            r.handle = Some(handle);
        }
    }

    /// Immediate shutdown: give every running task back to the queue.
    fn requeue_running(&self) {
        let s = &self.shared;
        let leases: Vec<Lease> = s.running().drain().map(|(_, r)| r.lease).collect();
        for l in &leases {
            if let Err(e) = s.backend.broker().retry(l, Duration::ZERO) {
                tracing::warn!(task_id = %l.id, error = %e, "could not requeue; its lease will bring it back");
            }
        }
        s.report.lock().unwrap_or_else(|p| p.into_inner()).requeued += leases.len() as u64;
        if !leases.is_empty() {
            tracing::info!(worker = %s.id, count = leases.len(), "requeued running tasks");
        }
    }
}

/// Collects outcomes and writes them in batches.
fn finish_loop(s: &Shared, rx: mpsc::Receiver<Outcome>) {
    let mut last_batch = Instant::now();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if s.done.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // Time per task per slot, from the rate tasks finish while the worker is busy (a long
        // idle gap says nothing about task length, so it is not counted).
        let gap = last_batch.elapsed();
        last_batch = Instant::now();
        if gap < Duration::from_secs(1) {
            s.observe_run(gap * s.config.concurrency as u32 / batch.len() as u32);
        }
        finish_batch(s, batch);
    }
}

/// A reserved task with its options, worked out once for the rate limit and the start.
struct Ready {
    d: Delivery,
    options: lovage_core::TaskOptions,
}

/// A task's options: the call's over the task's registered ones.
fn options_of(env: &Envelope) -> lovage_core::TaskOptions {
    match Registry::global().get(&env.task) {
        Ok(entry) => env.options.merged_over(&(entry.options)()),
        Err(_) => env.options.clone(),
    }
}

/// How many times `reject_on_worker_lost` runs a task again after its process died, before
/// it fails with `WorkerLost` after all (a task that kills its process every time would
/// otherwise loop for ever).
const MAX_RUNS_ON_WORKER_LOST: u32 = 5;

/// How far ahead a worker books rate-limit slots and holds their tasks (the rest wait in the
/// broker).
const PACE_HORIZON: Duration = Duration::from_secs(1);

/// What the finisher does to a task in the broker once its outcome is stored.
enum Settle {
    /// Run again after a delay.
    Retry(Lease, Duration),
    /// Run again after a delay, sent anew: it was acknowledged when it started.
    Resend(Box<Envelope>, Duration),
    /// Failed for the last time.
    DeadLetter(Box<(Delivery, TaskError)>),
}

fn finish_batch(s: &Shared, batch: Vec<Outcome>) {
    let mut records = Vec::with_capacity(batch.len());
    let mut acks = Vec::with_capacity(batch.len());
    let mut settle = Vec::new();
    let mut finished = Vec::with_capacity(batch.len());
    // Workflow steps, continued once their outcomes are stored: (envelope, value or error).
    let mut flows: Vec<(Envelope, Result<Vec<u8>, TaskError>)> = Vec::new();
    let mut report = WorkerReport::default();
    let revoked_running: HashSet<TaskId> = {
        let mut set = s.revoked_running.lock().unwrap_or_else(|p| p.into_inner());
        batch
            .iter()
            .filter_map(|o| set.take(&o.delivery.envelope.id))
            .collect()
    };
    for o in batch {
        finished.push(o.delivery.envelope.id);
        let d = &o.delivery;
        let env = &d.envelope;
        let ignore_result = env.options.ignore_result.unwrap_or(false);
        match o.result {
            _ if revoked_running.contains(&env.id) => {
                let err = TaskError::new(kinds::REVOKED, "revoked while it ran");
                if !env.flow.is_empty() {
                    flows.push((env.clone(), Err(err.clone())));
                }
                records.push(s.record(d, TaskState::Revoked, None, Some(err), Some(o.started)));
                acks.push(d.lease);
                report.revoked += 1;
            }
            Ok(value) => {
                if !env.flow.is_empty() {
                    flows.push((env.clone(), Ok(value.clone())));
                }
                if !ignore_result {
                    records.push(s.record(
                        d,
                        TaskState::Success,
                        Some(value),
                        None,
                        Some(o.started),
                    ));
                }
                acks.push(d.lease);
                report.succeeded += 1;
            }
            Err(err) => {
                let options = options_of(env);
                let policy = options.retry.clone().unwrap_or(RetryPolicy::retries(0));
                let acked_early = options.acks_late == Some(false);
                let lost_again = err.is(kinds::WORKER_LOST)
                    && options.reject_on_worker_lost == Some(true)
                    && env.attempts < MAX_RUNS_ON_WORKER_LOST;
                if lost_again || policy.should_retry(env.attempts, &err) {
                    let delay = if lost_again {
                        Duration::ZERO
                    } else {
                        policy.delay(env.attempts)
                    };
                    tracing::info!(task_id = %env.id, task = %env.task, attempt = env.attempts, error = %err, ?delay, "retrying");
                    records.push(s.record(d, TaskState::Retry, None, Some(err), Some(o.started)));
                    settle.push(if acked_early {
                        Settle::Resend(Box::new(env.clone()), delay)
                    } else {
                        Settle::Retry(d.lease, delay)
                    });
                    report.retried += 1;
                } else {
                    tracing::info!(task_id = %env.id, task = %env.task, attempt = env.attempts, error = %err, "failed");
                    if !env.flow.is_empty() {
                        flows.push((env.clone(), Err(err.clone())));
                    }
                    records.push(s.record(
                        d,
                        TaskState::Failure,
                        None,
                        Some(err.clone()),
                        Some(o.started),
                    ));
                    settle.push(Settle::DeadLetter(Box::new((o.delivery.clone(), err))));
                    report.failed += 1;
                }
            }
        }
    }
    // Results first, then the broker: a task leaves the queue (or goes back for a retry) only
    // once its outcome is stored, so a crash in between runs it again rather than losing it.
    // If storing gave up (immediate shutdown during an outage), the leases bring them back.
    if s.retry_broker("store results", || s.backend.results().store(&records))
        .is_some()
    {
        // Then what follows in their workflows, before the acks (a crash repeats it; it is
        // idempotent).
        let finished: Vec<(&Envelope, Finished<'_>)> = flows
            .iter()
            .map(|(env, outcome)| match outcome {
                Ok(value) => (env, Finished::Success(value)),
                Err(err) => (env, Finished::Failure(err)),
            })
            .collect();
        // Planning gives up only when an immediate stop meets a broker outage: then nothing
        // is settled or acked, and the leases bring these tasks back to be continued.
        if let Some(next) = s.plan_flows(&finished) {
            // What these tasks start (next steps, error callbacks) goes out with the acks (one
            // transaction on SQLite), before any failed task is dead-lettered: a crash in
            // between cannot lose an error callback.
            s.retry_broker("ack", || s.backend.broker().complete_and_send(&acks, &next));
            for step in &settle {
                match step {
                    Settle::Retry(lease, delay) => {
                        s.retry_broker("nack", || s.backend.broker().retry(lease, *delay));
                    }
                    Settle::Resend(env, delay) => {
                        let mut again = (**env).clone();
                        again.eta = Some(Timestamp::now() + *delay);
                        s.retry_broker("send a retry", || {
                            s.backend.broker().enqueue(std::slice::from_ref(&again))
                        });
                    }
                    Settle::DeadLetter(dead) => {
                        let (d, err) = &**dead;
                        s.retry_broker("dead-letter", || {
                            s.backend.broker().discard(&d.lease, &d.envelope, err)
                        });
                    }
                }
            }
        }
    }
    {
        let mut running = s.running();
        for id in &finished {
            running.remove(id);
        }
    }
    s.room.notify_all();
    let mut total = s.report.lock().unwrap_or_else(|p| p.into_inner());
    total.succeeded += report.succeeded;
    total.failed += report.failed;
    total.retried += report.retried;
    total.revoked += report.revoked;
    let done = total.succeeded + total.failed;
    drop(total);
    s.info.lock().unwrap_or_else(|p| p.into_inner()).tasks_done = done;
}

/// Renews leases and writes heartbeats until the worker is done.
fn keep_loop(s: &Shared) {
    let tick = (s.config.lease / 3)
        .min(s.config.heartbeat)
        .max(Duration::from_millis(10));
    let mut last_beat = Instant::now();
    let mut last_purge = Instant::now();
    // The keeper stops retrying an unreachable broker once the run is over.
    let keeper_done = || s.done.load(Ordering::SeqCst) || s.shutdown.level() >= 2;
    while !s.done.load(Ordering::SeqCst) {
        std::thread::sleep(tick.min(Duration::from_millis(100)));
        for r in s.running().values_mut() {
            if r.run_started.is_none() && r.handle.as_ref().is_some_and(|h| h.running() || h.done())
            {
                r.run_started = Some(Instant::now());
            }
            let over = r
                .soft_time_limit
                .zip(r.run_started)
                .is_some_and(|(limit, since)| since.elapsed() >= limit);
            if over && !r.token.is_cancelled() {
                tracing::info!(task_id = %r.lease.id, "soft time limit passed; asking the task to stop");
                r.token.cancel(CancelReason::SoftTimeLimit);
            }
        }
        let due = last_beat.elapsed() >= tick;
        if !due {
            continue;
        }
        last_beat = Instant::now();
        let leases: Vec<Lease> = s.running().values().map(|r| r.lease).collect();
        if !leases.is_empty() {
            if let Some(lost) = s.retry_broker_until("extend leases", keeper_done, || {
                s.backend.broker().renew(&leases, s.config.lease)
            }) {
                if !lost.is_empty() {
                    let ids: Vec<TaskId> = lost.iter().map(|l| l.id).collect();
                    let revoked = s.backend.broker().revoked(&ids).unwrap_or_default();
                    let mut set = s.revoked_running.lock().unwrap_or_else(|p| p.into_inner());
                    let running = s.running();
                    for id in revoked {
                        tracing::info!(task_id = %id, "revoked while running: cancelling it");
                        if let Some(r) = running.get(&id) {
                            r.token.cancel(CancelReason::Revoked);
                            set.insert(id);
                        }
                    }
                }
            }
        }
        let info = {
            let mut info = s.info.lock().unwrap_or_else(|p| p.into_inner());
            info.heartbeat = Timestamp::now();
            info.active = leases.len() as u64;
            info.clone()
        };
        s.retry_broker_until("heartbeat", keeper_done, || {
            s.backend.presence().heartbeat(&info)
        });
        if last_purge.elapsed() >= RESULT_PURGE_INTERVAL {
            last_purge = Instant::now();
            match s.backend.results().purge_expired() {
                Ok(n) if n > 0 => {
                    tracing::debug!(worker = %s.id, purged = n, "expired results deleted")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker = %s.id, error = %e, "could not delete expired results")
                }
            }
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
