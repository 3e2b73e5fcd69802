//! What the worker's threads share: the backend and pool, the tasks in hand, the report, and
//! the few helpers every thread uses (retrying the broker, making a result record).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use lovage_broker::{
    Backend, BrokerError, Delivery, Lease, ResultRecord, TaskLimits, Timestamp, WorkerInfo,
};
use lovage_core::{CancelToken, Registry, TaskError, TaskId, TaskOptions, TaskState};
use lovage_pool::{Executor, TaskHandle};

use crate::settle::Ran;
use crate::{Shutdown, WorkerConfig, WorkerReport};

/// Reserve about this much work beyond what runs: enough that the pool never waits for the
/// broker, little enough that one worker does not hoard slow tasks other workers could start.
const PREFETCH_WORK: Duration = Duration::from_millis(20);

/// A reserved task with its options: the call's merged over the registered task's, once, at
/// reserve; everything after (rate limit, start, settle) reads these.
pub(crate) struct Ready {
    pub d: Delivery,
    pub options: TaskOptions,
}

impl Ready {
    pub fn new(d: Delivery) -> Ready {
        let options = match Registry::global().get(&d.envelope.task) {
            Ok(entry) => d.envelope.options.merged_over(&(entry.options)()),
            // An unknown task fails when it runs; its call's options are all there is.
            Err(_) => d.envelope.options.clone(),
        };
        Ready { d, options }
    }
}

/// A task that ended (or was revoked before it started), on its way to the finisher.
pub(crate) struct Outcome {
    pub ready: Ready,
    pub ran: Ran,
    /// When it started; None for a task that never ran.
    pub started: Option<Timestamp>,
}

/// A task handed to the pool, as the keeper and the finisher see it.
pub(crate) struct Running {
    pub lease: Lease,
    /// The task's name (for `inspect active` and `reserved`).
    pub task: String,
    /// Cancelled when the task is revoked while running or passes its soft time limit.
    pub token: CancelToken,
    /// The pool's handle, to see when the task leaves the pool's queue and starts.
    pub handle: Option<TaskHandle<Vec<u8>>>,
    /// When the keeper first saw it running: the soft time limit counts from here, not from
    /// the time it waited in the pool as prefetch.
    pub run_started: Option<Instant>,
    pub soft_time_limit: Option<Duration>,
    /// When it expires (checked again while it waits in the pool's queue).
    pub expires: Option<Timestamp>,
    /// Acknowledged when it was handed to the pool (`acks_late = false`): the broker no longer
    /// holds it, so it cannot be handed back.
    pub acked: bool,
    /// Its outcome is with the finisher, which stores it and completes its lease: a renewal
    /// that finds the lease gone from then on is that completion, not a lost lease.
    pub settling: bool,
    /// Why the worker took it back out of the pool's queue, if it did.
    pub withdrawal: Withdrawal,
    /// Its STARTED record (`track_started`), stored by the keeper once it sees the task leave
    /// the pool's queue, with when the pool really started it: a prefetched task is not
    /// STARTED while it waits.
    pub started_record: Option<ResultRecord>,
}

impl Shared {
    /// Publishes a worker event (online, offline) when events are on; a broker that fails
    /// here only loses the event (logged), never the worker's start or stop.
    pub fn publish_worker_event(&self, kind: lovage_broker::ops::EventKind) {
        if !self.events_on() {
            return;
        }
        let mut ev = lovage_broker::ops::Event::new(kind);
        ev.worker = Some(self.id.clone());
        if let Err(e) = self.backend.events().publish(&[ev]) {
            tracing::warn!(error = %e, event = %kind, "could not publish a worker event");
        }
    }
}

impl Running {
    /// Takes the task back out of the pool's queue if it has not started (its done-callback
    /// then sees `why`); true if it did.
    pub fn withdraw(&self, why: Withdrawn) -> bool {
        let Some(handle) = &self.handle else {
            return false;
        };
        if handle.running() || handle.done() {
            return false;
        }
        self.withdrawal.0.store(why as u8, Ordering::SeqCst);
        if handle.cancel() {
            true
        } else {
            // It started meanwhile: it runs and ends as usual.
            self.withdrawal.0.store(0, Ordering::SeqCst);
            false
        }
    }
}

