//! What travels through a broker and lands in a result store: the task message, the proof of
//! a delivery, and the records read back by clients and operators.

use std::collections::BTreeMap;
use std::time::Duration;

use lovage_core::canvas::Frame;
use lovage_core::{kinds, Codec, Signature, TaskError, TaskId, TaskOptions, TaskState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// How long `enqueue_once` remembers an id and a join its members.
pub const ONCE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A worker's record not refreshed for this long is deleted (a worker killed with -9 never
/// unregisters): by the next heartbeat of any worker, or the next listing on Redis.
pub const WORKER_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Dead letters each backend keeps unless its URL says otherwise (`?dead_letters=N`): past
/// this many, the oldest are dropped, so a queue that fails for good cannot fill the storage.
pub const DEAD_LETTERS_KEPT: usize = 10_000;

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
    /// The worker it is queued for (the data plane puts a graph node with the worker holding
    /// most of its input bytes): that worker may take it at once, any other only once the
    /// affinity's `until` passed (work stealing), so a worker that is gone or busy never
    /// strands it. Used up when the task is queued: a delivered envelope carries none, and a
    /// task put back (a retry, a lease that ran out) waits for every worker alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// A task's preferred worker and until when only that worker may take it (see
/// [`Envelope::affinity`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    /// The worker's id (`name@host.pid`, as its heartbeats and its `reserve_as` name it).
    pub worker: String,
    /// From this time on any worker may take the task (steal it).
    pub until: Timestamp,
}

impl Affinity {
    /// An affinity to `worker` that other workers may steal after `delay` from now.
    pub fn for_worker(worker: impl Into<String>, delay: Duration) -> Affinity {
        Affinity {
            worker: worker.into(),
            until: Timestamp::now() + delay,
        }
    }
}

impl Envelope {
    /// An envelope for `sig` with a fresh id, taking queue, priority, countdown/ETA and
    /// expiry from its options. A call that needs resources waits in its queue's resource
    /// queue (`queue[gpu]`, see [`lovage_core::resource_queue`]), which only workers that
    /// have those resources consume.
    pub fn from_signature(sig: Signature) -> Self {
        let now = Timestamp::now();
        let o = &sig.options;
        let queue = o.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        let queue = if o.resources_needed().next().is_some() {
            lovage_core::resource_queue(queue, o.resources_needed().map(|(n, _)| n))
        } else {
            queue.to_owned()
        };
        let eta = o
            .eta
            .map(Timestamp::from_millis)
            .or_else(|| o.countdown.map(|d| now + d));
        let expires = o.expires.map(|d| now + d);
        Envelope {
            id: TaskId::new(),
            queue,
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
            affinity: None,
        }
    }

    /// The affinity a backend queues this task with when it is sent at `now`: none when it
    /// has none, when its steal time has passed already, or when the task waits for a later
    /// ETA (at which time every worker may take it alike).
    pub fn affinity_at(&self, now: Timestamp) -> Option<&Affinity> {
        let a = self.affinity.as_ref()?;
        let later_eta = self.eta.is_some_and(|t| t > now);
        (a.until > now && !later_eta).then_some(a)
    }
}

/// Proof of one delivery: acking, retrying or extending needs it, so a worker whose lease ran
/// out cannot remove a task that was delivered again elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The task.
    pub id: TaskId,
    /// The fencing token of this delivery: a number the backend draws afresh on every reserve
    /// (unlike the attempt count, which a deferral keeps) and forgets when the delivery ends
    /// with a retry or a deferral, so a call repeated from an ended delivery matches nothing.
    /// While nobody else has reserved the task, it still holds after the lease ran out: a late
    /// ack is accepted.
    pub fence: u64,
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
    /// The task names it can run (its registry), so a server can refuse a name no live worker
    /// knows and list the task types. Empty in records of workers older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered: Vec<String>,
    /// Rate and time limits of those tasks that have any (the registered options, with what a
    /// `rate_limit` or `time_limit` control command set over them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, TaskLimits>,
    /// The resources it was started with (`lovage worker --resources gpu=2`): only tasks that
    /// need at most these run on it. Empty for a worker without any (and in older records).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: lovage_core::Resources,
}

/// A task type's limits as a worker applies them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Rate limit such as `"10/s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Soft time limit, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_time_limit_s: Option<f64>,
    /// Hard time limit, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<f64>,
}

impl TaskLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.rate_limit.is_none() && self.soft_time_limit_s.is_none() && self.time_limit_s.is_none()
    }
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

impl WorkerInfo {
    /// A worker's record from its JSON, or `None` (logged) for one that does not decode: one
    /// bad record does not hide the others from `lovage workers`.
    pub(crate) fn decode_or_skip(json: &str) -> Option<WorkerInfo> {
        serde_json::from_str(json)
            .map_err(
                |e| tracing::warn!(error = %e, "skipping a worker record that does not decode"),
            )
            .ok()
    }
}

