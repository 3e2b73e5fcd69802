//! Approximate quantiles: a t-digest (Dunning's sketch, the `tdigest` crate) per partition,
//! merged `split_every` at a time, then read at the requested quantiles.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::Delayed;
use polars::prelude::*;
use tdigest::{Centroid, TDigest};

use crate::agg::{Agg, Kind, DIGEST};
use crate::frame::Frame;
use crate::reduce::SPLIT_EVERY;
use crate::{polars_error, Error};

/// Centroids a digest keeps. At this size the estimate's rank is within
/// [`QUANTILE_RANK_ERROR`] of the quantile asked for (tested on uniform, tied and
/// long-tailed values up to thousands of rows, in any partitioning).
pub const DIGEST_SIZE: usize = 200;

/// The stated tolerance of [`Frame::quantiles`], a rank error (not a value error): the
/// estimate of quantile `q` lies between the values of ranks `q - 0.01` and `q + 0.01` of
/// the sorted values, widened to the next distinct value on each side (a t-digest
/// interpolates between neighbouring centroids, so on tied values an estimate can fall
/// between two values).
pub const QUANTILE_RANK_ERROR: f64 = 0.01;

/// The digest of `column`'s finite values in `df`.
fn digest(df: &DataFrame, column: &str) -> PolarsResult<TDigest> {
    let values = df.column(column)?.cast(&DataType::Float64)?;
    let values: Vec<f64> = values
        .f64()?
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .collect();
    Ok(TDigest::new_with_size(DIGEST_SIZE).merge_unsorted(values))
}

impl<'g> Frame<'g> {
    /// Approximate quantiles `qs` (each in 0..=1) of the numeric `column`, one per `q` in
    /// order, `None` when the column has no finite value (nulls, NaN and infinities are
    /// skipped). Each is within a rank error of [`QUANTILE_RANK_ERROR`].
    pub fn quantiles(&self, column: &str, qs: &[f64]) -> Result<Delayed<Vec<Option<f64>>>, Error> {
        match self.schema.get(column) {
            Some(t) if t.is_primitive_numeric() => {}
            Some(t) => {
                return Err(Error::Input(format!(
                    "quantile: column {column} is {t}, not numeric"
                )))
            }
            None => return Err(Error::Input(format!("quantile: no column {column}"))),
        }
        if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(Error::Input(format!("quantile: q = {q} is not in 0..=1")));
        }
        let c: Arc<str> = column.into();
        let mut level: Vec<Delayed<TDigest>> = self.map_parts("digest", move |df| {
            digest(&df, &c).map_err(|e| polars_error("quantile digest", e))
        });
        let g = self.g;
        let merge = |parts: Vec<TDigest>| Ok(TDigest::merge_digests(parts));
        while level.len() > SPLIT_EVERY {
            level = level
                .chunks(SPLIT_EVERY)
                .map(|group| g.try_local_all("merge digests", merge, group.to_vec()))
                .collect();
        }
        let qs = qs.to_vec();
        Ok(g.try_local_all(
            "quantile",
            move |parts: Vec<TDigest>| {
                let d = TDigest::merge_digests(parts);
                Ok(qs.iter().map(|q| d.estimate_quantile(*q)).collect())
            },
            level,
        ))
    }

    /// The approximate quantile `q` of `column` (see [`quantiles`](Frame::quantiles)).
    pub fn quantile(&self, column: &str, q: f64) -> Result<Delayed<Option<f64>>, Error> {
        let qs = self.quantiles(column, &[q])?;
        Ok(self.g.try_local_all(
            "quantile",
            |v: Vec<Vec<Option<f64>>>| Ok(v.first().and_then(|q| q.first().copied()).flatten()),
            vec![qs],
        ))
    }
}

// Quantiles inside a group-by (`agg::quantile`): a digest per group travels in the partials
// as a `List<f64>` column, `[count, sum, min, max, mean₁, weight₁, mean₂, weight₂, …]` (an
// empty list for a group with no finite value), so the partials stay plain frames: Polars
// gathers them per group (the combine's `group_by`), hash splits, concatenates and sends
// them as Arrow IPC like any other column.

/// `digest` as a list of numbers (see above).
fn encode(digest: &TDigest) -> Vec<f64> {
    let (Some(min), Some(max)) = (digest.min(), digest.max()) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(4 + 2 * digest.centroids().len());
    out.extend([digest.count(), digest.sum(), min, max]);
    for c in digest.centroids() {
        out.extend([c.mean(), c.weight()]);
    }
    out
}

