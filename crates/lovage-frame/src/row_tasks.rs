//! A frame's rows as registered tasks (`lovage.frame.part`, `concat`, `write`), so `collect`,
//! `head`, `to_parquet` and `to_csv` of a frame of data run on every scheduler, as its
//! aggregations do (see [`crate::tasks`]).
//!
//! A partition's rows are one Arrow IPC value: on a broker's workers one of 64 KiB or more
//! stays in the worker that made it and the task that reads it (the concatenation) fetches it
//! from there. A writer writes its partition's file where it runs, so the directory must be
//! the same path on every worker (the same host, or a shared filesystem).

use std::path::PathBuf;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::data::{Ipc, Packed, PartData, TaskPart};
use crate::frame::concat_frames;
use crate::write::{write_atomically, FileFormat};

/// One partition's rows: its source read here (or `input`, another task's rows) and its
/// plan run; only the first `limit` rows when a limit is given (`head`).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.part")]
pub(crate) fn part(
    partition: Packed<PartData>,
    input: Vec<Ipc>,
    limit: Option<usize>,
) -> Result<Ipc, TaskError> {
    let df = partition.0.rows(input)?;
    Ok(Ipc(match limit {
        Some(n) => df.head(Some(n)),
        None => df,
    }))
}

/// `parts` concatenated in order into one frame (of `empty`'s schema when there are none),
/// cut to its first `limit` rows when a limit is given.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.concat")]
pub(crate) fn concat(
    empty: Ipc,
    parts: Vec<Ipc>,
    limit: Option<usize>,
) -> Result<DataFrame, TaskError> {
    let schema = empty.into_inner().schema().clone();
    let df = concat_frames(parts.into_iter().map(Ipc::into_inner).collect(), &schema)?;
    Ok(match limit {
        Some(n) => df.head(Some(n)),
        None => df,
    })
}

/// One partition written to `path` (through a temporary file beside it) in `format`, by the
/// worker that runs the task; answers the path.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.write")]
pub(crate) fn write(
    partition: Packed<PartData>,
    input: Vec<Ipc>,
    path: PathBuf,
    format: FileFormat,
) -> Result<PathBuf, TaskError> {
    let mut df = partition.0.rows(input)?;
    write_atomically(&path, &mut df, &move |f, df| format.write(f, df))
}

/// The addresses of this module's task bodies, for [`crate::register`] to name (so the
/// linker keeps them and their registrations).
pub(crate) fn bodies() -> [usize; 3] {
    [
        part::__invoke as *const () as usize,
        concat::__invoke as *const () as usize,
        write::__invoke as *const () as usize,
    ]
}

/// Every partition's rows (the first `limit` of each when given), concatenated in order by
/// one `concat` task.
pub(crate) fn gather(
    g: &Graph,
    parts: Vec<TaskPart>,
    schema: &SchemaRef,
    limit: Option<usize>,
) -> Delayed<DataFrame> {
    let rows: Vec<Delayed<Ipc>> = parts
        .into_iter()
        .map(|p| part::delayed(g, Packed(p.data), p.input, limit))
        .collect();
    finished_on_caller(
        g,
        concat::delayed(g, Ipc(DataFrame::empty_with_schema(schema)), rows, limit),
    )
}

/// `all`, a `concat` of partitions, marked to run on the caller when a broker's workers run
/// the graph (as Dask's `compute()` concatenates on the client): no worker then holds the
/// whole frame, decoded and encoded at once, on top of its memory limit.
pub(crate) fn finished_on_caller(g: &Graph, all: Delayed<DataFrame>) -> Delayed<DataFrame> {
    // A `concat` node is a registered task's, which is all `finish_on_caller` asks.
    let _ = g.finish_on_caller(all);
    all
}