/// Why a task was taken back out of the pool's queue before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Withdrawn {
    /// Its `expires` passed while it waited: settled as REVOKED without running.
    Expired = 1,
    /// A graceful stop: its lease goes back to the broker (snoozed, not an attempt).
    HandedBack = 2,
}

/// Set by [`Running::withdraw`] just before it cancels the pool's handle; read by the task's
/// done-callback, which then knows that the cancellation was the worker's and why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Withdrawal(Arc<AtomicU8>);

impl Withdrawal {
    pub fn get(&self) -> Option<Withdrawn> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(Withdrawn::Expired),
            2 => Some(Withdrawn::HandedBack),
            _ => None,
        }
    }
}

/// State shared by the worker's threads.
pub(crate) struct Shared {
    pub backend: Backend,
    pub executor: std::sync::Arc<dyn Executor>,
    pub config: WorkerConfig,
    pub id: String,
    info: Mutex<WorkerInfo>,
    running: Mutex<HashMap<TaskId, Running>>,
    /// Signalled when a running task is finished (room for more).
    pub room: Condvar,
    /// Rate-limited tasks waiting here for their booked slots (the pacer's).
    paced: Mutex<Vec<(Instant, Ready)>>,
    /// Signalled when `paced` changes.
    pub paced_changed: Condvar,
    /// Running tasks revoked while they ran (the keeper's finding): they settle as REVOKED.
    revoked_running: Mutex<HashSet<TaskId>>,
    /// Leases the broker no longer holds for us, of tasks not revoked (the keeper's finding):
    /// another worker may be running them, so their outcomes are dropped, not settled.
    lost_leases: Mutex<HashSet<Lease>>,
    /// Revoked task ids this worker met (`inspect revoked`), the newest [`MAX_REVOKED_KEPT`].
    revoked_known: Mutex<RevokedKnown>,
    pub shutdown: Shutdown,
    /// Set when the run is over: the finisher and the keeper return.
    pub done: AtomicBool,
    report: Mutex<WorkerReport>,
    /// Set while the broker is failing, so an outage is logged once.
    broker_down: AtomicBool,
    /// Moving average of a task's run time, in microseconds (0: none measured yet).
    avg_run_us: AtomicU64,
    /// The queues consumed now (`add_consumer` and `cancel_consumer` change them).
    queues: RwLock<Vec<String>>,
    /// Whether events are published now (`enable_events` and `disable_events` change it).
    events: AtomicBool,
    /// Limits set by `rate_limit` and `time_limit` commands, by task name, over the registered
    /// options and the call's.
    overrides: Mutex<HashMap<String, TaskLimits>>,
    /// Set once any override exists, so tasks skip the lookup until then.
    has_overrides: AtomicBool,
    /// Tasks settled so far by name (`inspect stats`); at most [`MAX_TOTALS`] names. The links
    /// of a fused chain count under their own names, as unfused nodes would.
    totals: Mutex<BTreeMap<String, u64>>,
    /// Fused chain messages settled so far, and the links they held (`inspect stats`).
    chains: Mutex<ChainTotals>,
    /// When the worker was made, for its uptime.
    pub born: Instant,
    /// Where large results stay (the data plane), when it is on.
    pub data: Option<std::sync::Arc<crate::data::DataStore>>,
    /// The pool's size now and the autoscaler's bounds (see `scale.rs`).
    pub slots: crate::scale::Slots,
    /// Paused for memory (see `pause.rs`).
    pub pause: crate::pause::Pause,
    /// `task-received` events noted by the fetcher (with when), published by the finisher
    /// for tasks still unsettled [`RECEIVED_DELAY`] later (see [`Shared::take_received`]).
    received: Mutex<Vec<(Instant, lovage_broker::ops::Event)>>,
    /// Slots given back by tasks that wait (an implicit secede).
    pub seceded: std::sync::Arc<Seceded>,
    /// What tasks reach through `lovage::ctx()`: this worker's broker and client.
    pub task_host: std::sync::Arc<lovage_broker::ctx::TaskHost>,
    /// The resources this worker declared and which tasks hold them (None: it declared none,
    /// and consumes no resource queue).
    pub units: Option<crate::units::Units>,
}

