//! The all-to-all exchange under joins, sorts and repartitioning: every input partition is
//! cut into `n` pieces by a splitting function, and output partition `j` is piece `j` of
//! every input, concatenated in input order.
//!
//! The pieces live in the graph's values (memory of the process running it): frames run on
//! `Inline` and `Threads` only, so there is no worker store to write them to yet.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::frame::concat_frames;
use crate::polars_error;

/// Cuts one partition (with whatever else the cut needs, `T`) into the pieces bound for
/// each output partition.
pub(crate) type Splitter<T = DataFrame> =
    Arc<dyn Fn(T) -> Result<Vec<DataFrame>, TaskError> + Send + Sync>;

/// Exchanges `parts` into `n` outputs: `split` cuts each input into `n` pieces, output `j`
/// concatenates the `j`th pieces in input order (an empty frame of `schema` when there are
/// none).
pub(crate) fn exchange<T: Clone + Default + Send + Sync + 'static>(
    g: &Graph,
    parts: Vec<Delayed<T>>,
    n: usize,
    split: Splitter<T>,
    schema: SchemaRef,
) -> Vec<Delayed<DataFrame>> {
    let splits: Vec<Delayed<Arc<Vec<DataFrame>>>> = parts
        .into_iter()
        .map(|p| {
            let split = split.clone();
            g.try_local_all(
                "shuffle split",
                move |v: Vec<T>| {
                    let pieces = split(v.into_iter().next().unwrap_or_default())?;
                    if pieces.len() != n {
                        return Err(crate::data_error(format!(
                            "internal: a shuffle split gave {} pieces, not {n}",
                            pieces.len()
                        )));
                    }
                    Ok(Arc::new(pieces))
                },
                vec![p],
            )
        })
        .collect();
    (0..n)
        .map(|j| {
            let schema = schema.clone();
            g.try_local_all(
                "shuffle gather",
                move |v: Vec<Arc<Vec<DataFrame>>>| {
                    let pieces = v.iter().map(|s| s[j].clone()).collect();
                    concat_frames(pieces, &schema)
                },
                splits.clone(),
            )
        })
        .collect()
}

/// Cuts `df` into `n` pieces, row `i` going to piece `part(i)` (rows keep their order
/// within a piece).
pub(crate) fn split_by(
    df: &DataFrame,
    n: usize,
    part: impl Iterator<Item = usize>,
) -> Result<Vec<DataFrame>, TaskError> {
    if n == 1 {
        return Ok(vec![df.clone()]);
    }
    let mut idx: Vec<Vec<IdxSize>> = vec![Vec::new(); n];
    for (row, p) in part.enumerate() {
        idx[p].push(row as IdxSize);
    }
    idx.into_iter()
        .map(|rows| {
            df.take(&IdxCa::from_vec(PlSmallStr::EMPTY, rows))
                .map_err(|e| polars_error("cutting a partition for a shuffle", e))
        })
        .collect()
}

/// The rows of `df` whose hash of the `keys` columns falls in each of `n` parts. Two frames
/// whose key columns have the same types send equal keys to the same part, whatever the
/// columns are called (a join's two sides).
pub(crate) fn hash_split(
    df: &DataFrame,
    keys: &[PlSmallStr],
    n: usize,
) -> Result<Vec<DataFrame>, TaskError> {
    if n == 1 {
        return Ok(vec![df.clone()]);
    }
    let fail = |e| polars_error("hashing keys", e);
    let mut key_frame = df.select(keys.iter().cloned()).map_err(fail)?;
    let hashes = key_frame
        .hash_rows(Some(PlSeedableRandomStateQuality::fixed()))
        .map_err(fail)?;
    split_by(
        df,
        n,
        hashes.into_no_null_iter().map(|h| (h % n as u64) as usize),
    )
}
