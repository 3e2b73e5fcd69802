//! Hash shuffles as registered tasks, so a group-by with `split_out(n > 1)` and a hash join
//! of frames of data run on every scheduler (the closure exchange in [`crate::shuffle`] is
//! for the rest, on the local schedulers).
//!
//! A map task reads its partition, runs its plan (and, for a group-by, the partial
//! aggregation), hashes the keys and answers **one value holding all `n` pieces** (a list of
//! Arrow IPC frames). Reduce task `j` takes piece `j` of every map through an element node
//! (`Graph::element`). On a broker's workers a map value of 64 KiB or more stays in the map
//! worker's store, indexed per element (where each piece's bytes lie), and the element node
//! passes on a reference to piece `j`'s bytes alone: each reducer fetches only its pieces
//! (a range of the kept value), so the data moved is about the map outputs once, not `n`
//! times. A lost map value is made again from its lineage by the reducer's worker, which then
//! takes its piece.

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::agg::Agg;
use crate::data::{Ipc, Packed, PartData, TaskPart};
use crate::join::{join_frames, How};
use crate::polars_error;
use crate::reduce::{agg_steps, merge, row_partials, skip_partial};
use crate::row_tasks::{concat, finished_on_caller, part};
use crate::shuffle::hash_split;

/// One partition's rows split by the hash of `keys` into `n` pieces (all rows in piece 0
/// when `n` is 1).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.split")]
pub(crate) fn split(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    keys: Vec<PlSmallStr>,
    n: usize,
) -> Result<Vec<Ipc>, TaskError> {
    let df = part.0.rows(input)?;
    Ok(hash_split(&df, &keys, n)?.into_iter().map(Ipc).collect())
}

/// Partition 0's map of a group-by's exchange: its partial aggregation split by the hash of
/// `keys` into `n` pieces, then one more element, a one-row frame saying whether the partial
/// kept more than half of the partition's rows (DataFusion's test): if so the other maps
/// skip their partial step (see [`split_partial`]).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.split_probe")]
pub(crate) fn split_probe(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    n: usize,
) -> Result<Vec<Ipc>, TaskError> {
    let df = part.0.rows(input)?;
    let rows = df.height();
    let partial = (agg_steps(&keys, &aggs).partial)(df)?;
    let skip = skip_partial(partial.height(), rows);
    let mut pieces: Vec<Ipc> = hash_split(&partial, &keys, n)?
        .into_iter()
        .map(Ipc)
        .collect();
    let probe = DataFrame::new_infer_height(vec![Column::new(SKIP.into(), [skip])])
        .map_err(|e| polars_error("a group-by's probe", e))?;
    pieces.push(Ipc(probe));
    Ok(pieces)
}

/// The column of [`split_probe`]'s last element.
const SKIP: &str = "skip_partial";

/// One partition's partial aggregation split by the hash of `keys` into `n` pieces; or,
/// when `probe` (partition 0's, from [`split_probe`]) says the partial barely shrinks the
/// rows, the rows themselves as partials of one row each (`row_partials`), which costs no
/// hashing of groups here: each output then aggregates them once.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.split_partial")]
pub(crate) fn split_partial(
    part: Packed<PartData>,
    input: Vec<Ipc>,
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    n: usize,
    probe: Ipc,
) -> Result<Vec<Ipc>, TaskError> {
    let skip = probe
        .0
        .column(SKIP)
        .and_then(|c| c.bool().map(|b| b.get(0)))
        .map_err(|e| polars_error("a group-by's probe", e))?
        .unwrap_or(false);
    let steps = agg_steps(&keys, &aggs);
    let sent = if skip {
        let df = part.0.rows(input)?;
        let partial_schema = (steps.partial)(df.clear())?.schema().clone();
        match row_partials(&df, &keys, &aggs, &partial_schema)? {
            Some(rows) => rows,
            None => (steps.partial)(df)?,
        }
    } else {
        steps.partial_of_data(part.0, input)?
    };
    Ok(hash_split(&sent, &keys, n)?.into_iter().map(Ipc).collect())
}

/// Piece `j` of every map, in map order: one element node per map, so on a broker's
/// workers each reducer fetches only its piece of a kept map value (see
/// `lovage_graph::Graph::element`).
pub(crate) fn piece_of(g: &Graph, maps: &[Delayed<Vec<Ipc>>], j: usize) -> Vec<Delayed<Ipc>> {
    maps.iter().map(|m| g.element(*m, j)).collect()
}

fn frames(pieces: Vec<Ipc>) -> Vec<DataFrame> {
    pieces.into_iter().map(Ipc::into_inner).collect()
}

/// Output partition `j` of a group-by's exchange: piece `j` of every partial (`pieces`)
/// merged and finished (`empty` is a partial with no rows, for its schema).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.agg_piece")]
pub(crate) fn agg_piece(
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    empty: Ipc,
    pieces: Vec<Ipc>,
) -> Result<Ipc, TaskError> {
    let steps = agg_steps(&keys, &aggs);
    let schema = empty.into_inner().schema().clone();
    let merged = merge(frames(pieces), &schema, &steps.combine)?;
    (steps.finish)(merged).map(Ipc)
}

/// What a join's reduce tasks need besides the pieces: the keys, which rows are kept, and
/// an empty frame of each side (their schemas, for sides with no pieces).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct JoinSpec {
    pub(crate) left_on: Vec<PlSmallStr>,
    pub(crate) right_on: Vec<PlSmallStr>,
    pub(crate) how: How,
    pub(crate) left_empty: Ipc,
    pub(crate) right_empty: Ipc,
}