/// The slots that running tasks gave back while they wait on other tasks: the fetcher
/// reserves that many more.
#[derive(Default)]
pub(crate) struct Seceded {
    seceded: std::sync::atomic::AtomicUsize,
    /// The worker, to wake its fetcher when a slot comes back.
    pub owner: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

impl Seceded {
    /// Slots given back now.
    pub fn count(&self) -> usize {
        self.seceded.load(Ordering::SeqCst)
    }
}

impl lovage_core::context::SlotGate for Seceded {
    fn give_back(&self) {
        self.seceded.fetch_add(1, Ordering::SeqCst);
        if let Some(s) = self.owner.get().and_then(std::sync::Weak::upgrade) {
            s.room.notify_all();
        }
    }

    fn retake(&self) {
        let _ = self
            .seceded
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// How long a `task-received` event waits for its task to settle before it is published: a
/// task settled sooner is told of by its outcome's event alone (as `task-started`), so a
/// stream of quick tasks adds no events.
pub(crate) const RECEIVED_DELAY: Duration = Duration::from_millis(100);

/// Task names counted one by one in `inspect stats`; the rest are summed under `other`.
pub(crate) const MAX_TOTALS: usize = 256;

/// What a worker's fused chains (`lovage.graph.chain` messages, each running several graph
/// nodes) settled: `inspect stats` counts their links by task name in `total`, and these
/// beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainTotals {
    /// Chain messages settled.
    pub messages: u64,
    /// Links in them (graph nodes).
    pub links: u64,
}

/// Revoked ids a worker remembers for `inspect revoked`: the revocation itself lives in the
/// broker, so this list is only what an operator sees, and a long-lived worker must not grow
/// it for good.
pub(crate) const MAX_REVOKED_KEPT: usize = 1000;

/// The revoked task ids a worker met: revoked before it started them, while they ran, or
/// named in a `revoke` command sent to it. Newest last.
#[derive(Default)]
pub(crate) struct RevokedKnown {
    ids: std::collections::VecDeque<TaskId>,
    kept: HashSet<TaskId>,
    /// Distinct ids noted since the worker started (more than `ids` holds once truncated).
    pub count: u64,
}

impl RevokedKnown {
    fn note(&mut self, id: TaskId) {
        if !self.kept.insert(id) {
            return;
        }
        self.count += 1;
        self.ids.push_back(id);
        if self.ids.len() > MAX_REVOKED_KEPT {
            if let Some(old) = self.ids.pop_front() {
                self.kept.remove(&old);
            }
        }
    }

    /// The kept ids, newest first.
    pub fn newest_first(&self) -> Vec<TaskId> {
        self.ids.iter().rev().copied().collect()
    }
}

fn unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(
        backend: Backend,
        executor: std::sync::Arc<dyn Executor>,
        config: WorkerConfig,
        info: WorkerInfo,
        data: Option<std::sync::Arc<crate::data::DataStore>>,
        slots: usize,
    ) -> Shared {
        let config_autoscale = config.autoscale;
        let sent_events = config.sent_events;
        let backend_for_host = backend.clone();
        let units = crate::units::Units::new(&config.resources);
        Shared {
            units,
            backend,
            executor,
            id: info.id.clone(),
            queues: RwLock::new(config.queues.clone()),
            events: AtomicBool::new(config.events),
            config,
            info: Mutex::new(info),
            running: Mutex::new(HashMap::new()),
            room: Condvar::new(),
            paced: Mutex::new(Vec::new()),
            paced_changed: Condvar::new(),
            revoked_running: Mutex::new(HashSet::new()),
            lost_leases: Mutex::new(HashSet::new()),
            revoked_known: Mutex::new(RevokedKnown::default()),
            shutdown: Shutdown::default(),
            done: AtomicBool::new(false),
            report: Mutex::new(WorkerReport::default()),
            broker_down: AtomicBool::new(false),
            avg_run_us: AtomicU64::new(0),
            overrides: Mutex::new(HashMap::new()),
            has_overrides: AtomicBool::new(false),
            totals: Mutex::new(BTreeMap::new()),
            chains: Mutex::new(ChainTotals::default()),
            born: Instant::now(),
            data,
            slots: crate::scale::Slots::new(slots, config_autoscale),
            pause: Default::default(),
            received: Mutex::new(Vec::new()),
            seceded: Default::default(),
            task_host: lovage_broker::ctx::TaskHost::shared(
                lovage_broker::App::with_backend(backend_for_host).sent_events(sent_events),
            ),
        }
    }

