//! The one reading of a stored result record every command shares: the task's value, its
//! error, or that it has not finished. `result`, `submit --wait`, `status`, `map`, `demo` and
//! the benchmarks all go through [`outcome`], so they agree on what a record means.

use lovage::{kinds, ResultRecord, TaskError, TaskId, TaskState};
use serde::de::DeserializeOwned;

/// What a record says about a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// It succeeded; its stored value, decoded.
    Done(T),
    /// It ended without a value: FAILURE, REVOKED, or a SUCCESS whose value does not decode.
    Failed { state: TaskState, error: TaskError },
    /// It has not finished: no record yet (PENDING), or STARTED / RETRY.
    Unfinished(TaskState),
}

impl<T> Outcome<T> {
    /// The task's state as the record gives it (PENDING without one).
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Done(_) => TaskState::Success,
            Outcome::Failed { state, .. } | Outcome::Unfinished(state) => *state,
        }
    }
}

/// Reads `rec` (the record of task `id`, if any) as a value of type `T` or an error.
pub fn outcome<T: DeserializeOwned>(id: TaskId, rec: Option<&ResultRecord>) -> Outcome<T> {
    let Some(rec) = rec.filter(|r| r.state.is_final()) else {
        return Outcome::Unfinished(rec.map_or(TaskState::Pending, |r| r.state));
    };
    if rec.state == TaskState::Success {
        let decoded = match &rec.value {
            Some(bytes) => rec.codec.decode(bytes, "task result"),
            // A task whose result is not kept (`ignore_result`) reads as null.
            None => serde_json::from_value(serde_json::Value::Null).map_err(|e| {
                lovage::CodecError::Decode {
                    codec: rec.codec,
                    what: "task result",
                    reason: e.to_string(),
                }
            }),
        };
        return match decoded {
            Ok(v) => Outcome::Done(v),
            Err(e) => Outcome::Failed {
                state: rec.state,
                error: e.into(),
            },
        };
    }
    Outcome::Failed {
        state: rec.state,
        error: rec.error.clone().unwrap_or_else(|| {
            TaskError::new(kinds::FAILED, format!("task {id} ended {}", rec.state))
        }),
    }
}
