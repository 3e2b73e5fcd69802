//! lovage's brokers and result stores: where tasks wait, and where their results land.
//!
//! [`Broker`] reads as a task's life: enqueue, reserve (with a lease), ack, nack (retry later),
//! extend the lease, revoke, dead-letter. [`ResultStore`] keeps outcomes and lets a client wait
//! for one. Backends: `memory` (one process, for tests) and `sqlite` (the embedded default, one
//! file shared by the processes of a host). Every backend passes one conformance suite
//! (`tests/conformance.rs`).
//!
//! Delivery is at least once: a reserved task carries a lease the worker renews while it runs;
//! when a lease runs out (the worker died), the task is delivered again. A message is removed
//! only by an `ack` carrying the lease of its current delivery.

pub mod client;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis_backend;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod time;

use std::sync::Arc;
use std::time::Duration;

use lovage_core::canvas::Frame;
use lovage_core::{Codec, Signature, TaskError, TaskId, TaskOptions, TaskState};
use serde::{Deserialize, Serialize};

pub use client::{App, AsyncResult};
pub use time::Timestamp;

/// A broker or result-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The URL names no backend this build has, or is malformed.
    #[error("bad broker URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The backend could not be opened or reached.
    #[error("cannot open the {backend} broker at {location}: {reason}")]
    Open {
        backend: &'static str,
        location: String,
        reason: String,
    },
    /// The file or database exists but is not a lovage broker (or is a newer format).
    #[error("{location} is not a lovage broker database: {reason}")]
    NotLovage { location: String, reason: String },
    /// An operation failed in the backend.
    #[error("{backend} broker at {location}: {op} failed: {reason}")]
    Backend {
        backend: &'static str,
        location: String,
        op: &'static str,
        reason: String,
    },
    /// The call's arguments could not be encoded.
    #[error(transparent)]
    Codec(#[from] lovage_core::CodecError),
    /// Stored data could not be decoded.
    #[error("corrupt record in the broker: {0}")]
    Corrupt(String),
}

/// Result alias for broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// The generic cell rate algorithm behind [`Broker::acquire`], in microseconds: from the
/// stored theoretical arrival time `tat`, books up to `n` slots no later than `now + horizon`.
/// Returns the slots' offsets from `now`, the wait until the next slot is within the horizon,
/// and the new `tat`. An idle limit does not save up: `tat` never lags `now`.
pub fn gcra(
    tat: Option<i64>,
    now: i64,
    interval: i64,
    n: u32,
    horizon: i64,
) -> (Vec<i64>, i64, i64) {
    let interval = interval.max(1);
    let mut tat = tat.unwrap_or(now).max(now);
    let mut slots = Vec::new();
    while slots.len() < n as usize && tat <= now + horizon {
        slots.push(tat - now);
        tat += interval;
    }
    let next = (tat - now - horizon).max(0);
    (slots, next, tat)
}

/// [`Broker::acquire`]'s answer from microseconds.
pub fn slots_from_micros(slots: &[i64], next: i64) -> (Vec<Duration>, Duration) {
    let d = |us: i64| Duration::from_micros(us.max(0) as u64);
    (slots.iter().map(|s| d(*s)).collect(), d(next))
}

/// Microseconds since the Unix epoch, for rate limits finer than a millisecond.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// How long `enqueue_once` remembers an id and a join its members.
pub const ONCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The queue a task goes to when nothing says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// A task message as it waits in a broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The task's id.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Queue it waits in.
    pub queue: String,
    /// 0–9, higher first; FIFO within a priority.
    pub priority: u8,
    /// Codec of `args` and of the result.
    pub codec: Codec,
    /// Encoded arguments.
    pub args: Vec<u8>,
    /// Options of this call (retry policy, time limits, ...).
    pub options: TaskOptions,
    /// Not delivered before this time.
    pub eta: Option<Timestamp>,
    /// Not run after this time: a worker that receives it later records it REVOKED.
    pub expires: Option<Timestamp>,
    /// Deliveries so far, including the current one once reserved.
    pub attempts: u32,
    /// When it was first sent.
    pub created: Timestamp,
    /// Where its workflow goes next (empty for a plain task): see `lovage_core::canvas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow: Vec<Frame>,
}

impl Envelope {
    /// An envelope for `sig` with a fresh id, taking queue, priority, countdown/ETA and
    /// expiry from its options.
    pub fn from_signature(sig: Signature) -> Self {
        let now = Timestamp::now();
        let o = &sig.options;
        let eta = o
            .eta
            .map(Timestamp::from_millis)
            .or_else(|| o.countdown.map(|d| now + d));
        let expires = o.expires.map(|d| now + d);
        Envelope {
            id: TaskId::new(),
            queue: o.queue.clone().unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            priority: o.priority.unwrap_or(0).min(9),
            codec: sig.codec,
            eta,
            expires,
            attempts: 0,
            created: now,
            task: sig.task,
            args: sig.args,
            options: sig.options,
            flow: Vec::new(),
        }
    }
}

/// Proof of one delivery: acking, retrying or extending needs it, so a worker whose lease ran
/// out cannot remove a task that was delivered again elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub id: TaskId,
    /// Which delivery (the envelope's `attempts` at reserve time).
    pub delivery: u32,
}

