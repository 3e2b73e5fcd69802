//! What operators and the `lovage server` read from a broker and ask of it, beside a task's
//! life: the task index and counts ([`Inspect`]), queue pausing and peeking ([`QueueOps`]), the
//! bounded event stream ([`Events`]) and the per-worker control mailbox ([`Control`]).
//!
//! Everything here is kept by the broker itself, so a server that reads it owns no state: the
//! index and the counters are written by the same transaction or script that changes a task's
//! state, never by a second writer that could drift.

mod control;
pub(crate) mod event_codec;
mod events;
mod queues;
mod tasks;

pub(crate) use tasks::matches;

pub use control::{
    broadcast, Control, ControlReply, ControlRequest, Gathered, CONTROL_COMMANDS, CONTROL_TTL,
    INSPECT_COMMANDS, LIVE_WITHIN,
};
pub use events::{Event, EventBatch, EventKind, Events, EVENTS_KEPT};
pub(crate) use queues::QueueTable;
pub use queues::{QueueInfo, QueueOps};
pub use tasks::{
    args_preview, sent_of, Inspect, StateCounts, TaskCursor, TaskInfo, TaskPage, TaskQuery,
    TaskSummary, ARGS_PREVIEW_BYTES, MAX_PAGE, SCAN_BUDGET,
};
#[allow(unused_imports)] // some are the Redis backend's only, behind its feature
pub(crate) use tasks::{id_floor, page, summarize, Candidates, Kept, Live};
