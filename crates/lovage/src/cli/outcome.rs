//! The one reading of a stored result record every command shares: the task's value, its
//! error, or that it has not finished. `result`, `submit --wait`, `status`, `map`, `demo` and
//! the benchmarks all go through [`outcome`], so they agree on what a record means.

use lovage::{ResultRecord, TaskError, TaskState};
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

/// Reads `rec` (the record of a task, if any) as a value of type `T` or an error, through
/// [`ResultRecord::outcome`].
pub fn outcome<T: DeserializeOwned>(rec: Option<&ResultRecord>) -> Outcome<T> {
    match rec.map(|r| (r.state, r.outcome())) {
        None => Outcome::Unfinished(TaskState::Pending),
        Some((state, None)) => Outcome::Unfinished(state),
        Some((_, Some(Ok(v)))) => Outcome::Done(v),
        Some((state, Some(Err(error)))) => Outcome::Failed { state, error },
    }
}
