//! Approximate quantiles: a t-digest (Dunning's sketch, the `tdigest` crate) per partition,
//! merged `split_every` at a time, then read at the requested quantiles.

use std::sync::Arc;

use lovage_graph::Delayed;
use polars::prelude::*;
use tdigest::TDigest;

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