    /// The queues consumed now.
    pub fn queues(&self) -> Vec<String> {
        self.queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets the queues consumed (also in the worker's record, at its next heartbeat).
    pub fn set_queues(&self, queues: Vec<String>) {
        self.info().queues = queues.clone();
        *self.queues.write().unwrap_or_else(|p| p.into_inner()) = queues;
    }

    /// Whether events are published now.
    pub fn events_on(&self) -> bool {
        self.events.load(Ordering::Relaxed)
    }

    /// Turns events on or off.
    pub fn set_events(&self, on: bool) {
        self.events.store(on, Ordering::Relaxed);
    }

    /// Notes a `task-received` event for each delivery (when events are on).
    pub fn note_received(&self, deliveries: &[Delivery]) {
        if !self.events_on() || deliveries.is_empty() {
            return;
        }
        let now = Instant::now();
        let events = deliveries.iter().map(|d| {
            let env = &d.envelope;
            let mut ev =
                lovage_broker::ops::Event::new(lovage_broker::ops::EventKind::TaskReceived);
            ev.task_id = Some(env.id);
            ev.name = Some(env.task.clone());
            ev.queue = Some(env.queue.clone());
            ev.worker = Some(self.id.clone());
            ev.state = Some(TaskState::Received);
            ev.retries = Some(env.attempts.saturating_sub(1));
            (now, ev)
        });
        unpoisoned(&self.received).extend(events);
    }

    /// The noted `task-received` events to publish now: those of tasks in `settling` are
    /// dropped (their outcome's event, in the same write, tells of them), those noted at least
    /// [`RECEIVED_DELAY`] ago are taken (all of them with `all`, at the end of the run), the
    /// rest wait. Only the finisher calls this, so a received event is never published after
    /// its task's outcome.
    /// `settling` is asked only when there is something noted (events off: never).
    pub fn take_received(
        &self,
        settling: impl FnOnce() -> HashSet<TaskId>,
        all: bool,
    ) -> Vec<lovage_broker::ops::Event> {
        let mut noted = unpoisoned(&self.received);
        if noted.is_empty() {
            return Vec::new();
        }
        let settling = settling();
        let now = Instant::now();
        let mut due = Vec::new();
        noted.retain(|(at, ev)| {
            if ev.task_id.is_some_and(|id| settling.contains(&id)) {
                false
            } else if all || now.duration_since(*at) >= RECEIVED_DELAY {
                due.push(ev.clone());
                false
            } else {
                true
            }
        });
        due
    }

    /// The limits set by control commands, by task name.
    pub fn overrides(&self) -> MutexGuard<'_, HashMap<String, TaskLimits>> {
        self.has_overrides.store(true, Ordering::Relaxed);
        unpoisoned(&self.overrides)
    }

    /// A reserved task with its options, and the limits control commands set for its name
    /// laid over them (an operator's command wins over the code's and the call's).
    pub fn ready(&self, d: Delivery) -> Ready {
        let mut r = Ready::new(d);
        if self.has_overrides.load(Ordering::Relaxed) {
            if let Some(o) = unpoisoned(&self.overrides).get(&r.d.envelope.task) {
                if let Some(rate) = &o.rate_limit {
                    // An empty rate clears the limit.
                    r.options.rate_limit = Some(rate.clone()).filter(|r| !r.is_empty());
                }
                if let Some(soft) = o.soft_time_limit_s {
                    r.options.soft_time_limit = Some(Duration::from_secs_f64(soft));
                }
                if let Some(hard) = o.time_limit_s {
                    r.options.time_limit = Some(Duration::from_secs_f64(hard));
                }
            }
        }
        r
    }

    /// Counts settled tasks by name (a batch's counts at once).
    pub fn count_settled(&self, names: &HashMap<&str, u64>) {
        let mut totals = unpoisoned(&self.totals);
        for (name, n) in names {
            if let Some(t) = totals.get_mut(*name) {
                *t += n;
            } else if totals.len() < MAX_TOTALS {
                totals.insert((*name).to_owned(), *n);
            } else {
                *totals.entry("other".to_owned()).or_default() += n;
            }
        }
    }

    /// Tasks settled so far by name.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        unpoisoned(&self.totals).clone()
    }

