//! lovage's brokers and result stores: where tasks wait, and where their results land.
//!
//! [`Broker`] reads as a task's life: enqueue, reserve (with a lease), renew the lease while
//! it runs, then complete, retry, snooze, discard (dead-letter) or revoke. Side traits hold
//! what is not a task's life: [`Locks`], [`RateLimits`], [`Presence`], [`Admin`], and for
//! operators ([`ops`]) the task index [`Inspect`], [`QueueOps`], the event stream [`Events`]
//! and the control mailbox [`Control`].
//! [`ResultStore`] keeps outcomes and lets a client wait for one. [`connect`] opens a
//! [`Backend`] from a URL. Backends: `memory` (one process, for tests), `sqlite` (the embedded
//! default, one file shared by the processes of a host) and `redis` (feature `redis`, for many
//! hosts). Every backend passes one conformance suite (`conformance`, feature `conformance`;
//! `tests/conformance.rs` runs it on each backend of this crate).
//!
//! Delivery is at least once: a reserved task carries a lease the worker renews while it runs;
//! when a lease runs out (the worker died), the task is delivered again. A message is removed
//! only by a `complete` carrying the lease of its current delivery.

mod backend;
mod broker;
pub mod client;
#[cfg(feature = "conformance")]
pub mod conformance;
mod corrupt;
pub mod ctx;
pub mod dataref;
mod error;
pub mod futures;
pub mod memory;
mod message;
pub mod ops;
mod rate;
#[cfg(feature = "redis")]
pub mod redis_backend;
mod results;
pub mod scope;
pub mod shared;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod time;

pub use backend::{connect, Backend, Driver, DEFAULT_URL};
pub use broker::{Admin, Broker, Locks, Presence, RateLimits};
pub use client::{App, AsyncResult, SENT_EVENTS_ENV};
pub use dataref::{FetchError, ResultRef};
pub use error::{BrokerError, Source};
pub use futures::{Client, TaskFuture};
pub use message::{
    Affinity, DeadLetter, Delivery, Envelope, JoinEntry, Lease, QueueStats, ResultRecord, Revoked,
    TaskLimits, WorkerInfo, DEAD_LETTERS_KEPT, DEFAULT_QUEUE, ONCE_TTL, WORKER_RECORD_TTL,
};
pub use ops::{Control, Events, Inspect, QueueOps};
pub use rate::{gcra, now_micros, slots_from_micros};
pub use results::{holders_dict, ResultStore, SENDER_RELEASED};
pub use scope::{Scope, ScopeFall, ScopeReport, ScopeSpawn};
pub use shared::{DictEntries, Manager, SharedDict, SharedList, SharedState};
pub use time::{NotRfc3339, Timestamp};

/// Result alias for broker operations.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Decoders of stored bytes that are private to their backend, for the fuzz targets in
/// `fuzz/`. Not a public API.
#[doc(hidden)]
pub mod fuzzing {
    /// A Redis task value (`P:tasks`) as a reserve reads it: its delivery, or, when it does not
    /// decode, the dead letter and FAILURE record it gets instead.
    #[cfg(feature = "redis")]
    pub fn redis_task_value(
        id: &str,
        value: &[u8],
        fence: u64,
    ) -> Result<crate::Delivery, Box<(crate::DeadLetter, Option<crate::ResultRecord>)>> {
        crate::redis_backend::decode_delivery(value, fence).map_err(|reason| {
            let bad = crate::redis_backend::corrupt_message(id, value, &reason);
            Box::new((bad.dead_letter(), bad.record()))
        })
    }

    /// A batch of events as an SQLite `events` row or a Redis stream entry holds it, read
    /// back as `read_events` does (either form), or what is wrong with it.
    pub fn event_batch(body: &[u8]) -> Result<Vec<crate::ops::Event>, String> {
        crate::ops::event_codec::decode_batch(body)
    }

    /// `events` encoded as a backend stores them.
    pub fn encode_event_batch(events: &[crate::ops::Event]) -> Result<Vec<u8>, String> {
        crate::ops::event_codec::encode_batch(events).map_err(|e| e.to_string())
    }
}
