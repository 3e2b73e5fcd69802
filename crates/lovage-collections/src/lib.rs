//! Bags and chunked arrays (Dask's `bag` and `array`) on lovage's delayed task graphs.
//!
//! A [`bag::Bag`] is a lazy, partitioned collection of any items; an [`array::Array`] is a lazy
//! n-dimensional `f64` array cut into a grid of blocks. Both add nodes to a
//! [`Graph`](lovage_graph::Graph) and run when computed, on [`Inline`](lovage_graph::Inline) or
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
//! Bags and arrays run closures, so they do not run on a process pool or a broker (a closure
//! cannot cross a process); [`compute`] says so instead of starting.

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
    /// The scheduler (a process pool or a broker) cannot run closures.
    #[error(
        "bags and arrays run closures, which cannot cross processes: compute them with Inline \
         or Threads(&pool), not {0}"
    )]
    Unsupported(&'static str),
}

/// Runs what `outputs` needs (a handle, a tuple or a `Vec` of handles) and returns the values.
/// On a terminal (stderr), a progress bar counts the tasks done.
pub fn compute<O: Outputs>(
    g: &Graph,
    scheduler: Scheduler<'_>,
    outputs: O,
) -> Result<O::Value, Error> {
    match scheduler {
        Scheduler::Processes(_) => return Err(Error::Unsupported("Processes")),
        Scheduler::Broker(_) | Scheduler::BrokerFromCaller(_) => {
            return Err(Error::Unsupported("Broker"))
        }
        Scheduler::Inline | Scheduler::Threads(_) => {}
    }
    progress::with_bar(g, || g.compute(scheduler, outputs)).map_err(Error::from)
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
