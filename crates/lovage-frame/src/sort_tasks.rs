//! `sort`, `set_index` and `repartition` of a frame of data as registered tasks, so they run
//! on every scheduler (the closures in [`crate::sort`] are for the other frames, on the local
//! schedulers).
//!
//! A sort is a sampled range partitioning: a `sort_sample` task per partition (its keys, drawn
//! at random, and its rows, so the source is read once), one `sort_bounds` task (the `n - 1`
//! boundary rows from the sorted samples), a `sort_split` task per partition (the rows
//! `sort_sample` kept, cut into the `n` ranges, as Arrow IPC pieces) and
//! a `range_piece` task per range (piece `j` of every split, in input order, concatenated and
//! sorted stably). `repartition` has a `repartition_split` per partition (its rows cut at the
//! global row positions of the outputs, the heights from the metadata) or, when the metadata
//! does not know them, a `counted` task per partition (its count and its rows, read once) and a
//! `repartition_cut` per partition; then `range_piece` tasks that only concatenate. A map's value is one list of `n` pieces; reducer `j` reads piece `j`
//! of each through an element node, so on a broker it fetches only that piece's bytes (as in
//! [`crate::shuffle_tasks`]).

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::data::{Ipc, Packed, PartData, TaskPart};
use crate::frame::concat_frames;
use crate::polars_error;
use crate::shuffle::split_by;
use crate::shuffle_tasks::piece_of;
use crate::sort::{slice_for, Order, SAMPLES_PER_RANGE};

/// A partition read once for a sort: `[sample, rows]`, up to `k` random rows of its key
/// columns (seeded by `seed`: the same rows again when the task is run again) and the
/// partition's rows themselves, which `sort_split` cuts (so the source is read once, not once
/// to sample and again to split). On a broker's workers a large value stays in its worker's
/// store, indexed per element: `sort_bounds` fetches only the samples.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.sort_sample")]
pub(crate) fn sort_sample(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    order: Order,
    k: usize,
    seed: u64,
) -> Result<Vec<Ipc>, TaskError> {
    let df = part.0.rows(input)?;
    let sample = order
        .sample(&df, k, seed)
        .map_err(|e| polars_error("sampling sort keys", e))?;
    Ok(vec![Ipc(sample), Ipc(df)])
}

/// The `n - 1` boundary rows of a sort, from every partition's sample (`key_empty`: the key
/// columns with no rows, for their schema).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.sort_bounds")]
pub(crate) fn sort_bounds(
    order: Order,
    key_empty: Ipc,
    samples: Vec<Ipc>,
    n: usize,
) -> Result<Ipc, TaskError> {
    let schema = key_empty.into_inner().schema().clone();
    let sample = concat_frames(samples.into_iter().map(Ipc::into_inner).collect(), &schema)?;
    order
        .boundaries(sample, n)
        .map(Ipc)
        .map_err(|e| polars_error("choosing sort boundaries", e))
}

/// A partition's rows (as `sort_sample` read them) cut into the `n` key ranges `bounds`
/// delimit (rows equal to a boundary go to the range after it), each piece in the
/// partition's order.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.sort_split")]
pub(crate) fn sort_split(
    rows: Ipc,
    order: Order,
    bounds: Ipc,
    n: usize,
) -> Result<Vec<Ipc>, TaskError> {
    let df = rows.into_inner();
    let ranges = order
        .ranges(&df, &bounds.into_inner())
        .map_err(|e| polars_error("splitting a partition into ranges", e))?;
    Ok(split_by(&df, n, ranges.into_iter())?
        .into_iter()
        .map(Ipc)
        .collect())
}

/// A partition read once for a repartition whose heights the metadata does not know:
/// `[count, rows]`, a one-row frame holding its height (column `rows`) and the rows
/// themselves, which `repartition_cut` cuts once every count is known. On a broker's workers
/// a large value stays in its worker's store, indexed per element: each cut fetches only the
/// other partitions' counts.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.counted")]
pub(crate) fn counted(part: Packed<PartData>, input: Vec<Ipc>) -> Result<Vec<Ipc>, TaskError> {
    let df = part.0.rows(input)?;
    let count = df!(COUNT_COLUMN => [df.height() as u64])
        .map_err(|e| polars_error("counting a partition's rows", e))?;
    Ok(vec![Ipc(count), Ipc(df)])
}

/// The column of a `counted` task's count.
const COUNT_COLUMN: &str = "rows";

/// Partition `i`'s rows (element 1 of its `counted` value) cut into the pieces bound for each
/// of `n` output partitions of nearly equal height, given every partition's count.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.repartition_cut")]
pub(crate) fn repartition_cut(
    rows: Ipc,
    counts: Vec<Ipc>,
    i: usize,
    n: usize,
) -> Result<Vec<Ipc>, TaskError> {
    let heights = counts
        .into_iter()
        .map(|c| {
            let c = c.into_inner();
            c.column(COUNT_COLUMN)
                .and_then(|col| col.u64().map(|v| v.get(0)))
                .ok()
                .flatten()
                .map(|h| h as usize)
                .ok_or_else(|| {
                    crate::data_error(format!(
                        "repartition: a partition's count is not one {COUNT_COLUMN} row"
                    ))
                })
        })
        .collect::<Result<Vec<usize>, TaskError>>()?;
    cut_at_heights(&rows.into_inner(), &heights, i, n, "its count")
}

