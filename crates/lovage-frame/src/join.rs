//! Joins: a hash join (both sides hash-partitioned on their keys into the same number of
//! partitions, partition `j` joined with partition `j`) or a broadcast join (the whole
//! right side joined with each left partition, no shuffle) when the right side is small.

use std::sync::Arc;

use lovage_graph::Delayed;
use polars::prelude::*;

use crate::data::Ipc;
use crate::frame::{Frame, Source};
use crate::shuffle::{exchange, hash_split, Splitter};
use crate::shuffle_tasks::{join_tasks, JoinSpec};
use crate::{polars_error, Error};

/// A right side with at most this many rows (known from metadata without reading data) or
/// a single partition is broadcast by [`Strategy::Auto`]: one copy per left partition costs
/// less than shuffling both sides.
pub const BROADCAST_ROWS: usize = 1_000_000;

/// Which rows a join keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum How {
    /// Rows whose keys match on both sides.
    Inner,
    /// Every left row, with the matching right rows or nulls.
    Left,
}

/// How a join moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Broadcast when the right side is small (see [`BROADCAST_ROWS`]), else hash.
    #[default]
    Auto,
    /// Hash-partition both sides into the larger partition count and join part by part.
    Hash,
    /// Join the whole right side with each left partition.
    Broadcast,
}

/// Polars' join of `l` and `r` (lazily, so the two sides may have zero rows).
pub(crate) fn join_frames(
    l: DataFrame,
    r: DataFrame,
    left_on: &[Expr],
    right_on: &[Expr],
    how: How,
) -> PolarsResult<DataFrame> {
    let how = match how {
        How::Inner => JoinType::Inner,
        How::Left => JoinType::Left,
    };
    l.lazy()
        .join(r.lazy(), left_on, right_on, JoinArgs::new(how))
        .collect()
}

impl<'g> Frame<'g> {
    /// Joins `other` on `left_on` = `right_on` (Dask's `merge`; Polars' `join`): null keys
    /// match nothing, duplicate keys give every pair, the right side's key columns are
    /// dropped and its other columns that clash get the suffix `_right`. Rows come in no
    /// particular order. Chooses the strategy with [`Strategy::Auto`].
    pub fn join(
        &self,
        other: &Frame<'g>,
        left_on: &[&str],
        right_on: &[&str],
        how: How,
    ) -> Result<Frame<'g>, Error> {
        self.join_with(other, left_on, right_on, how, Strategy::Auto)
    }

    /// [`join`](Frame::join) with the strategy chosen by the caller.
    pub fn join_with(
        &self,
        other: &Frame<'g>,
        left_on: &[&str],
        right_on: &[&str],
        how: How,
        strategy: Strategy,
    ) -> Result<Frame<'g>, Error> {
        if !std::ptr::eq(self.g, other.g) {
            return Err(Error::Input(
                "join: the frames are in different graphs".into(),
            ));
        }
        if left_on.is_empty() || left_on.len() != right_on.len() {
            return Err(Error::Input(format!(
                "join: {} left key(s) and {} right key(s); give the same number, at least one",
                left_on.len(),
                right_on.len()
            )));
        }
        for (l, r) in left_on.iter().zip(right_on) {
            let lt = self.schema.get(l);
            let rt = other.schema.get(r);
            match (lt, rt) {
                (Some(lt), Some(rt)) if lt == rt => {}
                (Some(lt), Some(rt)) => {
                    return Err(Error::Input(format!(
                        "join: key {l} is {lt} on the left but {r} is {rt} on the right; cast one side first"
                    )))
                }
                (None, _) => return Err(Error::Input(format!("join: no column {l} on the left"))),
                (_, None) => return Err(Error::Input(format!("join: no column {r} on the right"))),
            }
        }
        let lk: Vec<PlSmallStr> = left_on.iter().map(|s| (*s).into()).collect();
        let rk: Vec<PlSmallStr> = right_on.iter().map(|s| (*s).into()).collect();
        let le: Arc<Vec<Expr>> = Arc::new(lk.iter().cloned().map(col).collect());
        let re: Arc<Vec<Expr>> = Arc::new(rk.iter().cloned().map(col).collect());
        let schema = join_frames(
            DataFrame::empty_with_schema(&self.schema),
            DataFrame::empty_with_schema(&other.schema),
            &le,
            &re,
            how,
        )
        .map_err(|e| Error::Input(format!("join: {e}")))?
        .schema()
        .clone();
        let broadcast = match strategy {
            Strategy::Broadcast => true,
            Strategy::Hash => false,
            Strategy::Auto => {
                other.npartitions() <= 1 || other.known_len().is_some_and(|n| n <= BROADCAST_ROWS)
            }
        };
        let g = self.g;
        // Two frames of data: registered tasks, so every scheduler runs it.
        if let (Some(left), Some(right)) = (self.data_parts(), other.data_parts()) {
            let spec = JoinSpec {
                left_on: lk,
                right_on: rk,
                how,
                left_empty: Ipc(DataFrame::empty_with_schema(&self.schema)),
                right_empty: Ipc(DataFrame::empty_with_schema(&other.schema)),
            };
            let sources = join_tasks(g, left, right, spec, broadcast)
                .into_iter()
                .map(Source::Rows)
                .collect();
            return Ok(Frame::new(g, sources, schema));
        }
        let join = move |v: Vec<DataFrame>| {
            let mut v = v.into_iter();
            let (l, r) = (v.next().unwrap_or_default(), v.next().unwrap_or_default());
            join_frames(l, r, &le, &re, how).map_err(|e| polars_error("join", e))
        };
        let pairs: Vec<[Delayed<DataFrame>; 2]> = if broadcast {
            let right = other.collect();
            self.partitions().into_iter().map(|l| [l, right]).collect()
        } else {
            let n = self.npartitions().max(other.npartitions()).max(1);
            let side = |f: &Frame<'g>, keys: Vec<PlSmallStr>| {
                let split: Splitter = Arc::new(move |df| hash_split(&df, &keys, n));
                exchange(g, f.partitions(), n, split, f.schema.clone())
            };
            let (ls, rs) = (side(self, lk), side(other, rk));
            ls.into_iter().zip(rs).map(|(l, r)| [l, r]).collect()
        };
        let sources = pairs
            .into_iter()
            .map(|pair| {
                let join = join.clone();
                Source::Node(g.try_local_all("join", join, pair.to_vec()))
            })
            .collect();
        Ok(Frame::new(g, sources, schema))
    }
}
