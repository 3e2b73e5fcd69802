//! A task message a backend holds but cannot decode (written by something else, or by a newer
//! format during a rolling upgrade): what can still be read of it, and the dead letter and
//! FAILURE record every backend gives it instead of failing the reserve that met it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use lovage_core::{kinds, Codec, TaskError, TaskId, TaskState};

use crate::ops::{Event, EventKind};
use crate::{DeadLetter, Envelope, ResultRecord, Timestamp};

/// What can be read of a task message that does not decode.
#[derive(Debug, Clone, Default)]
pub(crate) struct CorruptMessage {
    /// The id, when it parses.
    pub id: Option<TaskId>,
    /// The id as stored.
    pub raw_id: String,
    pub task: String,
    pub queue: String,
    pub attempts: u32,
    pub args: Vec<u8>,
    /// Why it does not decode.
    pub reason: String,
}

impl CorruptMessage {
    /// The error its dead letter and its record carry (kind `CorruptMessage`).
    pub fn error(&self) -> TaskError {
        TaskError::new(
            kinds::CORRUPT_MESSAGE,
            format!(
                "task {:?} ({:?}) in queue {:?} cannot be decoded: {}",
                self.raw_id, self.task, self.queue, self.reason
            ),
        )
    }

    /// Its dead letter: as much of its envelope as could be read (a fresh id when its own does
    /// not parse; the error names the one stored).
    pub fn dead_letter(&self) -> DeadLetter {
        let now = Timestamp::now();
        DeadLetter {
            envelope: Envelope {
                id: self.id.unwrap_or_default(),
                task: self.task.clone(),
                queue: self.queue.clone(),
                priority: 0,
                codec: Codec::Json,
                args: self.args.clone(),
                options: Default::default(),
                eta: None,
                expires: None,
                attempts: self.attempts,
                created: now,
                flow: Vec::new(),
                affinity: None,
            },
            error: self.error(),
            at: now,
        }
    }

    /// Its FAILURE record, kept until deleted, when its id parses.
    pub fn record(&self) -> Option<ResultRecord> {
        Some(ResultRecord {
            id: self.id?,
            task: self.task.clone(),
            state: TaskState::Failure,
            value: None,
            codec: Codec::Json,
            error: Some(self.error()),
            attempts: self.attempts,
            worker: None,
            started: None,
            updated: Timestamp::now(),
            expires: None,
        })
    }

    /// Its `task-rejected` event (no worker named: the reserving worker adds itself).
    pub fn rejected_event(&self) -> Event {
        let mut ev = Event::new(EventKind::TaskRejected);
        ev.task_id = self.id;
        ev.name = Some(self.task.clone()).filter(|t| !t.is_empty());
        ev.queue = Some(self.queue.clone()).filter(|q| !q.is_empty());
        ev.state = Some(TaskState::Failure);
        let e = self.error();
        ev.error = Some(format!("{}: {}", e.kind, e.message));
        ev
    }

    /// Logs it, once, where it is set aside.
    pub fn log(&self) {
        tracing::warn!(task_id = %self.raw_id, task = %self.task, queue = %self.queue, error = %self.error(), "a message that cannot be decoded went to the dead letters");
    }
}

/// What a reader gets for a stored result record that does not decode: a FAILURE of kind
/// `CorruptMessage` for that id that says so, instead of an error for the whole batch.
pub(crate) fn unreadable_result(id: TaskId, reason: impl std::fmt::Display) -> ResultRecord {
    ResultRecord {
        id,
        task: String::new(),
        state: TaskState::Failure,
        value: None,
        codec: Codec::Json,
        error: Some(TaskError::new(
            kinds::CORRUPT_MESSAGE,
            format!("the stored result of task {id} cannot be decoded: {reason}"),
        )),
        attempts: 0,
        worker: None,
        started: None,
        updated: Timestamp::now(),
        expires: None,
    }
}

/// `task-rejected` events a backend keeps for messages its reserves set aside, until a worker
/// takes them ([`Broker::take_rejected`](crate::Broker::take_rejected)); the newest
/// [`REJECTED_KEPT`]. Noted only after the set-aside is written, so a rolled-back reserve
/// tells of nothing; taken with one atomic load when there is nothing (the usual case).
#[derive(Debug, Default)]
pub(crate) struct RejectedLog {
    any: AtomicBool,
    events: Mutex<Vec<Event>>,
}

/// Rejections a backend holds for a worker that does not take them (events off in every
/// worker of the process): a bound, not a queue to drain.
pub(crate) const REJECTED_KEPT: usize = 1000;

impl RejectedLog {
    /// Keeps `bad`'s `task-rejected` event.
    pub fn note(&self, bad: &CorruptMessage) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= REJECTED_KEPT {
            events.remove(0);
        }
        events.push(bad.rejected_event());
        self.any.store(true, Ordering::Release);
    }

    /// The events kept so far, oldest first, and forgets them.
    pub fn take(&self) -> Vec<Event> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        self.any.store(false, Ordering::Release);
        std::mem::take(&mut *events)
    }
}
