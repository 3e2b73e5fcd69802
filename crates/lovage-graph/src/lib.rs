//! Delayed task graphs (Dask's `delayed`) at Rust's cost.
//!
//! A [`Graph`] is a flat arena: one boxed operation per node, its dependencies in one array
//! (CSR form: node `i`'s are `deps[start[i]..start[i + 1]]`), one 64-bit hash per node. A
//! [`Delayed<T>`] is an 8-byte `Copy` handle into it (graph id + node index), typed so that
//! `add::delayed(&g, square::delayed(&g, 2), square::delayed(&g, 3))` is checked by the compiler.
//!
//! ```
//! use lovage_graph::{Graph, Inline};
//!
//! #[lovage_macros::task(crate = lovage_core, graph = lovage_graph)]
//! fn square(x: i64) -> i64 { x * x }
//! #[lovage_macros::task(crate = lovage_core, graph = lovage_graph)]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! let g = Graph::new();
//! let total = add::delayed(&g, square::delayed(&g, 2), square::delayed(&g, 3));
//! assert_eq!(g.compute(Inline, total).unwrap(), 13);
//! ```
//!
//! Arguments are checked against the task's parameters when the graph is built, not when it
//! runs: a `&str` or a `Delayed<String>` where an `i64` goes does not compile.
//!
//! ```compile_fail,E0277
//! # use lovage_graph::Graph;
//! #[lovage_macros::task(crate = lovage_core, graph = lovage_graph)]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//! let g = Graph::new();
//! let _ = add::delayed(&g, "two", 3);
//! ```
//!
//! ```compile_fail,E0277
//! # use lovage_graph::Graph;
//! #[lovage_macros::task(crate = lovage_core, graph = lovage_graph)]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//! #[lovage_macros::task(crate = lovage_core, graph = lovage_graph)]
//! fn shout(s: String) -> String { s.to_uppercase() }
//! let g = Graph::new();
//! let loud = shout::delayed(&g, "hi".to_string());
//! let _ = add::delayed(&g, loud, 3);
//! ```
//!
//! Why the graph is an explicit first argument rather than a thread-local "current graph":
//! building is then visible in the types (a handle from another graph is caught and named),
//! a graph can be built on any thread or several graphs at once, and there is no hidden state
//! to forget to enter or to leak between tests. It costs one `&g` per call.
//!
//! Running a graph ([`Graph::compute`], [`Graph::persist`]) first plans it: only the ancestors
//! of the requested outputs run (cull), identical calls of `pure` tasks are already one node
//! (merged when built), and a node whose finish makes exactly one dependent ready runs that
//! dependent on the same thread at once, so a single-consumer chain is one dispatch (fusion)
//! and the ready order is depth-first (a reduction frees its inputs early); on a process pool
//! and a broker's workers such a chain goes as one request or message
//! (`lovage_flow::graph::CHAIN_TASK`, docs/graphs.md "Fused chains"). Scheduling state
//! is an atomic in-degree and an atomic consumer count per node; a thread pool run takes no
//! lock beyond the pool's own deques.

mod args;
mod graph;
mod outputs;
mod plan;
mod viz;
pub use viz::{Picture, PictureNode, GROUP_ABOVE};

pub use args::TaskArgs;
pub use args::{Arg, ArgTuple, IntoArg};
#[doc(hidden)]
pub use graph::Fnv;
pub use graph::{
    Delayed, Graph, HandleTuple, Inputs, LocalFn, NodeKind, Nout, Progress, Stats, Submitted,
    TaskGraph,
};
pub use outputs::{Kept, Outputs, Results};
pub use plan::Scheduler;
pub use plan::Scheduler::{Broker, BrokerFromCaller, Inline, Processes, Threads};

use lovage_core::TaskError;

/// Why a graph could not be built or computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// The requested node's own task failed.
    #[error("task {key} failed: {error}")]
    Failed {
        /// The failed node's key.
        key: String,
        /// Its error.
        error: TaskError,
    },
    /// The requested node did not run because a node it depends on failed.
    #[error("a dependency failed: {key}: {cause}")]
    DependencyFailed {
        /// The key of the dependency that failed (the first failure on the path).
        key: String,
        /// Its error.
        cause: TaskError,
    },
    /// A handle was used with a graph it does not belong to.
    #[error("a handle of graph {handle_graph} was used with graph {graph}")]
    ForeignHandle {
        /// The graph the handle came from.
        handle_graph: u32,
        /// The graph it was used with.
        graph: u32,
    },
    /// A node only a local graph can run (a closure) was sent to a process pool.
    #[error(
        "node {key} is a closure: a process pool runs registered tasks only (use #[lovage::task])"
    )]
    NotRegistered {
        /// The closure node's key.
        key: String,
    },
    /// A user key was given to two different nodes.
    #[error("the key {key:?} is already used by another node")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// Options refused for a node: it is not a registered task, or a resource is malformed.
    #[error("options of node {key}: {reason}")]
    InvalidOptions {
        /// The node's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The graph cannot be handed to a broker's workers as it is.
    #[error("the graph cannot be sent to the workers: {0}")]
    NotForWorkers(String),
    /// The graph was computed but this output's value was not kept (a bug if it happens).
    #[error("internal: {0}")]
    Internal(String),
}

impl GraphError {
    /// The `TaskError` inside, for a failure of a task or of a dependency.
    pub fn task_error(&self) -> Option<&TaskError> {
        match self {
            GraphError::Failed { error, .. } => Some(error),
            GraphError::DependencyFailed { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// Items `#[lovage::task]` expands to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{Arg, IntoArg};
    pub use crate::graph::{Delayed, Graph, TaskGraph};
}