    /// Counts fused chain messages settled, and their links.
    pub fn count_chains(&self, messages: u64, links: u64) {
        let mut c = unpoisoned(&self.chains);
        c.messages += messages;
        c.links += links;
    }

    /// Fused chain messages settled so far, and their links.
    pub fn chain_totals(&self) -> ChainTotals {
        *unpoisoned(&self.chains)
    }

    pub fn running(&self) -> MutexGuard<'_, HashMap<TaskId, Running>> {
        unpoisoned(&self.running)
    }

    pub fn paced(&self) -> MutexGuard<'_, Vec<(Instant, Ready)>> {
        unpoisoned(&self.paced)
    }

    pub fn info(&self) -> MutexGuard<'_, WorkerInfo> {
        unpoisoned(&self.info)
    }

    pub fn report(&self) -> MutexGuard<'_, WorkerReport> {
        unpoisoned(&self.report)
    }

    pub fn revoked_running(&self) -> MutexGuard<'_, HashSet<TaskId>> {
        unpoisoned(&self.revoked_running)
    }

    /// Notes revoked task ids for `inspect revoked`.
    pub fn note_revoked(&self, ids: impl IntoIterator<Item = TaskId>) {
        let mut known = unpoisoned(&self.revoked_known);
        for id in ids {
            known.note(id);
        }
    }

    pub fn revoked_known(&self) -> MutexGuard<'_, RevokedKnown> {
        unpoisoned(&self.revoked_known)
    }

    pub fn lost_leases(&self) -> MutexGuard<'_, HashSet<Lease>> {
        unpoisoned(&self.lost_leases)
    }

    /// Gives back the resource units these tasks held (when the worker has resources).
    pub fn release_units(&self, ids: impl IntoIterator<Item = TaskId>) {
        if let Some(units) = &self.units {
            units.release(ids);
        }
    }

    /// How many tasks to hold beyond the running ones, from the measured task run time.
    pub fn prefetch(&self) -> usize {
        let avg = self.avg_run_us.load(Ordering::Relaxed);
        // No measurement yet (0): hold one extra task per slot.
        let per_slot = (PREFETCH_WORK.as_micros() as u64)
            .checked_div(avg)
            .map_or(1, |n| n.max(1) as usize);
        let adaptive = per_slot * self.slots.current();
        adaptive.min(self.config.prefetch)
    }

    /// Feeds the moving average of a task's run time.
    pub fn observe_run(&self, took: Duration) {
        let us = took.as_micros().max(1) as u64;
        let old = self.avg_run_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.avg_run_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Forgets the measured run time (idle: the next tasks may be of another kind).
    pub fn forget_run_time(&self) {
        self.avg_run_us.store(0, Ordering::Relaxed);
    }

    /// Runs a broker operation until it succeeds, backing off; gives up only on immediate
    /// shutdown (the leases then bring the tasks back).
    pub fn retry_broker<T>(
        &self,
        op: &str,
        f: impl FnMut() -> Result<T, BrokerError>,
    ) -> Option<T> {
        self.retry_broker_until(op, || self.shutdown.immediate_requested(), f)
    }

    /// Like `retry_broker`, giving up as soon as `give_up()` holds (e.g. a graceful stop, for
    /// work not yet started such as reserving, or the end of the run, for the keeper).
    pub fn retry_broker_until<T>(
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
                        tracing::warn!(worker = %self.id, error = %e, transient = e.is_transient(), "broker {op} failed; retrying with backoff until it answers");
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

    /// A result record of `d` in `state`, written by this worker now.
    pub fn record(
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

    /// The workflow context for lovage-flow: this backend, this worker, its result TTL, its
    /// `task-sent` opt-in.
    pub fn flow_context(&self) -> lovage_flow::Context<'_> {
        lovage_flow::Context {
            backend: &self.backend,
            result_ttl: self.config.result_ttl,
            worker: Some(&self.id),
            sent_events: self.config.sent_events,
            steal_after: self.config.data.as_ref().map(|d| d.steal_after),
        }
    }
}
