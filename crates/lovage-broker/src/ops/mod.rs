//! What operators and the `lovage server` read from a broker and ask of it, beside a task's
//! life: the task index and counts ([`Inspect`]), queue pausing and peeking ([`QueueOps`]), the
//! bounded event stream ([`Events`]) and the per-worker control mailbox ([`Control`]).
//!
//! Everything here is kept by the broker itself, so a server that reads it owns no state: the
//! index and the counters are written by the same transaction or script that changes a task's
//! state, never by a second writer that could drift.

mod control;
mod events;
mod queues;
mod tasks;

pub(crate) use tasks::matches;

pub use control::{Control, ControlReply, ControlRequest, CONTROL_TTL};
pub use events::{Event, EventBatch, EventKind, Events, EVENTS_KEPT};
pub use queues::{QueueInfo, QueueOps};
pub use tasks::{
    args_preview, sent_of, Inspect, StateCounts, TaskCursor, TaskInfo, TaskPage, TaskQuery,
    TaskSummary, ARGS_PREVIEW_BYTES, MAX_PAGE, SCAN_BUDGET,
};
#[allow(unused_imports)] // the Redis backend's, behind its feature
pub(crate) use tasks::{id_floor, page, summarize, Candidates, Kept, Live};

/// Implements the operators' traits for a backend that does not have them yet, each call a
/// clear [`BrokerError::Unsupported`](crate::BrokerError::Unsupported).
macro_rules! unsupported_ops {
    ($ty:ty, $backend:literal) => {
        impl $crate::ops::Inspect for $ty {
            fn list_tasks(
                &self,
                _: &$crate::ops::TaskQuery,
            ) -> $crate::Result<$crate::ops::TaskPage> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "listing tasks",
                })
            }
            fn task_counts(&self) -> $crate::Result<$crate::ops::StateCounts> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "task counts",
                })
            }
            fn task_info(
                &self,
                _: lovage_core::TaskId,
            ) -> $crate::Result<Option<$crate::ops::TaskInfo>> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "task info",
                })
            }
        }
        impl $crate::ops::QueueOps for $ty {
            fn pause(&self, _: &str) -> $crate::Result<()> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "pausing queues",
                })
            }
            fn resume(&self, _: &str) -> $crate::Result<()> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "resuming queues",
                })
            }
            fn paused(&self) -> $crate::Result<Vec<String>> {
                Ok(Vec::new())
            }
            fn peek(&self, _: &str, _: usize) -> $crate::Result<Vec<$crate::Envelope>> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "peeking",
                })
            }
            fn queues(&self) -> $crate::Result<Vec<$crate::ops::QueueInfo>> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "queue details",
                })
            }
        }
        impl $crate::ops::Events for $ty {
            fn publish(&self, _: &[$crate::ops::Event]) -> $crate::Result<()> {
                Ok(())
            }
            fn read_events(&self, _: u64, _: usize) -> $crate::Result<$crate::ops::EventBatch> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "reading events",
                })
            }
        }
        impl $crate::ops::Control for $ty {
            fn send_control(
                &self,
                _: &[String],
                _: &$crate::ops::ControlRequest,
            ) -> $crate::Result<()> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "control",
                })
            }
            fn take_control(&self, _: &str) -> $crate::Result<Vec<$crate::ops::ControlRequest>> {
                Ok(Vec::new())
            }
            fn reply(&self, _: &str, _: &str, _: &serde_json::Value) -> $crate::Result<()> {
                Ok(())
            }
            fn replies(&self, _: &str) -> $crate::Result<Vec<$crate::ops::ControlReply>> {
                Err($crate::BrokerError::Unsupported {
                    backend: $backend,
                    op: "control",
                })
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use unsupported_ops;