/// Output partition `j` of a join: piece `j` of every left map (`lefts`) joined with piece
/// `j` of every right map (`rights`).
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.join_piece")]
pub(crate) fn join_piece(
    spec: JoinSpec,
    lefts: Vec<Ipc>,
    rights: Vec<Ipc>,
) -> Result<Ipc, TaskError> {
    let side = |pieces, empty: Ipc| -> Result<DataFrame, TaskError> {
        let schema = empty.into_inner().schema().clone();
        crate::frame::concat_frames(frames(pieces), &schema)
    };
    let l = side(lefts, spec.left_empty)?;
    let r = side(rights, spec.right_empty)?;
    let on = |keys: &[PlSmallStr]| keys.iter().cloned().map(col).collect::<Vec<_>>();
    join_frames(l, r, &on(&spec.left_on), &on(&spec.right_on), spec.how)
        .map(Ipc)
        .map_err(|e| polars_error("join", e))
}

/// The addresses of this module's task bodies, for [`crate::register`] to name (so the
/// linker keeps them and their registrations).
pub(crate) fn bodies() -> [usize; 6] {
    [
        join_broadcast::__invoke as *const () as usize,
        split_probe::__invoke as *const () as usize,
        split::__invoke as *const () as usize,
        split_partial::__invoke as *const () as usize,
        agg_piece::__invoke as *const () as usize,
        join_piece::__invoke as *const () as usize,
    ]
}

/// One left partition (its source read here, or `input`, and its plan run) joined with the
/// whole right side (`rights`, every right partition's rows): a broadcast join's task.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.frame.join_broadcast")]
pub(crate) fn join_broadcast(
    spec: JoinSpec,
    left: Packed<PartData>,
    input: Vec<Ipc>,
    rights: Vec<Ipc>,
) -> Result<Ipc, TaskError> {
    let l = left.0.rows(input)?;
    let schema = spec.right_empty.into_inner().schema().clone();
    let r =
        crate::frame::concat_frames(rights.into_iter().map(Ipc::into_inner).collect(), &schema)?;
    let on = |keys: &[PlSmallStr]| keys.iter().cloned().map(col).collect::<Vec<_>>();
    join_frames(l, r, &on(&spec.left_on), &on(&spec.right_on), spec.how)
        .map(Ipc)
        .map_err(|e| polars_error("join", e))
}

/// A group-by of `parts` through a hash exchange into `n` outputs: a `split_probe` task for
/// the first partition and a `split_partial` task for each other, an `agg_piece` task per
/// output, and a `concat` of the outputs.
pub(crate) fn agg_shuffle(
    g: &Graph,
    parts: Vec<TaskPart>,
    keys: Vec<PlSmallStr>,
    aggs: Vec<Agg>,
    n: usize,
    partial_schema: &SchemaRef,
    final_schema: &SchemaRef,
) -> Delayed<DataFrame> {
    // Partition 0's map decides whether the others skip their partial step.
    let mut parts = parts.into_iter();
    let mut maps: Vec<Delayed<Vec<Ipc>>> = Vec::new();
    if let Some(p) = parts.next() {
        maps.push(split_probe::delayed(
            g,
            Packed(p.data),
            p.input,
            keys.clone(),
            aggs.clone(),
            n,
        ));
    }
    if let Some(&first) = maps.first() {
        let probe = g.element(first, n);
        maps.extend(parts.map(|p| {
            split_partial::delayed(
                g,
                Packed(p.data),
                p.input,
                keys.clone(),
                aggs.clone(),
                n,
                probe,
            )
        }));
    }
    let empty = Ipc(DataFrame::empty_with_schema(partial_schema));
    let outs: Vec<Delayed<Ipc>> = (0..n)
        .map(|j| {
            agg_piece::delayed(
                g,
                keys.clone(),
                aggs.clone(),
                empty.clone(),
                piece_of(g, &maps, j),
            )
        })
        .collect();
    let empty_out = Ipc(DataFrame::empty_with_schema(final_schema));
    finished_on_caller(g, concat::delayed(g, empty_out, outs, None::<usize>))
}

/// A join of two frames of data as tasks: each output partition's rows (`Source::Rows`).
/// Hash: both sides split into `n` pieces by their keys' hash (`split`), output `j` joins the
/// `j`th pieces (`join_piece`). Broadcast: each right partition's rows (`part`), and each
/// left partition joined with all of them (`join_broadcast`).
pub(crate) fn join_tasks(
    g: &Graph,
    left: Vec<TaskPart>,
    right: Vec<TaskPart>,
    spec: JoinSpec,
    broadcast: bool,
) -> Vec<Delayed<Ipc>> {
    let maps = |parts: Vec<TaskPart>, keys: &[PlSmallStr], n: usize| -> Vec<Delayed<Vec<Ipc>>> {
        parts
            .into_iter()
            .map(|p| split::delayed(g, Packed(p.data), p.input, keys.to_vec(), n))
            .collect()
    };
    if broadcast {
        let rights: Vec<Delayed<Ipc>> = right
            .into_iter()
            .map(|p| part::delayed(g, Packed(p.data), p.input, None::<usize>))
            .collect();
        return left
            .into_iter()
            .map(|l| {
                join_broadcast::delayed(g, spec.clone(), Packed(l.data), l.input, rights.clone())
            })
            .collect();
    }
    let n = left.len().max(right.len()).max(1);
    let lefts = maps(left, &spec.left_on, n);
    let rights = maps(right, &spec.right_on, n);
    (0..n)
        .map(|j| {
            join_piece::delayed(
                g,
                spec.clone(),
                piece_of(g, &lefts, j),
                piece_of(g, &rights, j),
            )
        })
        .collect()
}
