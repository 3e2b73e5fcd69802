//! The event stream: what happened to tasks and workers, in order, kept bounded in the broker
//! (the newest [`EVENTS_KEPT`]) so a reader that comes back can resume where it stopped.

use lovage_core::{TaskId, TaskState};
use serde::{Deserialize, Serialize};

use crate::{Result, Timestamp};

/// Events a broker keeps; older ones are dropped as new ones come (a reader that falls further
/// behind is told to resync).
pub const EVENTS_KEPT: u64 = 100_000;

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A client sent the task.
    TaskSent,
    /// A worker reserved it.
    TaskReceived,
    /// A worker started running it.
    TaskStarted,
    /// It returned a value.
    TaskSucceeded,
    /// It failed for the last time.
    TaskFailed,
    /// It failed and runs again later.
    TaskRetried,
    /// It was revoked.
    TaskRevoked,
    /// A worker refused it (unknown name, message it could not decode).
    TaskRejected,
    /// A worker started.
    WorkerOnline,
    /// A worker is alive (its heartbeat).
    WorkerHeartbeat,
    /// A worker stopped.
    WorkerOffline,
    /// Someone sent a control command (the audit trail): `worker` names the destination,
    /// `name` the command and `error` who issued it.
    ControlIssued,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [EventKind; 12] = [
        EventKind::TaskSent,
        EventKind::TaskReceived,
        EventKind::TaskStarted,
        EventKind::TaskSucceeded,
        EventKind::TaskFailed,
        EventKind::TaskRetried,
        EventKind::TaskRevoked,
        EventKind::TaskRejected,
        EventKind::WorkerOnline,
        EventKind::WorkerHeartbeat,
        EventKind::WorkerOffline,
        EventKind::ControlIssued,
    ];

    /// The name in the stream, e.g. `task-succeeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TaskSent => "task-sent",
            EventKind::TaskReceived => "task-received",
            EventKind::TaskStarted => "task-started",
            EventKind::TaskSucceeded => "task-succeeded",
            EventKind::TaskFailed => "task-failed",
            EventKind::TaskRetried => "task-retried",
            EventKind::TaskRevoked => "task-revoked",
            EventKind::TaskRejected => "task-rejected",
            EventKind::WorkerOnline => "worker-online",
            EventKind::WorkerHeartbeat => "worker-heartbeat",
            EventKind::WorkerOffline => "worker-offline",
            EventKind::ControlIssued => "control-issued",
        }
    }

    /// The kind named `s` (as [`as_str`](EventKind::as_str) writes it), if any.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the stream: given by the broker as it appends (what a publisher sets is
    /// ignored), one more than the event before it.
    #[serde(default)]
    pub seq: u64,
    /// When it happened.
    pub ts: Timestamp,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The task, for task events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The task's name (or the command, for `control-issued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The task's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The worker it happened on (the destination, for `control-issued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The task's state after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    /// How long the attempt ran, for a finished one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<u64>,
    /// Attempts beyond the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The error, for a failure, retry, rejection or revoke; who issued it, for `control-issued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// The `task-sent` event of a task just enqueued (PENDING, no worker yet).
    pub fn sent(env: &crate::Envelope) -> Event {
        let mut ev = Event::new(EventKind::TaskSent);
        ev.task_id = Some(env.id);
        ev.name = Some(env.task.clone());
        ev.queue = Some(env.queue.clone());
        ev.state = Some(TaskState::Pending);
        ev
    }

    /// An event of `kind` now, with nothing else filled in.
    pub fn new(kind: EventKind) -> Event {
        Event {
            seq: 0,
            ts: Timestamp::now(),
            kind,
            task_id: None,
            name: None,
            queue: None,
            worker: None,
            state: None,
            runtime_ms: None,
            retries: None,
            error: None,
        }
    }
}

/// What a read of the stream returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Events after the asked-for seq, oldest first.
    pub events: Vec<Event>,
    /// The oldest seq the stream still holds (0 when it is empty). A reader that asked for
    /// events after `n` with `n + 1 < oldest_seq` missed some: see [`EventBatch::missed`].
    pub oldest_seq: u64,
    /// The newest seq appended so far (0 when nothing ever was).
    pub last_seq: u64,
}

impl EventBatch {
    /// Whether a reader that had seen everything up to `after` (0: nothing yet, which never
    /// misses) lost events that were dropped before it read them, and must resync.
    pub fn missed(&self, after: u64) -> bool {
        after != 0 && self.oldest_seq > after + 1
    }
}

/// The bounded event stream.
pub trait Events: Send + Sync {
    /// Appends a batch of events in one step, numbering them in order, and drops the oldest
    /// beyond [`EVENTS_KEPT`] (about: a backend may trim in chunks).
    fn publish(&self, events: &[Event]) -> Result<()>;

    /// Up to `limit` events with seq above `after`, oldest first (0: from the oldest kept).
    fn read_events(&self, after: u64, limit: usize) -> Result<EventBatch>;
}