/// Partition `i` (`df`) cut at the outputs' global row positions, once its height is checked
/// against `heights[i]` (which `counted_by` gave, for the error).
fn cut_at_heights(
    df: &DataFrame,
    heights: &[usize],
    i: usize,
    n: usize,
    counted_by: &str,
) -> Result<Vec<Ipc>, TaskError> {
    if heights.get(i) != Some(&df.height()) {
        return Err(crate::data_error(format!(
            "repartition: partition {i} has {} rows but {counted_by} says {:?} (a source that \
             changed since?)",
            df.height(),
            heights.get(i)
        )));
    }
    Ok(slice_for(df, heights, i, n).into_iter().map(Ipc).collect())
}

/// Partition `i` cut into the pieces bound for each of `n` output partitions of nearly equal
/// height, given every partition's height from the metadata.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.repartition_split")]
pub(crate) fn repartition_split(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    heights: Vec<usize>,
    i: usize,
    n: usize,
) -> Result<Vec<Ipc>, TaskError> {
    cut_at_heights(&part.0.rows(input)?, &heights, i, n, "the metadata")
}

/// Output partition `j` of a sort or a repartition: piece `j` of every map (`pieces`, in map
/// order) concatenated (of `empty`'s schema when all are empty) and, for a sort, sorted
/// stably.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.range_piece")]
pub(crate) fn range_piece(
    empty: Ipc,
    pieces: Vec<Ipc>,
    order: Option<Order>,
) -> Result<Ipc, TaskError> {
    let schema = empty.into_inner().schema().clone();
    let df = concat_frames(pieces.into_iter().map(Ipc::into_inner).collect(), &schema)?;
    match order {
        Some(order) => order
            .sort(&df)
            .map(Ipc)
            .map_err(|e| polars_error("sorting a range", e)),
        None => Ok(Ipc(df)),
    }
}

/// The addresses of this module's task bodies, for [`crate::register`] to name (so the
/// linker keeps them and their registrations).
pub(crate) fn bodies() -> [usize; 7] {
    [
        sort_sample::__invoke as *const () as usize,
        sort_bounds::__invoke as *const () as usize,
        sort_split::__invoke as *const () as usize,
        counted::__invoke as *const () as usize,
        repartition_split::__invoke as *const () as usize,
        repartition_cut::__invoke as *const () as usize,
        range_piece::__invoke as *const () as usize,
    ]
}

/// A sort of `parts` (rows of `schema`) by `order` into `n` ranges, as tasks: each output
/// partition's rows.
pub(crate) fn sort_tasks(
    g: &Graph,
    parts: Vec<TaskPart>,
    order: Order,
    n: usize,
    schema: &SchemaRef,
    key_schema: &SchemaRef,
) -> Vec<Delayed<Ipc>> {
    // Each partition is read once: its sample and its rows.
    let read: Vec<Delayed<Vec<Ipc>>> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            sort_sample::delayed(
                g,
                Packed(p.data),
                p.input,
                order.clone(),
                SAMPLES_PER_RANGE * n,
                i as u64,
            )
        })
        .collect();
    let bounds = sort_bounds::delayed(
        g,
        order.clone(),
        Ipc(DataFrame::empty_with_schema(key_schema)),
        piece_of(g, &read, 0),
        n,
    );
    let maps: Vec<Delayed<Vec<Ipc>>> = piece_of(g, &read, 1)
        .into_iter()
        .map(|rows| sort_split::delayed(g, rows, order.clone(), bounds, n))
        .collect();
    reduce(g, maps, n, schema, Some(order))
}

/// `parts` (rows of `schema`) in `n` partitions of nearly equal height, in the same order, as
/// tasks: each output partition's rows. `known`: every partition's height from the metadata,
/// when known (else a `counted` task reads each once, answering its count and its rows).
pub(crate) fn repartition_tasks(
    g: &Graph,
    parts: Vec<TaskPart>,
    n: usize,
    schema: &SchemaRef,
    known: Option<Vec<usize>>,
) -> Vec<Delayed<Ipc>> {
    let maps: Vec<Delayed<Vec<Ipc>>> = match known {
        // The heights travel as a plain argument of each split.
        Some(heights) => parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                repartition_split::delayed(g, Packed(p.data), p.input, heights.clone(), i, n)
            })
            .collect(),
        // Each partition read once: its count and its rows, cut once every count is known.
        None => {
            let read: Vec<Delayed<Vec<Ipc>>> = parts
                .into_iter()
                .map(|p| counted::delayed(g, Packed(p.data), p.input))
                .collect();
            let counts = g.collect(piece_of(g, &read, 0));
            piece_of(g, &read, 1)
                .into_iter()
                .enumerate()
                .map(|(i, rows)| repartition_cut::delayed(g, rows, counts, i, n))
                .collect()
        }
    };
    reduce(g, maps, n, schema, None)
}

/// A `range_piece` task per output.
fn reduce(
    g: &Graph,
    maps: Vec<Delayed<Vec<Ipc>>>,
    n: usize,
    schema: &SchemaRef,
    order: Option<Order>,
) -> Vec<Delayed<Ipc>> {
    let empty = Ipc(DataFrame::empty_with_schema(schema));
    (0..n)
        .map(|j| range_piece::delayed(g, empty.clone(), piece_of(g, &maps, j), order.clone()))
        .collect()
}