impl ResultRecord {
    /// The REVOKED record a backend stores in the same step as it revokes a waiting task (so a
    /// waiter never sees it PENDING for good): `attempts` are the task's attempts so far, so
    /// the record supersedes a RETRY record of the last one.
    pub(crate) fn revoked_waiting(id: TaskId, task: String, attempts: u32) -> ResultRecord {
        ResultRecord {
            id,
            task,
            state: TaskState::Revoked,
            value: None,
            codec: Codec::default(),
            error: Some(TaskError::new(kinds::REVOKED, "revoked before it started")),
            attempts,
            worker: None,
            started: None,
            updated: Timestamp::now(),
            expires: None,
        }
    }

    /// Whether this record may replace `old`, the one stored for the same id: it is from the
    /// same or a later attempt, and it does not take a finished task back to unfinished. A run
    /// cut off past its lease may store its outcome after another worker's rerun stored its
    /// own; every backend applies this rule as it stores, so the rerun's record stays.
    pub fn supersedes(&self, old: &ResultRecord) -> bool {
        self.attempts >= old.attempts && (self.state.is_final() || !old.state.is_final())
    }

    /// The reference stored in place of the value when the worker kept a large result (the
    /// data plane): `None` for an inline value or none; an error if the reference is garbled.
    /// Reading it fetches nothing, unlike [`outcome`](Self::outcome).
    pub fn result_ref(&self) -> Option<Result<crate::ResultRef, crate::FetchError>> {
        crate::ResultRef::decode(self.value.as_deref()?)
    }

    /// What a finished record says: on SUCCESS the stored value decoded as `R` (a result that
    /// was not kept, `ignore_result`, reads as `null`), otherwise its error. `None` while the
    /// task has not finished. Clients and the CLI all read records through this.
    pub fn outcome<R: DeserializeOwned>(&self) -> Option<Result<R, TaskError>> {
        if !self.state.is_final() {
            return None;
        }
        Some(match (self.state, &self.value) {
            // A value kept by its worker (the data plane) is fetched here, on first read.
            // So is each one inside it (a graph's collection of kept results).
            (TaskState::Success, Some(bytes)) => {
                match crate::dataref::resolve_all(bytes, self.codec) {
                    Ok(bytes) => self
                        .codec
                        .decode(&bytes, "task result")
                        .map_err(TaskError::from),
                    Err(e) => Err(TaskError::new(lovage_core::kinds::BROKER, e.to_string())),
                }
            }
            (TaskState::Success, None) => {
                serde_json::from_value(serde_json::Value::Null).map_err(|e| {
                    TaskError::from(lovage_core::CodecError::Decode {
                        codec: self.codec,
                        what: "task result",
                        reason: e.to_string(),
                    })
                })
            }
            _ => Err(self.error.clone().unwrap_or_else(|| {
                TaskError::new(
                    lovage_core::kinds::FAILED,
                    format!("task {} ended {}", self.id, self.state),
                )
            })),
        })
    }
}

/// One member's result for [`ResultStore::join`](crate::ResultStore::join).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_needing_resources_waits_in_its_queues_resource_queue() {
        let sig = |queue: Option<&str>, res: &[(&str, u32)]| {
            let mut s = Signature::from_encoded("t", b"[]".to_vec(), Codec::Json);
            s.options.queue = queue.map(str::to_owned);
            if !res.is_empty() {
                s.options.resources = Some(
                    res.iter()
                        .map(|(n, u)| ((*n).to_owned(), (*u).into()))
                        .collect(),
                );
            }
            s
        };
        let q = |s| Envelope::from_signature(s).queue;
        assert_eq!(q(sig(None, &[])), "default");
        assert_eq!(q(sig(None, &[("gpu", 1)])), "default[gpu]");
        // Names sorted, whatever the order given; amounts do not change the queue.
        assert_eq!(q(sig(Some("ml"), &[("mem", 8), ("gpu", 2)])), "ml[gpu,mem]");
        // An entry of 0 units needs nothing.
        assert_eq!(q(sig(Some("ml"), &[("gpu", 0)])), "ml");
    }

    fn record(state: TaskState, value: Option<&[u8]>, error: Option<TaskError>) -> ResultRecord {
        ResultRecord {
            id: TaskId::new(),
            task: "t".into(),
            state,
            value: value.map(<[u8]>::to_vec),
            codec: Codec::Json,
            error,
            attempts: 1,
            worker: None,
            started: None,
            updated: Timestamp::now(),
            expires: None,
        }
    }

    #[test]
    fn a_record_reads_as_its_value_its_error_or_not_yet() {
        let ok = record(TaskState::Success, Some(b"7"), None);
        assert_eq!(ok.outcome::<i64>(), Some(Ok(7)));
        let not_kept = record(TaskState::Success, None, None);
        assert_eq!(not_kept.outcome::<Option<i64>>(), Some(Ok(None)));
        let boom = TaskError::new("Boom", "it broke");
        let failed = record(TaskState::Failure, None, Some(boom.clone()));
        assert_eq!(failed.outcome::<i64>(), Some(Err(boom)));
        let revoked = record(TaskState::Revoked, None, None);
        let e = revoked.outcome::<i64>().unwrap().unwrap_err();
        assert!(e.message.contains("ended"), "{e:?}");
        assert_eq!(record(TaskState::Retry, None, None).outcome::<i64>(), None);
        let garbled = record(TaskState::Success, Some(b"{"), None);
        assert!(garbled.outcome::<i64>().unwrap().is_err());
    }
}