/// The digest `encode` wrote (an error naming `what` when the list is not one).
fn decode(values: &[f64], what: &str) -> Result<TDigest, TaskError> {
    match values {
        [] => Ok(TDigest::new_with_size(DIGEST_SIZE)),
        [count, sum, min, max, centroids @ ..] if centroids.len() % 2 == 0 => {
            let centroids = centroids
                .chunks_exact(2)
                .map(|c| Centroid::new(c[0], c[1]))
                .collect();
            Ok(TDigest::new(
                centroids,
                *sum,
                *count,
                Some(*max),
                Some(*min),
                DIGEST_SIZE,
            ))
        }
        _ => Err(TaskError::new(
            "Input",
            format!("{what}: a digest of {} numbers is malformed", values.len()),
        )),
    }
}

/// The finite numbers of a list value (nulls, NaN and infinities skipped).
fn finite(s: &Series) -> PolarsResult<Vec<f64>> {
    Ok(s.cast(&DataType::Float64)?
        .f64()?
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .collect())
}

/// The values of a list column, one `Series` a row (`None` for a null list).
fn each(list: &ListChunked) -> Vec<Option<Series>> {
    list.amortized_iter()
        .map(|s| s.map(|s| s.as_ref().clone()))
        .collect()
}

/// A `List<f64>` column of `rows`, one list each.
fn lists(rows: Vec<Vec<f64>>, name: PlSmallStr) -> Column {
    let values = rows.iter().map(Vec::len).sum();
    let mut b = ListPrimitiveChunkedBuilder::<Float64Type>::new(
        name,
        rows.len(),
        values,
        DataType::Float64,
    );
    for r in &rows {
        b.append_slice(r);
    }
    b.finish().into_series().into()
}

/// The partial step's last part: each quantile aggregation's list of a group's values made a
/// digest of its finite ones.
pub(crate) fn digest_values(df: DataFrame, aggs: &[Agg]) -> Result<DataFrame, TaskError> {
    rewrite(df, aggs, "quantile digest", |values| {
        let values = values.map(|s| finite(&s)).transpose();
        let values = values.map_err(|e| polars_error("quantile digest", e))?;
        let d = TDigest::new_with_size(DIGEST_SIZE).merge_unsorted(values.unwrap_or_default());
        Ok(encode(&d))
    })
}

/// The combining step's last part: each group's list of digests (gathered by the group-by)
/// merged into one.
pub(crate) fn merge_digests(df: DataFrame, aggs: &[Agg]) -> Result<DataFrame, TaskError> {
    rewrite(df, aggs, "merging quantile digests", |digests| {
        let Some(digests) = digests else {
            return Ok(Vec::new());
        };
        let fail = |e| polars_error("merging quantile digests", e);
        let mut parts = Vec::new();
        for d in each(digests.list().map_err(fail)?).into_iter().flatten() {
            let values: Vec<f64> = d.f64().map_err(fail)?.iter().flatten().collect();
            parts.push(decode(&values, "merging quantile digests")?);
        }
        Ok(encode(&TDigest::merge_digests(parts)))
    })
}

/// Replaces each quantile aggregation's column of `df` by `f` of each row's list.
fn rewrite(
    df: DataFrame,
    aggs: &[Agg],
    what: &str,
    mut f: impl FnMut(Option<Series>) -> Result<Vec<f64>, TaskError>,
) -> Result<DataFrame, TaskError> {
    per_quantile(df, aggs, what, |_, rows, name| {
        let rows = rows
            .into_iter()
            .map(&mut f)
            .collect::<Result<Vec<_>, TaskError>>()?;
        Ok(lists(rows, name))
    })
}

/// Replaces each quantile aggregation's column of `df` (a list column) by the column `f`
/// makes of the aggregation, the column's rows and its name.
fn per_quantile(
    mut df: DataFrame,
    aggs: &[Agg],
    what: &str,
    mut f: impl FnMut(&Agg, Vec<Option<Series>>, PlSmallStr) -> Result<Column, TaskError>,
) -> Result<DataFrame, TaskError> {
    for (i, a) in aggs.iter().enumerate() {
        if a.kind != Kind::Quantile {
            continue;
        }
        let name = Agg::slot(i, DIGEST);
        let fail = |e| polars_error(what, e);
        let rows = each(df.column(&name).map_err(fail)?.list().map_err(fail)?);
        df.with_column(f(a, rows, name)?).map_err(fail)?;
    }
    Ok(df)
}

/// The finishing step's first part: each quantile aggregation's digest read at its `q`.
pub(crate) fn estimate(df: DataFrame, aggs: &[Agg]) -> Result<DataFrame, TaskError> {
    let what = "quantile estimate";
    per_quantile(df, aggs, what, |a, rows, name| {
        let fail = |e| polars_error(what, e);
        let mut out: Vec<Option<f64>> = Vec::with_capacity(rows.len());
        for d in rows {
            let values: Vec<f64> = match d {
                Some(d) => d.f64().map_err(fail)?.iter().flatten().collect(),
                None => Vec::new(),
            };
            out.push(decode(&values, what)?.estimate_quantile(a.q));
        }
        Ok(Column::new(name, out))
    })
}
