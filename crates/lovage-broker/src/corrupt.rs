//! A task message a backend holds but cannot decode (written by something else, or by a newer
//! format during a rolling upgrade): what can still be read of it, and the dead letter and
//! FAILURE record every backend gives it instead of failing the reserve that met it.

use lovage_core::{kinds, Codec, TaskError, TaskId, TaskState};

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
