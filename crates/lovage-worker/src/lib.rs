//! The worker: reserves tasks from a broker, runs them on a thread or process pool, records
//! their outcomes, continues their workflows, retries failures by their policy, and renews
//! the leases of what it runs. A broker that goes away is retried with backoff, logged once
//! per outage; nothing is dropped.
//!
//! Four threads share the work, each in its own module: the fetcher (`fetcher.rs`) reserves and
//! starts, the pacer (`pacer.rs`) holds tasks for their rate-limit slots, the finisher
//! (`finisher.rs`) settles outcomes through the one decision in `settle.rs`, and the keeper
//! (`keeper.rs`) renews leases and writes heartbeats; a fifth, the control thread
//! (`control.rs`), answers inspect and control commands from the worker's mailbox.
//! `PROTOCOL.md` beside this file says what each owns, in which order a finished task is stored, continued and
//! completed, and what a crash between the steps does.

mod config;
mod control;
mod data;
mod fetcher;
mod finisher;
mod inputs;
mod keeper;
mod pacer;
mod pause;
mod scale;
mod settle;
mod shared;
mod shutdown;
mod signals;
mod units;
mod worker;

pub use config::{Autoscale, PoolKind, UnknownPool, WorkerConfig};
pub use data::{
    bound_allocator, DataConfig, DEFAULT_THRESHOLD, INPUT_SHARE, KEPT_SHARE, PAUSE_RSS_SHARE,
    SPILL_RSS_SHARE,
};
pub use inputs::INPUT_LOST;
pub use shutdown::{Shutdown, ShutdownMode};
pub use signals::install_signal_handlers;
pub use worker::{Worker, WorkerReport};