/// A reserved task and its lease.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The task, `attempts` counting this delivery.
    pub envelope: Envelope,
    /// What to ack, retry or extend with.
    pub lease: Lease,
}

/// What `revoke` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// It was waiting; it is gone and will not run.
    Pending,
    /// A worker holds it; the worker is told to cancel it.
    Running,
    /// The broker does not hold it (finished, or never sent); later deliveries are refused.
    NotFound,
}

/// Counts for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Ready to run now.
    pub ready: u64,
    /// Waiting for their ETA or retry delay.
    pub scheduled: u64,
    /// Held by workers.
    pub reserved: u64,
}

/// A task that failed its last attempt, kept for inspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The task as it was last delivered.
    pub envelope: Envelope,
    /// Why it failed.
    pub error: TaskError,
    /// When it was dead-lettered.
    pub at: Timestamp,
}

/// A worker's self-description, refreshed by its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique id, `name@host.pid`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues it consumes.
    pub queues: Vec<String>,
    /// Pool kind and size, e.g. "threads x2".
    pub pool: String,
    /// When it started.
    pub started: Timestamp,
    /// Last heartbeat.
    pub heartbeat: Timestamp,
    /// Tasks finished so far.
    pub tasks_done: u64,
    /// Tasks running now.
    pub active: u64,
}

/// Where tasks wait. Every method is safe to call from several threads and processes.
pub trait Broker: Send + Sync {
    /// Stores a batch of tasks; when it returns, they survive a crash of every process.
    fn enqueue(&self, batch: &[Envelope]) -> Result<()>;

    /// Takes or renews the lock `name` for `holder` until `ttl` from now; true when `holder`
    /// holds it, false while someone else does. A lock not renewed in time lapses, so a holder
    /// that dies hands over within `ttl` (`lovage beat` elects its leader this way).
    fn lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lock `name` up if `holder` has it.
    fn unlock(&self, name: &str, holder: &str) -> Result<()>;

    /// Enqueues each envelope whose id was never sent before through `enqueue_once` (ids are
    /// remembered for [`ONCE_TTL`]); a repeat is dropped. Workflows send their next steps this
    /// way, so a step that runs twice does not start its continuation twice.
    fn enqueue_once(&self, batch: &[Envelope]) -> Result<()>;

    /// Leases up to `max` ready tasks from `queues` for `lease`, highest priority first and FIFO
    /// within a priority; tasks whose lease ran out are ready again. Waits up to `wait` when
    /// none is ready.
    fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Removes finished tasks. A lease from an older delivery is ignored.
    fn ack(&self, leases: &[Lease]) -> Result<()>;

    /// Sends `next` as [`Broker::enqueue_once`] does, then acks `leases`: a finished workflow
    /// step and the steps it starts. SQLite does both in one transaction.
    fn ack_and_send_once(&self, leases: &[Lease], next: &[Envelope]) -> Result<()> {
        if !next.is_empty() {
            self.enqueue_once(next)?;
        }
        self.ack(leases)
    }

    /// Returns a task to its queue, ready after `delay` (0: at once).
    fn nack(&self, lease: &Lease, delay: Duration) -> Result<()>;

    /// Puts a reserved task back until `delay` from now without counting the delivery as an
    /// attempt (a task held back by a rate limit was not tried). A stale lease does nothing.
    fn defer(&self, lease: &Lease, delay: Duration) -> Result<()>;

    /// Books up to `n` runs under the rate limit `key`, shared by every worker: one run per
    /// `interval`, none saved up while idle (Celery's bucket of one), slots no further than
    /// `horizon` ahead. Returns when each booked run may start (from now, in order) and how
    /// long until slots free up for the rest.
    fn acquire(
        &self,
        key: &str,
        interval: Duration,
        n: u32,
        horizon: Duration,
    ) -> Result<(Vec<Duration>, Duration)>;

    /// Pushes the leases' deadlines to `lease` from now; returns the leases that are no longer
    /// held (acked, revoked, or taken over after expiry).
    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<Lease>>;

    /// Revokes a task: removes it if waiting, flags it if a worker holds it.
    fn revoke(&self, id: TaskId) -> Result<Revoked>;

    /// Which of `ids` have been revoked.
    fn revoked(&self, ids: &[TaskId]) -> Result<Vec<TaskId>>;

    /// Counts per queue, for every queue that holds a task.
    fn stats(&self) -> Result<Vec<QueueStats>>;

    /// Removes every waiting (not reserved) task of `queue`; returns how many.
    fn purge(&self, queue: &str) -> Result<u64>;

    /// Moves a task that failed for the last time to the dead-letter list and removes it.
    fn dead_letter(&self, lease: &Lease, envelope: &Envelope, error: &TaskError) -> Result<()>;

    /// The most recent dead letters, newest first.
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Records or refreshes a worker.
    fn heartbeat(&self, worker: &WorkerInfo) -> Result<()>;

    /// Removes a worker's record (clean shutdown).
    fn unregister(&self, worker_id: &str) -> Result<()>;

