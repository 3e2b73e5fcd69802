//! The [`Worker`]: starts its pool and its threads (fetcher, pacer, finisher, keeper; see
//! PROTOCOL.md), runs until it is stopped, and reports what it did.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use lovage_broker::{Backend, Lease, Timestamp, WorkerInfo};
use lovage_core::TaskId;
use lovage_pool::{Executor, ProcessPool, ThreadPool};

use crate::shared::{Outcome, Shared, Withdrawn};
use crate::signals::BrokerThreadSignals;
use crate::{
    control, fetcher, finisher, keeper, pacer, Autoscale, PoolKind, Shutdown, WorkerConfig,
};

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks that ended SUCCESS.
    pub succeeded: u64,
    /// Tasks that ended FAILURE.
    pub failed: u64,
    /// Failures sent back for a retry.
    pub retried: u64,
    /// Tasks revoked or expired (before they started or while they ran).
    pub revoked: u64,
    /// Tasks handed back to the queue by a stop: those not started yet (graceful), or every
    /// one in hand (immediate).
    pub requeued: u64,
    /// Outcomes dropped because the task's lease was lost while it ran (the worker was cut off
    /// from the broker past its lease): another worker may have run and settled it.
    pub lost: u64,
}

impl WorkerReport {
    pub(crate) fn add(&mut self, other: &WorkerReport) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.retried += other.retried;
        self.revoked += other.revoked;
        self.requeued += other.requeued;
        self.lost += other.lost;
    }
}

