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

/// `split_counted` with the pieces counted here.
#[cfg(test)]
pub(crate) fn split_into(
    df: &DataFrame,
    n: usize,
    parts: &[u32],
) -> Result<Vec<DataFrame>, TaskError> {
    let mut counts = vec![0usize; n];
    for &p in parts {
        counts[p as usize] += 1;
    }
    split_counted(df, &counts, parts)
}

/// A row's piece in a cut: a byte where there are at most 256 pieces, so a partition's
/// pieces (one per row, read once per column) stay in the core's cache, a `u32` otherwise.
pub(crate) trait Piece: Copy + TryFrom<u32> {
    /// The piece as an index.
    fn index(self) -> usize;
    /// Piece `p`, which the caller knows `Self` holds (its low bits otherwise).
    fn wrap(p: u32) -> Self;
}

impl Piece for u8 {
    fn index(self) -> usize {
        usize::from(self)
    }
    fn wrap(p: u32) -> Self {
        p as u8
    }
}

impl Piece for u32 {
    fn index(self) -> usize {
        self as usize
    }
    fn wrap(p: u32) -> Self {
        p
    }
}

/// `split_by` with each row's piece given (`parts[row] < counts.len()`) and the rows of
/// each piece counted (`counts[j]`, by the caller as it chose the pieces), for the
/// in-process exchange of a group-by: a numeric column without nulls is scattered (read
/// once in order, each value written at its piece's next slot of one buffer, `scatter`), any
/// other gathered once by the row numbers in piece order (a counting sort); either is then
/// sliced into the pieces. Faster than `split_by`'s gather per piece; not used yet where a
/// worker's memory is bounded: with it, every one of six workers of `lovage bench frames
/// --spill` peaked past the 320 MiB allowed (339–418), against 294–377 with the gather (the
/// bound is tight either way; not settled).
pub(crate) fn split_counted<P: Piece>(
    df: &DataFrame,
    counts: &[usize],
    parts: &[P],
) -> Result<Vec<DataFrame>, TaskError> {
    let n = counts.len();
    if n == 1 {
        return Ok(vec![df.clone()]);
    }
    if parts.len() != df.height() || counts.iter().sum::<usize>() != parts.len() {
        return Err(crate::data_error(format!(
            "internal: a shuffle cut of {} rows given pieces of {} rows counted as {}",
            df.height(),
            parts.len(),
            counts.iter().sum::<usize>()
        )));
    }
    let mut starts = vec![0usize; n + 1];
    for j in 0..n {
        starts[j + 1] = starts[j] + counts[j];
    }
    let mut order: Option<IdxCa> = None;
    let fail = |e| polars_error("cutting a partition for a shuffle", e);
    // Each column's pieces, column by column.
    let columns = df
        .columns()
        .iter()
        .map(|c| {
            if let Some(pieces) = scatter(c, parts, &starts) {
                return Ok(pieces);
            }
            let order = order.get_or_insert_with(|| rows_in_order(parts, &starts[..n]));
            let ordered = c.take(order).map_err(fail)?;
            Ok((0..n)
                .map(|j| ordered.slice(starts[j] as i64, starts[j + 1] - starts[j]))
                .collect())
        })
        .collect::<Result<Vec<Vec<Column>>, TaskError>>()?;
    let mut columns: Vec<_> = columns.into_iter().map(Vec::into_iter).collect();
    (0..n)
        .map(|j| {
            let piece = columns.iter_mut().filter_map(Iterator::next).collect();
            DataFrame::new(starts[j + 1] - starts[j], piece).map_err(fail)
        })
        .collect()
}

/// Row numbers ordered by piece (`parts[row]`), rows in order within a piece; `starts`:
/// where each piece begins.
fn rows_in_order<P: Piece>(parts: &[P], starts: &[usize]) -> IdxCa {
    let mut next = starts.to_vec();
    let mut order: Vec<IdxSize> = vec![0; parts.len()];
    for (row, &p) in parts.iter().enumerate() {
        let at = &mut next[p.index()];
        order[*at] = row as IdxSize;
        *at += 1;
    }
    IdxCa::from_vec(PlSmallStr::EMPTY, order)
}

