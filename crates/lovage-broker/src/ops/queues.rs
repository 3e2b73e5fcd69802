//! Queues as operators handle them: paused and resumed, peeked at, and described.

use serde::{Deserialize, Serialize};

use lovage_core::TaskId;

use crate::{Envelope, Result};

/// One queue as an operator sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Ready to run now.
    pub ready: u64,
    /// Waiting for an ETA or a retry delay.
    pub scheduled: u64,
    /// Held by workers.
    pub reserved: u64,
    /// Dead letters kept for tasks of this queue.
    pub dead: u64,
    /// Whether reserves skip it.
    pub paused: bool,
    /// How long the oldest ready task has waited, in seconds (0 when none is ready).
    pub oldest_ready_age_s: f64,
}

/// The queues a backend's [`QueueOps::queues`] describes, gathered by name from its parts
/// (counts, dead letters, paused names), each described once whichever part names it first.
#[derive(Default)]
pub(crate) struct QueueTable(std::collections::BTreeMap<String, QueueInfo>);

impl QueueTable {
    /// Queue `q`'s description, blank until a part fills it.
    pub(crate) fn entry(&mut self, q: &str) -> &mut QueueInfo {
        self.0.entry(q.to_owned()).or_insert_with(|| QueueInfo {
            name: q.to_owned(),
            ..QueueInfo::default()
        })
    }

    /// A queue's counts and the age of its oldest ready task.
    pub(crate) fn counts(&mut self, s: &crate::QueueStats, oldest_ready_age_s: f64) {
        let i = self.entry(&s.queue);
        i.ready = s.ready;
        i.scheduled = s.scheduled;
        i.reserved = s.reserved;
        i.oldest_ready_age_s = oldest_ready_age_s;
    }

    /// Marks `paused` as paused.
    pub(crate) fn paused(&mut self, paused: impl IntoIterator<Item = String>) {
        for q in paused {
            self.entry(&q).paused = true;
        }
    }

    /// The descriptions, by name.
    pub(crate) fn into_vec(self) -> Vec<QueueInfo> {
        self.0.into_values().collect()
    }
}

/// Pausing, resuming and looking into queues.
pub trait QueueOps: Send + Sync {
    /// Stops delivery from `queue`: reserves skip it until [`resume`](QueueOps::resume). Tasks
    /// can still be sent to it; tasks already reserved run on. Pausing twice is harmless.
    fn pause(&self, queue: &str) -> Result<()>;

    /// Delivers from `queue` again.
    fn resume(&self, queue: &str) -> Result<()>;

    /// The paused queues, by name.
    fn paused(&self) -> Result<Vec<String>>;

    /// Up to `limit` waiting tasks of `queue` without reserving them: ready ones in the order
    /// they would be delivered, then scheduled ones by due time.
    fn peek(&self, queue: &str, limit: usize) -> Result<Vec<Envelope>>;

    /// Every queue that holds a task, a dead letter or is paused, by name.
    fn queues(&self) -> Result<Vec<QueueInfo>>;

    /// Removes every dead letter kept for the tasks `ids`, in one step; returns how many
    /// letters went. The tasks' result records stay (a FAILURE stays a FAILURE): only the
    /// letters an operator would retry from are dropped.
    fn discard_dead(&self, ids: &[TaskId]) -> Result<u64>;

    /// Deletes the tasks `ids`, in one step, and returns the ids it deleted: a task that
    /// waits (ready or scheduled) leaves its queue, and its result record and task-index entry
    /// go; a finished task's record and index entry go. A task a worker holds is left alone
    /// (revoke it first) and is not returned, nor is an id nobody knows. Dead letters stay:
    /// [`discard_dead`](QueueOps::discard_dead) drops those. The totals in
    /// [`StateCounts`](crate::ops::StateCounts) stay too (they count what happened); the
    /// gauges drop by the waiting tasks deleted.
    fn delete_tasks(&self, ids: &[TaskId]) -> Result<Vec<TaskId>>;
}
