//! Partitioned data frames (Dask's `dask.dataframe`) on Polars, run on lovage's task graphs.
//!
//! A [`Frame`] is a list of partitions, each a Polars `DataFrame` source (a slice of an
//! in-memory frame, a byte range of a CSV file, a Parquet row group) plus a lazy plan in
//! Polars' own `Expr` language (`select`, `with_columns`, `filter`, `head`). lovage does not
//! run queries itself: Polars runs each partition, lovage runs the partitions as graph nodes
//! on [`Inline`](lovage_graph::Inline) or [`Threads`](lovage_graph::Threads) and combines
//! their partial results in a tree (reductions, group-by) or by hashing the keys into
//! `split_out` partitions (group-by with many groups).
//!
//! ```
//! use lovage_frame::{agg, Frame};
//! use lovage_graph::{Graph, Inline};
//! use polars::prelude::*;
//!
//! let df = df!("k" => ["a", "b", "a"], "x" => [1i64, 2, 3]).unwrap();
//! let g = Graph::new();
//! let f = Frame::from_polars(&g, df, 2).unwrap();
//! let sums = f.group_by(["k"]).agg([agg::sum("x")]).unwrap();
//! let out = lovage_frame::compute(&g, Inline, sums).unwrap();
//! let out = out.sort(["k"], Default::default()).unwrap();
//! assert_eq!(out.column("x").unwrap().i64().unwrap().get(0), Some(4));
//! ```
//!
//! A frame whose partitions are data — read from files (`read_csv`, `read_parquet`,
//! `read_jsonl`) or given here (`from_polars`, `from_partitions`), with `select`,
//! `with_columns` and `filter` steps, and the joins of such frames — runs as registered
//! `lovage.frame.*` tasks: aggregations (`reduce`, `len`, `group_by(..).agg(..)`, through a
//! tree or, with `split_out(n > 1)`, a hash exchange), `collect`, `head`, `to_parquet`,
//! `to_csv`, hash and broadcast joins (inner, left), `sort` / `set_index` (sampled range
//! partitioning) and `repartition`. So it runs on every scheduler: a
//! process pool, and a broker's workers that called [`register`] (`lovage worker` built with
//! the `frames` feature does). The plan travels as Polars' own serialization of its `Expr`s;
//! partitions, partials and shuffle pieces as Arrow IPC, kept by the worker that made them
//! when large (the data plane); a shuffle's reducer fetches only its pieces of the maps'
//! values. Everything else (`from_fn`, `from_bag`, `persist` and what is built on them,
//! the run-time choice of `split_out` for rows in memory, …) runs closures, so on `Inline`
//! and `Threads` only; [`compute`] on a process pool or a broker refuses it before anything
//! runs.

pub mod agg;
mod buffers;
mod csv;
mod data;
pub mod ecommerce;
mod frame;
mod join;
mod json;
mod kernel;
mod key_ranges;
mod pages;
mod parquet;
mod picture;
mod prefetch;
mod quantile;
mod reduce;
mod row_tasks;
mod shuffle;
mod shuffle_tasks;
mod sort;
mod sort_tasks;
mod tasks;
mod write;

pub use agg::Agg;
pub use csv::{read_csv, CsvOptions};
pub use data::sources_read;
pub use frame::{Frame, GroupBy};
pub use join::{How, Strategy, BROADCAST_ROWS};
pub use json::read_jsonl;
pub use parquet::read_parquet;
pub use polars;
pub use quantile::{DIGEST_SIZE, QUANTILE_RANK_ERROR};
pub use tasks::{register, NAMES};

use lovage_core::TaskError;
use lovage_graph::{Graph, Outputs, Scheduler};

/// Why a frame could not be built or computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Running the graph failed (a task's error names the file, line or row group).
    #[error(transparent)]
    Collections(#[from] lovage_collections::Error),
    /// Bad input when the frame was built: no file matched, a schema that differs, …
    #[error("{0}")]
    Input(String),
    /// The scheduler (a process pool or a broker) cannot run a closure the frame has.
    #[error(
        "{op} runs a closure, which cannot cross processes: compute it with Inline or \
         Threads(&pool), not {scheduler} (reductions, group-bys, collect, head, to_parquet, \
         to_csv, joins, sorts and repartition run on every scheduler when the frame comes from read_csv, \
         read_parquet or read_jsonl with select, with_columns and filter steps; from \
         from_polars or from_partitions, a group-by needs split_out set, e.g. split_out(1))"
    )]
    Unsupported {
        /// `Processes` or `Broker`.
        scheduler: &'static str,
        /// The step that holds the closure (`partial`, `join`, …).
        op: String,
    },
}

/// Runs what `outputs` needs (a handle, a tuple or a `Vec` of handles) and returns the
/// values; a progress bar counts the tasks on a terminal. On a process pool or a broker, a
/// closure in the graph is refused before anything runs, naming its step.
pub fn compute<O: Outputs>(
    g: &Graph,
    scheduler: Scheduler<'_>,
    outputs: O,
) -> Result<O::Value, Error> {
    lovage_collections::compute(g, scheduler, outputs).map_err(|e| match e {
        lovage_collections::Error::Unsupported { scheduler, op } => {
            Error::Unsupported { scheduler, op }
        }
        e => Error::Collections(e),
    })
}

/// A task's error for bad data met while running (a malformed row, an unreadable file).
pub(crate) fn data_error(message: impl Into<String>) -> TaskError {
    TaskError::new("InputError", message)
}

/// A task's error for a Polars error met while running a partition.
pub(crate) fn polars_error(
    what: impl std::fmt::Display,
    e: polars::error::PolarsError,
) -> TaskError {
    TaskError::new("PolarsError", format!("{what}: {e}"))
}
