//! # lovage
//!
//! Work distribution in one library: a work-stealing [`ThreadPool`], a crash-isolating
//! [`ProcessPool`] and the task model they share, with the `concurrent.futures` surface.
//!
//! ```
//! use lovage::ThreadPool;
//!
//! let pool = ThreadPool::new(2);
//! let h = pool.submit(|| 6 * 7);
//! assert_eq!(h.result().unwrap(), 42);
//! ```
//!
//! Tasks that must cross a process boundary are registered with [`task`]:
//!
//! ```no_run
//! #[lovage::task]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! fn main() {
//!     lovage::init(); // first: in a pool's child process this serves tasks and never returns
//!     let pool = lovage::ProcessPool::new(2);
//!     assert_eq!(pool.submit(add::s(2, 3)).result().unwrap(), 5);
//! }
//! ```

// Lets `#[task]` (which names `::lovage`) work inside this crate too.
extern crate self as lovage;

pub use lovage_broker::{
    connect, Admin, App, AsyncResult, Backend, Broker, BrokerError, Client, Envelope, Locks,
    NotRfc3339, Presence, RateLimits, ResultRecord, ResultStore, Revoked, TaskFuture, Timestamp,
    DEFAULT_QUEUE, DEFAULT_URL,
};
pub use lovage_core::{
    block_on, kinds, parse_duration, parse_rate, parse_resources, Codec, CodecError, Dispatch,
    Message, ParseError, Registry, ResourceUnits, Resources, RetryPolicy, Signature, TaskEntry,
    TaskError, TaskFn, TaskId, TaskOptions, TaskState, TypedSignature, WIRE_VERSION,
};
pub use lovage_macros::task;
pub use lovage_pool::{
    as_completed, wait, AsCompleted, Executor, MapUnordered, ProcessPool, ProcessPoolBuilder,
    ProcessScope, ProcessScopeReport, ReturnWhen, Scope, ScopeFailure, TaskHandle, ThreadPool,
    ThreadPoolBuilder, Waited,
};

pub mod builtins;

/// Periodic tasks: schedules and the beat loop (see [`lovage_beat`]).
pub use lovage_beat as beat;

/// Delayed task graphs: `task::delayed(&g, …)`, compute on `Inline`, `Threads`, `Processes`
/// (see [`lovage_graph`]).
pub use lovage_graph as graph;

/// Inside a task a `lovage worker` runs: the task's context (Dask's `get_client()`):
/// `ctx().spawn(sig)`, `ctx().submit(sig)`, `ctx().client()`, parent and root ids (see
/// [`lovage_broker::ctx`]). `None` outside such a task.
pub fn ctx() -> Option<TaskCtx> {
    lovage_broker::ctx::current()
}
pub use lovage_broker::ctx::TaskCtx;

/// Scope joins across hosts: `app.scope(|s| s.spawn(sig))` returns when every task spawned
/// inside, transitively, has finished (see [`lovage_broker::scope`]).
pub use lovage_broker::scope;
pub use lovage_broker::ScopeReport;

/// The futures client (Dask's `Client`): `app.client()`, then `submit`, `map`, `gather`,
/// `as_completed`, `wait`, `cancel`, `fire_and_forget`.
pub use lovage_broker::futures;

/// `client.submit_after(add::after(&fa, &fb))`: a call whose arguments are futures, released
/// by the workers once its inputs are done (see [`lovage_flow::after`]).
pub use lovage_flow::SubmitAfter;

/// Bags: lazy partitioned collections (Dask's `dask.bag`), see [`lovage_collections::bag`].
pub use lovage_collections::bag;

/// Chunked n-dimensional arrays (Dask's `dask.array`), see [`lovage_collections::array`].
pub use lovage_collections::array;

/// Computing bags and arrays (with a progress bar on a terminal), see [`lovage_collections`].
pub use lovage_collections as collections;

/// Partitioned data frames on Polars (Dask's `dask.dataframe`), see [`lovage_frame`]. Only
/// with the `frames` feature.
#[cfg(feature = "frames")]
pub use lovage_frame as frame;

/// Workflows: chain, group, chord, callbacks (see [`lovage_flow`]).
pub use lovage_flow as flow;
pub use lovage_flow::{chain, chord, group, Canvas, Failure, WorkflowResult};

/// The worker: consume a broker, run tasks on a pool.
pub use lovage_worker as worker;

/// The HTTP API and dashboard (`lovage server`); mount [`server::router`] in your own axum app.
#[cfg(feature = "server")]
pub use lovage_server as server;
pub use lovage_worker::{PoolKind, Worker, WorkerConfig};
pub mod workloads;

/// Processes and shared state across them: Process, Value, Array, SharedMemory, locks, queues
/// and pipes between related processes on one host (see [`lovage_mp`]; Linux only), and
/// [`Manager`](mp::Manager)'s dicts and lists in the broker for processes on any host (see
/// [`lovage_broker::shared`]).
pub mod mp {
    pub use lovage_broker::shared::{Manager, SharedDict, SharedList};
    pub use lovage_mp::*;
}

/// The process pool's entry point: call it first in `main`.
///
/// In an ordinary run it returns at once. When a [`ProcessPool`] starts this executable as
/// one of its children, it serves tasks instead and exits when the pool is done with it; in a
/// child started by [`mp::Process::spawn`] it runs that task and exits with its status.
pub fn init() {
    lovage_pool::child_main();
    lovage_mp::child_main();
}

#[doc(hidden)]
pub use lovage_core::__private;

/// The README's code, compiled and run as doctests so it cannot drift from the API.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
