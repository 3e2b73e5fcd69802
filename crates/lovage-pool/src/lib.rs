//! lovage's local executors: a work-stealing [`ThreadPool`] and a crash-isolating
//! [`ProcessPool`], both with the `concurrent.futures` surface (submit, map, as_completed, wait,
//! cancel, shutdown) in Rust style.
//!
//! A task that panics (thread pool) or whose process dies (process pool) fails alone: its
//! handle reports the error and the pool keeps going.

// The entry-point docs must show `fn main`: that is where `child_main` goes.
#![allow(clippy::needless_doctest_main)]

mod executor;
mod handle;
mod ordered;
pub mod process;
mod thread;
mod wait;

pub use executor::Executor;
pub use handle::TaskHandle;
pub use process::{child_main, ProcessPool, ProcessPoolBuilder};
pub use thread::{MapUnordered, Scope, ThreadPool, ThreadPoolBuilder};
pub use wait::{as_completed, wait, AsCompleted, ReturnWhen, Waited};