    /// Workers seen within `within`.
    fn workers(&self, within: Duration) -> Result<Vec<WorkerInfo>>;
}

/// A task's outcome (or progress) as the result store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The task.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Where it is in its life.
    pub state: TaskState,
    /// The encoded value, on SUCCESS.
    pub value: Option<Vec<u8>>,
    /// Codec of `value`.
    pub codec: Codec,
    /// The error, on FAILURE, RETRY or REVOKED.
    pub error: Option<TaskError>,
    /// Attempts so far.
    pub attempts: u32,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// When it started (last attempt).
    pub started: Option<Timestamp>,
    /// When it reached this state.
    pub updated: Timestamp,
    /// When the record may be deleted.
    pub expires: Option<Timestamp>,
}

/// One member's result for [`ResultStore::join`].
#[derive(Debug, Clone, Copy)]
pub struct JoinEntry<'a> {
    /// The join (a group's or chord's id).
    pub id: TaskId,
    /// The member's place.
    pub index: u32,
    /// How many members the join has.
    pub size: u32,
    /// The member's result.
    pub value: &'a [u8],
}

/// Where outcomes are kept.
pub trait ResultStore: Send + Sync {
    /// Stores a batch of records, replacing earlier ones for the same ids.
    fn store(&self, records: &[ResultRecord]) -> Result<()>;

    /// The record for `id`, if any (an unknown id is PENDING to a client).
    fn get(&self, id: TaskId) -> Result<Option<ResultRecord>>;

    /// The records for many ids at once, in order (one round trip where the backend allows).
    fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Option<ResultRecord>>> {
        ids.iter().map(|id| self.get(*id)).collect()
    }

    /// Waits until `id` reaches a final state or `timeout` passes; returns what is known then.
    fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<ResultRecord>>;

    /// Records each entry's `value` as member `index` of the join `id` of `size` members
    /// (recording the same index again replaces it), in one step where the backend allows.
    /// For each entry, in order: once all `size` members of its join are in, every value in
    /// index order — on that call and any later one — else `None`. Joins are kept for
    /// [`ONCE_TTL`].
    fn join(&self, entries: &[JoinEntry<'_>]) -> Result<Vec<Option<Vec<Vec<u8>>>>>;

    /// Keeps `bytes` under `key` for [`ONCE_TTL`] (a workflow's long chain, stored once instead
    /// of in every step's message). Writing the same key again replaces it.
    fn put_blob(&self, key: TaskId, bytes: &[u8]) -> Result<()>;

    /// What [`ResultStore::put_blob`] kept under `key`, if it is still there.
    fn get_blob(&self, key: TaskId) -> Result<Option<Vec<u8>>>;

    /// Adds `by` to the counter `key` atomically and returns the new value.
    fn incr(&self, key: &str, by: i64) -> Result<i64>;

    /// Deletes records past their expiry; returns how many (0 for a backend whose keys expire
    /// by themselves). An expired record is never returned by `get`, purged or not.
    fn purge_expired(&self) -> Result<u64>;
}

/// A broker and a result store opened from one URL.
#[derive(Clone)]
pub struct Backend {
    /// Where tasks wait.
    pub broker: Arc<dyn Broker>,
    /// Where results land.
    pub results: Arc<dyn ResultStore>,
    /// The URL it was opened from (without a password).
    pub url: String,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("url", &self.url).finish()
    }
}

/// The broker URL used when none is given: `sqlite://lovage.db` in the current directory.
pub const DEFAULT_URL: &str = "sqlite://lovage.db";

/// Opens the backend named by `url`: `sqlite://PATH` (relative or absolute; `sqlite:///abs`
/// also works), `redis://[user:pass@]host:port/db[?prefix=name]` (feature `redis`), or
/// `memory://NAME` (shared by every `connect` in this process with that name).
pub fn connect(url: &str) -> Result<Backend> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| BrokerError::BadUrl {
        url: url.to_owned(),
        reason: "expected scheme://location, e.g. sqlite://lovage.db".into(),
    })?;
    match scheme {
        "memory" => {
            let b = memory::MemoryBackend::named(rest);
            Ok(Backend {
                broker: b.clone(),
                results: b,
                url: url.to_owned(),
            })
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            if rest.is_empty() {
                return Err(BrokerError::BadUrl {
                    url: url.to_owned(),
                    reason: "no file path after sqlite://".into(),
                });
            }
            let b = Arc::new(sqlite::SqliteBackend::open(rest)?);
            Ok(Backend {
                broker: b.clone(),
                results: b,
                url: url.to_owned(),
            })
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let b = Arc::new(redis_backend::RedisBackend::open(url)?);
            Ok(Backend {
                broker: b.clone(),
                results: b,
                url: url.to_owned(),
            })
        }
        other => {
            let mut have = vec!["memory"];
            if cfg!(feature = "sqlite") {
                have.push("sqlite");
            }
            if cfg!(feature = "redis") {
                have.push("redis");
            }
            Err(BrokerError::BadUrl {
                url: url.to_owned(),
                reason: format!(
                    "unknown backend {other:?}; this build has: {}",
                    have.join(", ")
                ),
            })
        }
    }
}
