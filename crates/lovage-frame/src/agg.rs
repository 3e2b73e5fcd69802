//! Aggregations for [`Frame::reduce`](crate::Frame::reduce) and
//! [`GroupBy::agg`](crate::GroupBy::agg), each split into a partial step (per partition), a
//! combining step (merging partials, any number of times) and a finishing step.

use polars::prelude::*;

/// What an [`Agg`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// The sum of the non-null values (0 when there are none).
    Sum,
    /// The mean of the non-null values (null when there are none), as `f64`.
    Mean,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
    /// The number of non-null values.
    Count,
    /// The number of rows, nulls included (Polars' `len`).
    Len,
    /// The sample standard deviation (ddof 1), as `f64`.
    Std,
    /// The sample variance (ddof 1), as `f64`.
    Var,
    /// An approximate quantile (the agg's `q`) of the finite values, as `f64` (null when
    /// there are none): a t-digest per group (see [`quantile`]).
    Quantile,
}

/// One aggregation of one column, named like the column unless [`alias`](Agg::alias)ed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agg {
    pub(crate) kind: Kind,
    pub(crate) column: PlSmallStr,
    pub(crate) name: PlSmallStr,
    /// The quantile asked for, for [`Kind::Quantile`] (0 otherwise).
    #[serde(default)]
    pub(crate) q: f64,
}

impl Agg {
    /// `kind` of `column`.
    pub fn new(kind: Kind, column: impl Into<PlSmallStr>) -> Self {
        let column = column.into();
        Agg {
            kind,
            name: column.clone(),
            column,
            q: 0.0,
        }
    }

    /// The same aggregation with the output column called `name`.
    pub fn alias(mut self, name: impl Into<PlSmallStr>) -> Self {
        self.name = name.into();
        self
    }

    /// The partial columns' names for the aggregation at position `i`.
    pub(crate) fn slot(i: usize, what: &str) -> PlSmallStr {
        format!("__lovage_{i}_{what}").into()
    }

    /// Expressions of the per-partition step.
    pub(crate) fn partial(&self, i: usize) -> Vec<Expr> {
        let c = col(self.column.clone());
        let f = c.clone().cast(DataType::Float64);
        let n = || {
            c.clone()
                .count()
                .cast(DataType::Int64)
                .alias(Self::slot(i, "n"))
        };
        match self.kind {
            Kind::Sum => vec![c.sum().alias(Self::slot(i, "s"))],
            Kind::Mean => vec![f.sum().alias(Self::slot(i, "s")), n()],
            Kind::Min => vec![c.min().alias(Self::slot(i, "lo"))],
            Kind::Max => vec![c.max().alias(Self::slot(i, "hi"))],
            Kind::Count => vec![n()],
            Kind::Len => vec![polars::prelude::len()
                .cast(DataType::Int64)
                .alias(Self::slot(i, "n"))],
            Kind::Std | Kind::Var => vec![
                n(),
                f.clone().mean().alias(Self::slot(i, "m")),
                (f.var(0) * c.count().cast(DataType::Float64)).alias(Self::slot(i, "q")),
            ],
            // The group's values as a list; `quantile::digest_values` makes it a digest.
            Kind::Quantile => vec![f.alias(Self::slot(i, DIGEST))],
        }
    }

