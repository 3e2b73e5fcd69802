//! Task identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A task's identifier: a UUID v7, so ids sort by creation time (to the millisecond, then by a
/// counter) and two hosts never mint the same one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// Mints a new id; ids minted later in this process sort after earlier ones.
    pub fn new() -> Self {
        TaskId(uuid::Uuid::now_v7())
    }

    /// The all-zero id, which no task has (the result id of an empty chain).
    pub fn nil() -> Self {
        TaskId(uuid::Uuid::nil())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0.hyphenated())
    }
}

/// The text was not a task id.
#[derive(Debug, thiserror::Error)]
#[error("not a task id: {input:?} ({reason})")]
pub struct ParseTaskIdError {
    input: String,
    reason: String,
}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(TaskId)
            .map_err(|e| ParseTaskIdError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_and_round_trip() {
        let ids: Vec<TaskId> = (0..1000).map(|_| TaskId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let text = ids[7].to_string();
        assert_eq!(text.parse::<TaskId>().unwrap(), ids[7]);
        assert!("nope"
            .parse::<TaskId>()
            .unwrap_err()
            .to_string()
            .contains("nope"));
    }
}
