//! The states a task passes through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a task is in its life. PENDING → RECEIVED → STARTED → SUCCESS | FAILURE, with RETRY
/// looping back to RECEIVED, and REVOKED possible from any state before a final one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Known to the broker (or not known at all), not yet handed to a worker.
    Pending,
    /// A worker has reserved it.
    Received,
    /// A worker is running it.
    Started,
    /// It failed and will run again after a delay.
    Retry,
    /// It finished and returned a value.
    Success,
    /// It finished with an error, after its last attempt.
    Failure,
    /// It was cancelled before it finished.
    Revoked,
}

impl TaskState {
    /// All states, in life order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Received,
        TaskState::Started,
        TaskState::Retry,
        TaskState::Success,
        TaskState::Failure,
        TaskState::Revoked,
    ];

    /// True for the states a task never leaves (SUCCESS, FAILURE, REVOKED).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// The name Celery users know, e.g. `"SUCCESS"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a task state name.
#[derive(Debug, thiserror::Error)]
#[error("unknown task state {0:?} (expected one of PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED)")]
pub struct ParseTaskStateError(String);

impl FromStr for TaskState {
    type Err = ParseTaskStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseTaskStateError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for st in TaskState::ALL {
            assert_eq!(st.as_str().parse::<TaskState>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), st);
        }
        assert!("DONE".parse::<TaskState>().is_err());
        assert!(TaskState::Revoked.is_final() && !TaskState::Retry.is_final());
    }
}