/// `c`'s pieces, for a numeric column without nulls (`starts`: where each piece begins in
/// piece order, and the total); `None` otherwise. The values are written once into one
/// buffer in piece order, each piece a slice of it: one allocation per column, not one per
/// piece, and no per-piece length to check on every value.
fn scatter<P: Piece>(c: &Column, parts: &[P], starts: &[usize]) -> Option<Vec<Column>> {
    fn go<T, P: Piece>(ca: &ChunkedArray<T>, parts: &[P], starts: &[usize]) -> Vec<Column>
    where
        T: PolarsNumericType,
        T::Native: crate::buffers::Reusable,
    {
        let n = starts.len() - 1;
        let total = starts[n];
        assert_eq!(total, parts.len(), "pieces counted from other rows");
        assert_eq!(ca.len(), parts.len(), "a column of another length");
        let mut out: Vec<T::Native> = crate::buffers::take(total);
        let mut next = starts[..n].to_vec();
        let slots = &mut out.spare_capacity_mut()[..total];
        let mut row = 0;
        for arr in ca.downcast_iter() {
            let values = arr.values().as_slice();
            for (i, (&v, &p)) in values.iter().zip(&parts[row..]).enumerate() {
                // The values ahead, and 16 slots past where this piece writes now (a line or
                // two): each piece's write stream is too slow for the core to follow.
                crate::prefetch::ahead(values, i);
                let at = &mut next[p.index()];
                crate::prefetch::at(slots, *at + 16);
                slots[*at].write(v);
                *at += 1;
            }
            row += arr.len();
        }
        // Every piece `j` was written from `starts[j]` up to `next[j]`; all full means all of
        // `0..total` written (the counts in `starts` are those of `parts`).
        assert!(
            next.iter().zip(&starts[1..]).all(|(a, b)| a == b),
            "pieces counted from other rows"
        );
        // SAFETY: the assertion above: every slot below `total` was written exactly once.
        unsafe { out.set_len(total) };
        let whole = crate::buffers::chunked::<T>(ca.name().clone(), out);
        (0..n)
            .map(|j| {
                whole
                    .slice(starts[j] as i64, starts[j + 1] - starts[j])
                    .into_column()
            })
            .collect()
    }
    if c.null_count() > 0 {
        return None;
    }
    let s = c.as_materialized_series();
    Some(match s.dtype() {
        DataType::Int64 => go(s.i64().ok()?, parts, starts),
        DataType::Float64 => go(s.f64().ok()?, parts, starts),
        DataType::Int32 => go(s.i32().ok()?, parts, starts),
        DataType::Float32 => go(s.f32().ok()?, parts, starts),
        DataType::UInt64 => go(s.u64().ok()?, parts, starts),
        DataType::UInt32 => go(s.u32().ok()?, parts, starts),
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_into_gives_split_bys_pieces_for_every_column_kind() {
        let n = 5;
        let rows = 1000;
        let parts: Vec<u32> = (0..rows).map(|i| ((i * 7919) % 13 % n) as u32).collect();
        let df = df!(
            "i" => (0..rows as i64).collect::<Vec<_>>(),
            "f" => (0..rows).map(|i| i as f64 / 3.0).collect::<Vec<_>>(),
            "u" => (0..rows as u32).collect::<Vec<_>>(),
            "nulls" => (0..rows as i64).map(|i| (i % 3 != 0).then_some(i)).collect::<Vec<_>>(),
            "s" => (0..rows).map(|i| format!("s{i}")).collect::<Vec<_>>(),
            "b" => (0..rows).map(|i| i % 2 == 0).collect::<Vec<_>>()
        )
        .unwrap();
        let got = split_into(&df, n, &parts).unwrap();
        let want = split_by(&df, n, parts.iter().map(|&p| p as usize)).unwrap();
        assert_eq!(got.len(), n);
        for (a, b) in got.iter().zip(&want) {
            assert!(a.equals_missing(b), "{a} != {b}");
        }
        // An empty piece, one piece, and a count of pieces that is not the rows': no panic.
        let all_0 = vec![0u32; rows];
        let got = split_into(&df, 3, &all_0).unwrap();
        assert_eq!(
            got.iter().map(DataFrame::height).collect::<Vec<_>>(),
            [rows, 0, 0]
        );
        assert_eq!(split_into(&df, 1, &all_0).unwrap()[0].height(), rows);
        let err = split_into(&df, 3, &all_0[1..]).unwrap_err().to_string();
        assert!(err.contains("999"), "{err}");
    }
}
