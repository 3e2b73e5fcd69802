//! A frame's aggregation as registered tasks (`lovage.frame.*`), so a frame whose partitions
//! are data (files read where the task runs, or rows given here) runs on a process pool and
//! on a broker's workers as on the local schedulers, with the same results: every scheduler
//! runs these same functions (the local ones call them directly, without encoding anything).
//!
//! A partition's source and plan travel packed (see [`crate::data`]); each partial is one
//! Arrow IPC stream, so a large one stays in its worker's store (the data plane) and the
//! combining task fetches it from there.

use lovage_core::{Registry, TaskError};
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::agg::Agg;
use crate::data::{Ipc, Packed, PartData, TaskPart};
use crate::reduce::{agg_steps, merge, schema_after, SPLIT_EVERY};
use crate::{polars_error, Error};

/// One partition's partial aggregation: the source read here (or `input`, another task's
/// rows), its plan run, and `aggs` grouped by `keys`.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.partial")]
pub(crate) fn partial(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
) -> Result<Ipc, TaskError> {
    let steps = agg_steps(&keys, &aggs);
    steps.partial_of_data(part.0, input).map(Ipc)
}

/// Partials (or earlier merges) merged into one of the same shape; `empty` is a partial with
/// no rows, whose schema an empty list of partials takes.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.combine")]
pub(crate) fn combine(
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    empty: Ipc,
    parts: Vec<Ipc>,
) -> Result<Ipc, TaskError> {
    merged(&keys, &aggs, empty, parts).map(Ipc)
}

/// The last partials merged and finished: the aggregation's answer.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.finish")]
pub(crate) fn finish(
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    empty: Ipc,
    parts: Vec<Ipc>,
) -> Result<DataFrame, TaskError> {
    (agg_steps(&keys, &aggs).finish)(merged(&keys, &aggs, empty, parts)?)
}

/// The row count a finished `len` aggregation holds (`Frame::len` of a frame of data).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.rows")]
pub(crate) fn rows(counted: DataFrame) -> Result<usize, TaskError> {
    let n = counted
        .column(ROWS)
        .and_then(|c| c.cast(&DataType::UInt64))
        .map_err(|e| polars_error("counting rows", e))?;
    let n = n
        .u64()
        .map_err(|e| polars_error("counting rows", e))?
        .get(0);
    Ok(n.unwrap_or(0) as usize)
}

/// The column `count_rows` counts into.
const ROWS: &str = "__lovage_rows";

fn merged(
    keys: &[PlSmallStr],
    aggs: &[Agg],
    empty: Ipc,
    parts: Vec<Ipc>,
) -> Result<DataFrame, TaskError> {
    let schema = empty.into_inner().schema().clone();
    let parts = parts.into_iter().map(Ipc::into_inner).collect();
    merge(parts, &schema, &agg_steps(keys, aggs).combine)
}

/// `aggs` by `keys` over `parts`: a `partial` task per partition, `combine` tasks `k` wide
/// until at most `k` are left, and a `finish` task.
pub(crate) fn agg_tree(
    g: &Graph,
    parts: Vec<TaskPart>,
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    k: usize,
    partial_schema: &SchemaRef,
) -> Delayed<DataFrame> {
    let k = k.max(2);
    let empty = Ipc(DataFrame::empty_with_schema(partial_schema));
    let mut level: Vec<Delayed<Ipc>> = parts
        .into_iter()
        .map(|p| partial::delayed(g, Packed(p.data), p.input, keys.clone(), aggs.clone()))
        .collect();
    while level.len() > k {
        level = level
            .chunks(k)
            .map(|group| {
                combine::delayed(g, keys.clone(), aggs.clone(), empty.clone(), group.to_vec())
            })
            .collect();
    }
    finish::delayed(g, keys, aggs, empty, level)
}

/// The number of rows of `parts` (of `schema`): a `len` aggregation in a tree, then `rows`.
pub(crate) fn count_rows(
    g: &Graph,
    parts: Vec<TaskPart>,
    schema: &SchemaRef,
) -> Result<Delayed<usize>, Error> {
    let aggs = vec![crate::agg::len().alias(ROWS)];
    let partial_schema = schema_after(&agg_steps(&[], &aggs).partial, schema)?;
    let counted = agg_tree(g, parts, Vec::new(), aggs, SPLIT_EVERY, &partial_schema);
    Ok(rows::delayed(g, counted))
}

/// The names of the built-in frame tasks.
pub const NAMES: [&str; 20] = [
    partial::NAME,
    combine::NAME,
    finish::NAME,
    rows::NAME,
    crate::row_tasks::part::NAME,
    crate::row_tasks::concat::NAME,
    crate::row_tasks::write::NAME,
    crate::shuffle_tasks::split::NAME,
    crate::shuffle_tasks::split_probe::NAME,
    crate::shuffle_tasks::split_partial::NAME,
    crate::shuffle_tasks::agg_piece::NAME,
    crate::shuffle_tasks::join_piece::NAME,
    crate::shuffle_tasks::join_broadcast::NAME,
    crate::sort_tasks::sort_sample::NAME,
    crate::sort_tasks::sort_bounds::NAME,
    crate::sort_tasks::sort_split::NAME,
    crate::sort_tasks::counted::NAME,
    crate::sort_tasks::repartition_split::NAME,
    crate::sort_tasks::repartition_cut::NAME,
    crate::sort_tasks::range_piece::NAME,
];

/// Makes sure the built-in frame tasks (`lovage.frame.*`) are in this process's registry and
/// returns their names: a worker binary that runs frames calls it once (`lovage worker`
/// built with the `frames` feature does), so the linker keeps this module. An error names a
/// task that is missing.
pub fn register() -> Result<&'static [&'static str], TaskError> {
    // Naming the bodies keeps their object code, and the registrations beside it, linked.
    std::hint::black_box([
        partial::__invoke as *const () as usize,
        combine::__invoke as *const () as usize,
        finish::__invoke as *const () as usize,
        rows::__invoke as *const () as usize,
    ]);
    std::hint::black_box(crate::row_tasks::bodies());
    std::hint::black_box(crate::shuffle_tasks::bodies());
    std::hint::black_box(crate::sort_tasks::bodies());
    let registry = Registry::global();
    for name in NAMES {
        registry.get(name)?;
    }
    Ok(&NAMES)
}
