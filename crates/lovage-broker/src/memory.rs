//! An in-process broker and result store: for tests and for programs that only need a queue
//! inside one process. Nothing survives the process.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use lovage_core::{TaskError, TaskId};

use crate::{
    Admin, Broker, DeadLetter, Delivery, Envelope, JoinEntry, Lease, Locks, Presence, QueueStats,
    RateLimits, Result, ResultRecord, ResultStore, Revoked, Timestamp, WorkerInfo,
    DEAD_LETTERS_KEPT, ONCE_TTL,
};

mod ops;
mod shared;

/// How long a revoked id is remembered for tasks not (yet) in the broker.
const REVOKE_MEMORY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ready,
    Scheduled(Timestamp),
    Reserved(Timestamp),
}

struct Entry {
    env: Envelope,
    seq: u64,
    place: Place,
    /// The fencing token of the delivery that holds it; 0 when none does.
    fence: u64,
    /// The worker it is queued for while it waits in `scheduled` until its steal time (see
    /// [`Envelope::affinity`]); cleared when it leaves that first place.
    affine: Option<String>,
}

#[derive(Default)]
struct State {
    entries: HashMap<TaskId, Entry>,
    /// Per queue: ready tasks by (priority high first, then FIFO).
    ready: HashMap<String, BTreeSet<(Reverse<u8>, u64, TaskId)>>,
    scheduled: BTreeSet<(Timestamp, u64, TaskId)>,
    /// Per worker: tasks queued for it (also in `scheduled`, at their steal time), oldest first.
    affine: HashMap<String, BTreeSet<(u64, TaskId)>>,
    reserved: BTreeSet<(Timestamp, TaskId)>,
    revoked: HashMap<TaskId, Timestamp>,
    dead: Vec<DeadLetter>,
    workers: HashMap<String, WorkerInfo>,
    results: HashMap<TaskId, ResultRecord>,
    counters: HashMap<String, i64>,
    /// Ids sent through `enqueue_once`, and until when they are remembered.
    sent_once: HashMap<TaskId, Timestamp>,
    /// Joins: member values by index, and until when they are kept.
    joins: HashMap<TaskId, (BTreeMap<u32, Vec<u8>>, Timestamp)>,
    /// Rate limits: key → theoretical arrival time (µs).
    rates: HashMap<String, i64>,
    /// Locks: name → (holder, until).
    locks: HashMap<String, (String, Timestamp)>,
    /// Blobs and until when they are kept.
    blobs: HashMap<TaskId, (Vec<u8>, Timestamp)>,
    next_seq: u64,
    /// The last fencing token drawn.
    last_fence: u64,
    /// The task index's notes, counters, paused queues, events and control mailboxes.
    ops: ops::OpsState,
}

impl State {
    /// Takes `id` out of whichever index its place puts it in.
    fn detach(&mut self, id: TaskId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        // An affinity is used up once the task leaves the place it was queued in.
        if let Some(worker) = e.affine.take() {
            if let Some(mine) = self.affine.get_mut(&worker) {
                mine.remove(&(e.seq, id));
                if mine.is_empty() {
                    self.affine.remove(&worker);
                }
            }
        }
        match e.place {
            Place::Ready => {
                if let Some(q) = self.ready.get_mut(&e.env.queue) {
                    q.remove(&(Reverse(e.env.priority), e.seq, id));
                }
            }
            Place::Scheduled(t) => {
                self.scheduled.remove(&(t, e.seq, id));
            }
            Place::Reserved(t) => {
                self.reserved.remove(&(t, id));
            }
        }
    }

