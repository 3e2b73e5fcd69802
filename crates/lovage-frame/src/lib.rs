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
//! Frames run closures, so like bags they run on `Inline` and `Threads` only.

pub mod agg;
mod csv;
pub mod ecommerce;
mod frame;
mod join;
mod json;
mod parquet;
mod quantile;
mod reduce;
mod shuffle;
mod sort;
mod write;

pub use agg::Agg;
pub use csv::{read_csv, CsvOptions};
pub use frame::{Frame, GroupBy};
pub use join::{How, Strategy, BROADCAST_ROWS};
pub use json::read_jsonl;
pub use parquet::read_parquet;
pub use polars;
pub use quantile::{DIGEST_SIZE, QUANTILE_RANK_ERROR};

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
}

/// Runs what `outputs` needs (a handle, a tuple or a `Vec` of handles) on `Inline` or
/// `Threads` and returns the values; a progress bar counts the tasks on a terminal.
pub fn compute<O: Outputs>(
    g: &Graph,
    scheduler: Scheduler<'_>,
    outputs: O,
) -> Result<O::Value, Error> {
    Ok(lovage_collections::compute(g, scheduler, outputs)?)
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