    /// Expressions giving each row, ungrouped, the partial columns it alone would have
    /// (a sum is the value, a count 1 or 0, …): a partition whose partial aggregation would
    /// barely shrink it sends these instead (DataFusion's skipped partial aggregation), and
    /// the combining step merges them like partials. `None` for a kind with no such form.
    pub(crate) fn row_partial(&self, i: usize) -> Option<Vec<Expr>> {
        let c = col(self.column.clone());
        let f = c.clone().cast(DataType::Float64);
        let n = || {
            c.clone()
                .is_not_null()
                .cast(DataType::Int64)
                .alias(Self::slot(i, "n"))
        };
        Some(match self.kind {
            // A group of nulls sums to 0 in the partial; a null here is skipped by the
            // combining sum, which gives the same.
            Kind::Sum => vec![c.alias(Self::slot(i, "s"))],
            Kind::Mean => vec![f.alias(Self::slot(i, "s")), n()],
            Kind::Min => vec![c.alias(Self::slot(i, "lo"))],
            Kind::Max => vec![c.alias(Self::slot(i, "hi"))],
            Kind::Count => vec![n()],
            Kind::Len => vec![lit(1i64).alias(Self::slot(i, "n"))],
            Kind::Std | Kind::Var => vec![
                n(),
                f.clone().alias(Self::slot(i, "m")),
                when(c.is_not_null())
                    .then(lit(0.0f64))
                    .otherwise(lit(NULL).cast(DataType::Float64))
                    .alias(Self::slot(i, "q")),
            ],
            // A kind added later has no row form until it is given one here.
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }

    /// Expressions merging partials (or earlier merges) into one of the same shape.
    pub(crate) fn combine(&self, i: usize) -> Vec<Expr> {
        let s = |w: &str| col(Self::slot(i, w));
        match self.kind {
            Kind::Sum => vec![s("s").sum()],
            Kind::Mean => vec![s("s").sum(), s("n").sum()],
            Kind::Min => vec![s("lo").min()],
            Kind::Max => vec![s("hi").max()],
            Kind::Count | Kind::Len => vec![s("n").sum()],
            Kind::Std | Kind::Var => {
                // Chan et al.: n = Σnᵢ, mean = Σnᵢmᵢ / n, M2 = ΣM2ᵢ + Σnᵢ(mᵢ - mean)².
                let nf = s("n").cast(DataType::Float64);
                let total = s("n").sum();
                let mean = when(total.clone().gt(lit(0)))
                    .then((nf.clone() * s("m")).sum() / total.clone().cast(DataType::Float64))
                    .otherwise(lit(NULL).cast(DataType::Float64));
                let d = s("m") - mean.clone();
                vec![
                    total.alias(Self::slot(i, "n")),
                    mean.alias(Self::slot(i, "m")),
                    (s("q").sum() + (nf * d.clone() * d).sum()).alias(Self::slot(i, "q")),
                ]
            }
            // The group's digests as a list; `quantile::merge_digests` merges them.
            Kind::Quantile => vec![s(DIGEST)],
        }
    }

    /// The partial column (`slot`'s `what`) that `finish` only renames, or `None` when the
    /// finish computes (mean, variance, deviation).
    pub(crate) fn finish_slot(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Sum => Some("s"),
            Kind::Min => Some("lo"),
            Kind::Max => Some("hi"),
            Kind::Count | Kind::Len => Some("n"),
            // `quantile::estimate` made the digest the estimate.
            Kind::Quantile => Some(DIGEST),
            Kind::Mean | Kind::Var | Kind::Std => None,
        }
    }

    /// The expression turning merged partials into the result column.
    pub(crate) fn finish(&self, i: usize) -> Expr {
        let s = |w: &str| col(Self::slot(i, w));
        let null = || lit(NULL).cast(DataType::Float64);
        let var = || {
            when(s("n").gt(lit(1)))
                .then(s("q") / (s("n") - lit(1)).cast(DataType::Float64))
                .otherwise(null())
        };
        let e = match (self.finish_slot(), self.kind) {
            (Some(what), _) => s(what),
            (None, Kind::Mean) => when(s("n").gt(lit(0)))
                .then(s("s") / s("n").cast(DataType::Float64))
                .otherwise(null()),
            (None, Kind::Std) => var().sqrt(),
            (None, _) => var(),
        };
        e.alias(self.name.clone())
    }
}

/// The partial column of a quantile's digest (see `crate::quantile`).
pub(crate) const DIGEST: &str = "td";

/// The approximate quantile `q` (in 0..=1; checked by [`GroupBy::agg`](crate::GroupBy::agg))
/// of the numeric `column`, as `f64`: a t-digest of each group's finite values per partition
/// (nulls, NaN and infinities skipped), merged as the partials are, and read at `q` in the
/// finish. Null when a group has no finite value. Within a rank error of
/// [`QUANTILE_RANK_ERROR`](crate::QUANTILE_RANK_ERROR), as [`Frame::quantile`](crate::Frame::quantile).
pub fn quantile(column: impl Into<PlSmallStr>, q: f64) -> Agg {
    Agg {
        q,
        ..Agg::new(Kind::Quantile, column)
    }
}

/// The approximate median of `column`: [`quantile`]`(column, 0.5)`.
pub fn median(column: impl Into<PlSmallStr>) -> Agg {
    quantile(column, 0.5)
}

/// The sum of `column`.
pub fn sum(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Sum, column)
}

/// The mean of `column`.
pub fn mean(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Mean, column)
}

/// The smallest value of `column`.
pub fn min(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Min, column)
}

/// The largest value of `column`.
pub fn max(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Max, column)
}

/// The number of non-null values of `column`.
pub fn count(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Count, column)
}

/// The number of rows (of the group), in a column called `len`.
pub fn len() -> Agg {
    // The column is only a name here: `len` counts rows whatever their values.
    Agg::new(Kind::Len, "len")
}

/// The sample standard deviation (ddof 1) of `column`.
pub fn std(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Std, column)
}

/// The sample variance (ddof 1) of `column`.
pub fn var(column: impl Into<PlSmallStr>) -> Agg {
    Agg::new(Kind::Var, column)
}