    /// Puts `id` at `place` and in that place's index.
    fn attach(&mut self, id: TaskId, place: Place) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.place = place;
        match place {
            Place::Ready => {
                self.ready.entry(e.env.queue.clone()).or_default().insert((
                    Reverse(e.env.priority),
                    e.seq,
                    id,
                ));
            }
            Place::Scheduled(t) => {
                self.scheduled.insert((t, e.seq, id));
                if let Some(worker) = &e.affine {
                    self.affine
                        .entry(worker.clone())
                        .or_default()
                        .insert((e.seq, id));
                }
            }
            Place::Reserved(t) => {
                self.reserved.insert((t, id));
            }
        }
    }

    fn place(&mut self, id: TaskId, place: Place) {
        self.detach(id);
        self.attach(id, place);
    }

    fn remove(&mut self, id: TaskId) -> Option<Entry> {
        self.detach(id);
        self.entries.remove(&id)
    }

    /// Moves due scheduled tasks and expired leases to ready.
    fn promote(&mut self, now: Timestamp) {
        let due: Vec<TaskId> = self
            .scheduled
            .iter()
            .take_while(|(t, _, _)| *t <= now)
            .map(|(_, _, id)| *id)
            .collect();
        let expired: Vec<TaskId> = self
            .reserved
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in due.into_iter().chain(expired) {
            self.place(id, Place::Ready);
        }
    }

    /// When the next scheduled task or lease falls due.
    fn next_due(&self) -> Option<Timestamp> {
        let s = self.scheduled.first().map(|(t, _, _)| *t);
        let r = self.reserved.first().map(|(t, _)| *t);
        s.into_iter().chain(r).min()
    }

    /// The oldest task of `queues` queued for `worker` and not yet stealable (see
    /// [`Envelope::affinity`]).
    fn oldest_affine(&self, worker: &str, queues: &[String]) -> Option<TaskId> {
        let mine = self.affine.get(worker)?;
        mine.iter().map(|(_, id)| *id).find(|id| {
            self.entries.get(id).is_some_and(|e| {
                queues.contains(&e.env.queue) && !self.ops.paused.contains(&e.env.queue)
            })
        })
    }

    /// The best ready task among `queues`.
    fn best_ready(&self, queues: &[String]) -> Option<TaskId> {
        queues
            .iter()
            .filter(|q| !self.ops.paused.contains(*q))
            .filter_map(|q| self.ready.get(q).and_then(|s| s.first()))
            .min()
            .map(|(_, _, id)| *id)
    }

    /// Whether `lease` names the task's last delivery and that delivery has not ended: its
    /// lease may have run out, but nobody else has taken the task since.
    fn holds(&self, lease: &Lease) -> bool {
        lease.fence != 0
            && self
                .entries
                .get(&lease.id)
                .is_some_and(|e| e.fence == lease.fence)
    }
}

/// The memory backend: a broker and a result store in one.
pub struct MemoryBackend {
    state: Mutex<State>,
    /// Signalled when tasks become ready or results are stored.
    changed: Condvar,
    /// Dead letters kept; past this many, the oldest are dropped.
    dead_kept: AtomicUsize,
    /// Shared dicts and lists, apart from the queue's lock.
    shared: Mutex<shared::Objects>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            state: Mutex::default(),
            changed: Condvar::new(),
            dead_kept: AtomicUsize::new(DEAD_LETTERS_KEPT),
            shared: Mutex::default(),
        }
    }
}

impl MemoryBackend {
    /// Keeps the `n` newest dead letters (at least one), dropping older ones as new ones come;
    /// [`DEAD_LETTERS_KEPT`] by default. A named backend shares it with every `memory://NAME`.
    pub fn keep_dead_letters(&self, n: usize) {
        self.dead_kept.store(n.max(1), Ordering::Relaxed);
    }

