//! Bags and chunked arrays (Dask's `bag` and `array`) on lovage's delayed task graphs.
//!
//! A [`bag::Bag`] is a lazy, partitioned collection of any items; an [`array::Array`] is a lazy
//! n-dimensional `f64` array cut into a grid of blocks. Both add nodes to a
//! [`Graph`] and run when computed, on [`Inline`](lovage_graph::Inline) or
//! [`Threads`](lovage_graph::Threads):
//!
//! ```
//! use lovage_collections::bag::Bag;
//! use lovage_graph::{Graph, Inline};
//!
//! let g = Graph::new();
//! let b = Bag::from_iter(&g, 1..=10i64, 3).map(|x| x * x).filter(|x| x % 2 == 0);
//! let total = b.sum();
//! assert_eq!(lovage_collections::compute(&g, Inline, total).unwrap(), 220);
//! ```
//!
//! Element-wise steps (`map`, `filter`, `flat_map`, …) do not add nodes: they compose into one
//! function per partition, so a chain of them and the reduction after it run as one task per
//! partition, pulling items through without building the intermediate lists.
//!
//! Arrays built from data (`random`, `full`, `zeros`, `ones`, `from_ndarray`, `from_npy`, and
//! `scalar`, `apply`, `zip` with broadcasting, slicing, `rechunk`, `materialize`, axis
//! reductions, `t`, `dot` on them) are registered tasks (`lovage.array.*`; a node-backed
//! block travels as raw little-endian `f64` bytes), so they run on a process pool and on a
//! broker's workers too, with the same results; a worker process calls [`register`] once. So do bags whose sources are data (items, `read_text`,
//! `read_jsonl`) and whose element-wise steps are registered tasks (`map_task`,
//! `filter_task`, `flat_map_task`, `map_partitions_task`): their `count`, `sum`, `min`,
//! `max`, `mean`, `frequencies`, `distinct`, `word_frequencies`, `take`, `to_textfiles`,
//! `compute`, and the reductions by registered tasks (`fold_task`, `reduce_task`,
//! `top_k_items`, `top_k_task`, `group_by_task`, `fold_by_task`) are `lovage.bag.*` tasks.
//! Closures (`map`, `from_fn`, `map_blocks`, a bag's `map`/`filter`/`fold`…) cannot cross a
//! process: [`compute`] on a process pool or a broker names the closure step and stops before
//! anything runs.

pub mod array;
pub mod bag;
mod combine;
mod progress;

use lovage_core::{kinds, TaskError};
use lovage_graph::{Graph, GraphError, Outputs, Scheduler};

/// Why a collection could not be built or computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Running the graph failed (a task's error names the file, line or block).
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Bad input when the collection was built: no file matched, shapes that do not agree, …
    #[error("{0}")]
    Input(String),
    /// The scheduler (a process pool or a broker) cannot run a closure the collection has.
    #[error(
        "{op} runs a closure, which cannot cross processes: compute it with Inline or \
         Threads(&pool), not {scheduler} (arrays from random/full/zeros/ones/from_ndarray/\
         from_npy with scalar, apply, zip, slicing, rechunk, axis reductions, t and dot run \
         on every scheduler, and so do bags whose \
         steps are registered tasks: map_task, filter_task, flat_map_task, \
         map_partitions_task, reduced by registered tasks too: fold_task, reduce_task, \
         top_k_task, group_by_task, fold_by_task)"
    )]
    Unsupported {
        /// `Processes` or `Broker`.
        scheduler: &'static str,
        /// The step that holds the closure (`array-map`, `bag-partial`, …).
        op: String,
    },
}

/// Makes sure the built-in collection tasks (`lovage.array.*`, `lovage.bag.*`) are registered in this
/// process and returns their names: a worker binary that runs collections calls it once
/// (`lovage worker` does). An error names a task that is missing.
pub fn register() -> Result<&'static [&'static str], TaskError> {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    array::tasks::register()?;
    bag::register()?;
    Ok(NAMES.get_or_init(|| {
        let mut names = array::tasks::NAMES.to_vec();
        names.extend(bag::TASKS);
        names
    }))
}

/// Runs what `outputs` needs (a handle, a tuple or a `Vec` of handles) and returns the values.
/// On a terminal (stderr), a progress bar counts the tasks done.
pub fn compute<O: Outputs>(
    g: &Graph,
    scheduler: Scheduler<'_>,
    outputs: O,
) -> Result<O::Value, Error> {
    let remote = match scheduler {
        Scheduler::Processes(_) => Some("Processes"),
        Scheduler::Broker(_) | Scheduler::BrokerFromCaller(_) => Some("Broker"),
        Scheduler::Inline | Scheduler::Threads(_) => None,
    };
    if let Some(scheduler) = remote {
        // Refused before anything runs (a broker would otherwise run a graph of closures
        // in this process), naming the step the caller wrote.
        let steps = g.closure_steps(&outputs)?;
        if let Some(op) = steps.first() {
            return Err(Error::Unsupported {
                scheduler,
                op: (*op).to_owned(),
            });
        }
    }
    progress::with_bar(g, || g.compute(scheduler, outputs)).map_err(|e| match (e, remote) {
        // Refused before anything ran: say which step and what runs there instead.
        (GraphError::NotRegistered { key }, Some(scheduler)) => Error::Unsupported {
            scheduler,
            op: key
                .rsplit_once('-')
                .map_or(key.as_str(), |(op, _)| op)
                .to_owned(),
        },
        (e, _) => Error::from(e),
    })
}

/// A task's error for bad data met while running (a malformed line, an unreadable file).
pub(crate) fn data_error(message: impl Into<String>) -> TaskError {
    TaskError::new("InputError", message)
}

/// A task's error for a failed read or write.
pub(crate) fn io_error(what: impl std::fmt::Display, e: std::io::Error) -> TaskError {
    TaskError::new("IoError", format!("{what}: {e}"))
}

/// An internal inconsistency (a value of the wrong type in a slot): a bug if it happens.
pub(crate) fn internal(message: &str) -> TaskError {
    TaskError::new(kinds::FAILED, format!("internal: {message}"))
}