/// A worker bound to a backend. [`run`](Worker::run) blocks until it is shut down.
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// A worker with its pool started. A `concurrency` of 0 is refused (`InvalidInput`): such
    /// a worker would never have room to reserve a task.
    pub fn new(backend: Backend, config: WorkerConfig) -> std::io::Result<Worker> {
        if config.concurrency == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "WorkerConfig::concurrency must be at least 1 (a worker of 0 slots never runs a task)",
            ));
        }
        lovage_core::options::check_resources(&config.resources).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("WorkerConfig::resources: {e}"),
            )
        })?;
        if config.resources.len() > lovage_core::options::MAX_WORKER_RESOURCES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "WorkerConfig::resources: {} names, at most {} (a worker consumes a queue per subset of them)",
                    config.resources.len(),
                    lovage_core::options::MAX_WORKER_RESOURCES
                ),
            ));
        }
        if let Some(a) = config.autoscale {
            Autoscale::new(a.max, a.min, a.idle)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        }
        let (slots, built) = config.initial_and_built_slots();
        let executor: Arc<dyn Executor> = match config.pool {
            PoolKind::Threads => Arc::new(
                ThreadPool::builder()
                    .workers(built)
                    .thread_name("lovage-task")
                    .build()?,
            ),
            PoolKind::Processes => Arc::new(ProcessPool::builder().workers(built).build()?),
        };
        // Built at the autoscaler's max, parked down to its min: growing starts nothing.
        executor.resize(slots)?;
        let host = hostname();
        let pid = std::process::id();
        let now = Timestamp::now();
        // A second worker in one process gets a number, so their heartbeats do not overwrite
        // each other's.
        static IN_PROCESS: AtomicU32 = AtomicU32::new(0);
        let id = match IN_PROCESS.fetch_add(1, Ordering::Relaxed) {
            0 => format!("{}@{host}.{pid}", config.name),
            n => format!("{}-{}@{host}.{pid}", config.name, n + 1),
        };
        let info = WorkerInfo {
            id,
            host,
            pid,
            queues: config.queues.clone(),
            pool: crate::scale::describe(config.pool.name(), slots, config.autoscale),
            started: now,
            heartbeat: now,
            tasks_done: 0,
            active: 0,
            registered: crate::control::registered_names(),
            limits: crate::control::registered_limits(),
            resources: config.resources.clone(),
        };
        let data = match &config.data {
            Some(d) => Some(crate::data::DataStore::start(d.clone(), &info.id)?),
            None => None,
        };
        let shared = Arc::new(Shared::new(backend, executor, config, info, data, slots));
        let _ = shared.seceded.owner.set(Arc::downgrade(&shared));
        Ok(Worker { shared })
    }

    /// The worker's id, `name@host.pid` (`name-N@host.pid` for the N-th worker of a process).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// A handle to stop the worker from another thread (or a signal handler thread).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// Consumes the queues until shut down; returns counts of what happened. Fails only when
    /// the worker's own threads cannot be started.
    pub fn run(&self) -> std::io::Result<WorkerReport> {
        let s = &self.shared;
        // The fetcher (this thread) and the threads it starts talk to the broker: signals go to
        // other threads (see `BrokerThreadSignals`).
        let _signals = BrokerThreadSignals::block();
        tracing::info!(worker = %s.id, queues = ?s.config.queues, pool = %s.info().pool, "worker started");
        s.retry_broker_until(
            "heartbeat",
            || s.shutdown.requested(),
            || s.backend.presence().heartbeat(&s.info()),
        );
        s.publish_worker_event(lovage_broker::ops::EventKind::WorkerOnline);
        let (tx, rx) = mpsc::channel::<Outcome>();
        let finisher = {
            let s = s.clone();
            std::thread::Builder::new()
                .name("lovage-finisher".into())
                .spawn(move || finisher::finish_loop(&s, rx))?
        };
        let keeper = {
            let s = s.clone();
            std::thread::Builder::new()
                .name("lovage-keeper".into())
                .spawn(move || keeper::keep_loop(&s))?
        };
        // Its own thread, so a worker whose pool is busy (or whose fetcher waits for room)
        // still answers inspect and control commands.
        let control = {
            let s = s.clone();
            std::thread::Builder::new()
                .name("lovage-control".into())
                .spawn(move || control::control_loop(&s))?
        };
        let paced = std::thread::scope(|scope| {
            let pacer = std::thread::Builder::new()
                .name("lovage-pacer".into())
                .spawn_scoped(scope, || pacer::pace_loop(s, &tx));
            if pacer.is_ok() {
                fetcher::fetch_loop(s, &tx);
            } else {
                s.shutdown.graceful();
            }
            s.paced_changed.notify_all();
            pacer.map(|_| ())
        });
        // The fetcher may have booked slots after the pacer left: hand those back too.
        pacer::hand_back_paced(s);
        drop(tx);
        if !s.shutdown.immediate_requested() {
            // Graceful: hand back what has not started, let what runs finish.
            hand_back_unstarted(s);
            let mut running = s.running();
            while !running.is_empty() && !s.shutdown.immediate_requested() {
                running = s
                    .room
                    .wait_timeout(running, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        if s.shutdown.immediate_requested() {
            requeue_running(s);
        }
        s.done.store(true, Ordering::SeqCst);
        if !s.shutdown.immediate_requested() {
            let _ = finisher.join();
        }
        let _ = keeper.join();
        let _ = control.join();
        let _ = s.backend.presence().unregister(&s.id);
        s.publish_worker_event(lovage_broker::ops::EventKind::WorkerOffline);
        s.executor.shutdown(!s.shutdown.immediate_requested(), true);
        if let Some(d) = &s.data {
            // Its values go with it: readers now get "unreachable" and must recompute.
            d.stop();
        }
        paced?;
        let report = s.report().clone();
        tracing::info!(worker = %s.id, ?report, "worker stopped");
        Ok(report)
    }
}

/// Graceful shutdown: takes the tasks still waiting in the pool's queue back out of it and
/// hands them back to the broker (snoozed: not an attempt), for this or another worker to run.
/// Those acknowledged when they were handed to the pool are the worker's alone: they run.
fn hand_back_unstarted(s: &Shared) {
    let leases: Vec<Lease> = {
        let mut running = s.running();
        let ids: Vec<TaskId> = running
            .iter()
            .filter(|(_, r)| !r.acked && r.withdraw(Withdrawn::HandedBack))
            .map(|(id, _)| *id)
            .collect();
        let leases = ids
            .iter()
            .filter_map(|id| running.remove(id))
            .map(|r| r.lease)
            .collect();
        s.release_units(ids);
        leases
    };
    s.room.notify_all();
    for l in &leases {
        s.retry_broker("hand back", || s.backend.broker().snooze(l, Duration::ZERO));
    }
    s.report().requeued += leases.len() as u64;
    if !leases.is_empty() {
        tracing::info!(worker = %s.id, count = leases.len(), "handed back tasks not started");
    }
}

/// Immediate shutdown: gives every running task back to the queue (an attempt that did not
/// finish: the next delivery counts as another).
fn requeue_running(s: &Shared) {
    let leases: Vec<Lease> = s.running().drain().map(|(_, r)| r.lease).collect();
    s.release_units(leases.iter().map(|l| l.id));
    for l in &leases {
        if let Err(e) = s.backend.broker().retry(l, Duration::ZERO) {
            tracing::warn!(task_id = %l.id, error = %e, "could not requeue; its lease will bring it back");
        }
    }
    s.report().requeued += leases.len() as u64;
    if !leases.is_empty() {
        tracing::info!(worker = %s.id, count = leases.len(), "requeued running tasks");
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