    /// A fresh, empty backend.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The backend registered under `name` in this process, created on first use; every
    /// `memory://NAME` URL with the same name shares it.
    pub fn named(name: &str) -> Arc<Self> {
        static NAMED: OnceLock<Mutex<HashMap<String, Arc<MemoryBackend>>>> = OnceLock::new();
        let map = NAMED.get_or_init(Default::default);
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    /// Adds a dead letter, dropping the oldest past the cap.
    fn add_dead_letter(&self, st: &mut State, envelope: &Envelope, error: &TaskError) {
        st.dead.push(DeadLetter {
            envelope: envelope.clone(),
            error: error.clone(),
            at: Timestamp::now(),
        });
        let over = st
            .dead
            .len()
            .saturating_sub(self.dead_kept.load(Ordering::Relaxed));
        st.dead.drain(..over);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A held task back to its queue after `delay`; `attempted` says whether this delivery
    /// counts as an attempt (a nack) or not (a deferral).
    fn requeue(&self, lease: &Lease, delay: Duration, attempted: bool) {
        let mut st = self.state();
        if st.holds(lease) {
            if let Some(e) = st.entries.get_mut(&lease.id) {
                if !attempted {
                    e.env.attempts = e.env.attempts.saturating_sub(1);
                }
                e.fence = 0;
            }
            if attempted {
                st.ops.counts.retried += 1;
            }
            let place = if delay.is_zero() {
                Place::Ready
            } else {
                Place::Scheduled(Timestamp::now() + delay)
            };
            st.place(lease.id, place);
        }
        drop(st);
        self.changed.notify_all();
    }
}

impl Broker for MemoryBackend {
    fn enqueue(&self, batch: &[Envelope]) -> Result<()> {
        let now = Timestamp::now();
        let mut st = self.state();
        for env in batch {
            // Revoked before it was sent: dropped, unless it is a workflow step (a worker
            // drops it and fails the rest of its workflow).
            if st.revoked.contains_key(&env.id) && env.flow.is_empty() {
                continue;
            }
            st.next_seq += 1;
            let seq = st.next_seq;
            let affine = env.affinity_at(now).cloned();
            let place = match (env.eta, &affine) {
                (Some(t), _) if t > now => Place::Scheduled(t),
                (_, Some(a)) => Place::Scheduled(a.until),
                _ => Place::Ready,
            };
            st.remove(env.id);
            let mut kept = env.clone();
            kept.affinity = None;
            st.entries.insert(
                env.id,
                Entry {
                    env: kept,
                    seq,
                    place,
                    fence: 0,
                    affine: affine.map(|a| a.worker),
                },
            );
            st.attach(env.id, place);
            st.ops.sent(env);
        }
        drop(st);
        self.changed.notify_all();
        Ok(())
    }

    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()> {
        let now = Timestamp::now();
        let fresh: Vec<Envelope> = {
            let mut st = self.state();
            // Forget expired ids now and then (amortised: when the map doubles).
            if st.sent_once.len().is_power_of_two() {
                st.sent_once.retain(|_, until| *until > now);
            }
            batch
                .iter()
                .filter(|e| st.sent_once.insert(e.id, now + ONCE_TTL).is_none())
                .cloned()
                .collect()
        };
        // Between the two locks nothing can take the ids back, so a repeat is still dropped.
        self.enqueue(&fresh)
    }

    fn reserve_as(
        &self,
        worker: Option<&str>,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let mut st = self.state();
        loop {
            let now = Timestamp::now();
            st.promote(now);
            let mut out = Vec::new();
            while out.len() < max {
                let mine = worker.and_then(|w| st.oldest_affine(w, queues));
                let Some(id) = mine.or_else(|| st.best_ready(queues)) else {
                    break;
                };
                st.place(id, Place::Reserved(now + lease));
                st.last_fence += 1;
                let fence = st.last_fence;
                let Some(e) = st.entries.get_mut(&id) else {
                    break;
                };
                e.env.attempts += 1;
                e.fence = fence;
                out.push(Delivery {
                    lease: Lease { id, fence },
                    envelope: e.env.clone(),
                });
                if let Some(n) = st.ops.noted.get_mut(&id) {
                    n.received = Some(now);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !out.is_empty() || left.is_zero() {
                return Ok(out);
            }
            let until_due = st
                .next_due()
                .map_or(left, |t| t.until().max(Duration::from_millis(1)));
            st = self
                .changed
                .wait_timeout(st, left.min(until_due))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>> {
        let until = Timestamp::now() + lease;
        let mut st = self.state();
        let mut lost = Vec::new();
        for l in leases {
            // A lease that ran out and was seen to (the task is ready again) is lost even
            // though a late ack would still be accepted.
            let reserved = st
                .entries
                .get(&l.id)
                .is_some_and(|e| matches!(e.place, Place::Reserved(_)));
            if reserved && st.holds(l) && !st.revoked.contains_key(&l.id) {
                st.place(l.id, Place::Reserved(until));
            } else {
                lost.push(*l);
            }
        }
        Ok(lost)
    }

    fn complete(&self, leases: &[Lease]) -> Result<()> {
        let mut st = self.state();
        for l in leases {
            if st.holds(l) {
                st.remove(l.id);
            }
        }
        Ok(())
    }

    fn retry(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue(lease, delay, true);
        Ok(())
    }

    fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.requeue(lease, delay, false);
        Ok(())
    }

    fn discard(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()> {
        let mut st = self.state();
        // A stale lease: the task lives on elsewhere, so it is not dead.
        if st.holds(lease) {
            st.remove(lease.id);
            self.add_dead_letter(&mut st, envelope, error);
        }
        Ok(())
    }

    fn bury(&self, envelope: &Envelope, error: &TaskError) -> Result<()> {
        self.add_dead_letter(&mut self.state(), envelope, error);
        Ok(())
    }

    fn revoke(&self, id: TaskId) -> Result<Revoked> {
        let now = Timestamp::now();
        let mut st = self.state();
        // Forget old ids now and then (amortised: when the map doubles), not on every revoke.
        if st.revoked.len().is_power_of_two() {
            st.revoked.retain(|_, t| now - *t < REVOKE_MEMORY);
        }
        st.revoked.insert(id, now);
        let Some(e) = st.entries.get(&id) else {
            return Ok(Revoked::NotFound);
        };
        if matches!(e.place, Place::Reserved(_)) {
            return Ok(Revoked::Running);
        }
        let record = ResultRecord::revoked_waiting(id, e.env.task.clone(), e.env.attempts);
        // A workflow step stays, to be delivered and dropped by a worker, which then fails the
        // rest of its workflow.
        if e.env.flow.is_empty() {
            st.remove(id);
        }
        let old = st.results.get(&id);
        if old.is_none_or(|old| record.supersedes(old)) {
            let old = old.map(|o| o.state);
            st.ops.stored(old, record.state);
            st.results.insert(id, record);
        }
        drop(st);
        self.changed.notify_all();
        Ok(Revoked::Pending)
    }

    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let st = self.state();
        Ok(ids
            .iter()
            .filter(|id| st.revoked.contains_key(id))
            .copied()
            .collect())
    }
}

impl Locks for MemoryBackend {
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let now = Timestamp::now();
        let mut st = self.state();
        match st.locks.get(name) {
            Some((h, until)) if h != holder && *until > now => Ok(false),
            _ => {
                st.locks
                    .insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    fn unlock(&self, name: &str, holder: &str) -> Result<()> {
        let mut st = self.state();
        if st.locks.get(name).is_some_and(|(h, _)| h == holder) {
            st.locks.remove(name);
        }
        Ok(())
    }
}

impl RateLimits for MemoryBackend {
    fn acquire(
        &self,
        key: &str,
        interval: Duration,
        n: u32,
        horizon: Duration,
    ) -> Result<(Vec<Duration>, Duration)> {
        let mut st = self.state();
        let tat = st.rates.get(key).copied();
        let (slots, next, tat) = crate::gcra(
            tat,
            crate::now_micros(),
            interval.as_micros() as i64,
            n,
            horizon.as_micros() as i64,
        );
        st.rates.insert(key.to_owned(), tat);
        Ok(crate::slots_from_micros(&slots, next))
    }
}

impl Presence for MemoryBackend {
    fn heartbeat(&self, worker: &WorkerInfo) -> Result<()> {
        let mut st = self.state();
        st.workers.insert(worker.id.clone(), worker.clone());
        // Records of workers gone without unregistering.
        let now = Timestamp::now();
        st.workers
            .retain(|_, w| now - w.heartbeat <= crate::WORKER_RECORD_TTL);
        Ok(())
    }

    fn unregister(&self, worker_id: &str) -> Result<()> {
        self.state().workers.remove(worker_id);
        Ok(())
    }

    fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>> {
        let now = Timestamp::now();
        let mut v: Vec<WorkerInfo> = self
            .state()
            .workers
            .values()
            .filter(|w| now - w.heartbeat <= within)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
}

impl Admin for MemoryBackend {
    fn stats(&self) -> Result<Vec<QueueStats>> {
        let st = self.state();
        let mut by: HashMap<&str, QueueStats> = HashMap::new();
        for e in st.entries.values() {
            let s = by.entry(&e.env.queue).or_insert_with(|| QueueStats {
                queue: e.env.queue.clone(),
                ..Default::default()
            });
            match e.place {
                Place::Ready => s.ready += 1,
                Place::Scheduled(_) => s.scheduled += 1,
                Place::Reserved(_) => s.reserved += 1,
            }
        }
        let mut v: Vec<QueueStats> = by.into_values().collect();
        v.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(v)
    }

    fn purge(&self, queue: &str) -> Result<u64> {
        let mut st = self.state();
        let ids: Vec<TaskId> = st
            .entries
            .values()
            .filter(|e| e.env.queue == queue && !matches!(e.place, Place::Reserved(_)))
            .map(|e| e.env.id)
            .collect();
        for id in &ids {
            st.remove(*id);
        }
        Ok(ids.len() as u64)
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .state()
            .dead
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }
}

impl crate::Driver for MemoryBackend {}

/// Deletes `id`'s record, join and blob; 1 if there was a record.
fn forget_one(st: &mut State, id: TaskId) -> u64 {
    st.joins.remove(&id);
    st.blobs.remove(&id);
    u64::from(st.results.remove(&id).is_some())
}

impl ResultStore for MemoryBackend {
    fn store(&self, records: &[ResultRecord]) -> Result<()> {
        let mut st = self.state();
        for r in records {
            let old = st.results.get(&r.id);
            if old.is_none_or(|old| r.supersedes(old)) {
                let old = old.map(|o| o.state);
                st.ops.stored(old, r.state);
                st.results.insert(r.id, r.clone());
            }
        }
        drop(st);
        self.changed.notify_all();
        Ok(())
    }

    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>> {
        let now = Timestamp::now();
        Ok(self
            .state()
            .results
            .get(&id)
            .filter(|r| r.expires.is_none_or(|e| e > now))
            .cloned())
    }

    fn wait_any(&self, ids: &[TaskId], timeout: Duration) -> Result<Vec<Option<ResultRecord>>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            let now = Timestamp::now();
            let recs: Vec<Option<ResultRecord>> = ids
                .iter()
                .map(|id| {
                    st.results
                        .get(id)
                        .filter(|r| r.expires.is_none_or(|e| e > now))
                        .cloned()
                })
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if crate::results::any_final(&recs) || left.is_zero() {
                return Ok(recs);
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state();
        loop {
            let now = Timestamp::now();
            let rec = st
                .results
                .get(&id)
                .filter(|r| r.expires.is_none_or(|e| e > now))
                .cloned();
            let left = deadline.saturating_duration_since(Instant::now());
            if rec.as_ref().is_some_and(|r| r.state.is_final()) || left.is_zero() {
                return Ok(rec);
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>> {
        let now = Timestamp::now();
        let mut st = self.state();
        if st.joins.len().is_power_of_two() {
            st.joins.retain(|_, (_, until)| *until > now);
        }
        Ok(entries
            .iter()
            .map(|e| {
                let (members, until) = st
                    .joins
                    .entry(e.id)
                    .or_insert_with(|| (BTreeMap::new(), now + ONCE_TTL));
                // Kept ONCE_TTL after its last member, as on Redis and SQLite.
                *until = now + ONCE_TTL;
                members.insert(e.index, e.value.to_vec());
                (members.len() >= e.size as usize).then(|| members.values().cloned().collect())
            })
            .collect())
    }

    fn put_blob(&self, key: TaskId, bytes: &[u8]) -> Result<()> {
        let now = Timestamp::now();
        let mut st = self.state();
        if st.blobs.len().is_power_of_two() {
            st.blobs.retain(|_, (_, until)| *until > now);
        }
        st.blobs.insert(key, (bytes.to_vec(), now + ONCE_TTL));
        Ok(())
    }

    fn get_blob(&self, key: TaskId) -> Result<Option<Vec<u8>>> {
        let now = Timestamp::now();
        Ok(self
            .state()
            .blobs
            .get(&key)
            .filter(|(_, until)| *until > now)
            .map(|(b, _)| b.clone()))
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        let mut st = self.state();
        let v = st.counters.entry(key.to_owned()).or_insert(0);
        *v += by;
        Ok(*v)
    }

    fn forget(&self, ids: &[TaskId]) -> Result<u64> {
        let mut st = self.state();
        Ok(ids.iter().map(|id| forget_one(&mut st, *id)).sum())
    }

    // Both take the shared objects' lock, then the state's (the only place both are held).
    fn forget_unshared(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        let mut objects = self.objects();
        let mut st = self.state();
        let mut kept = Vec::new();
        for id in ids {
            let dict = crate::holders_dict(*id);
            if objects.mark_if_held(&dict) {
                kept.push(*id);
            } else {
                objects.drop_dict(&dict);
                forget_one(&mut st, *id);
            }
        }
        Ok(kept)
    }

    fn unshare(&self, id: TaskId, holder: &[u8]) -> Result<bool> {
        let mut objects = self.objects();
        let mut st = self.state();
        let forgot = objects.unhold(&crate::holders_dict(id), holder);
        if forgot {
            forget_one(&mut st, id);
        }
        Ok(forgot)
    }

    fn purge_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let mut st = self.state();
        let before = st.results.len();
        st.results.retain(|_, r| r.expires.is_none_or(|e| e > now));
        // The index forgets what neither the broker nor the result store holds any more.
        let State {
            ops,
            entries,
            results,
            ..
        } = &mut *st;
        ops.noted
            .retain(|id, _| entries.contains_key(id) || results.contains_key(id));
        Ok((before - st.results.len()) as u64)
    }
}
