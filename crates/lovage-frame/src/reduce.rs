//! Reductions and group-by: a partial step per partition, a tree of combining nodes
//! (`split_every` partials each) or a hash split into `split_out` parts, and a finish.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::agg::{Agg, Kind};
use crate::frame::{concat_frames, Frame, GroupBy};
use crate::shuffle::{exchange, hash_split, Splitter};
use crate::{polars_error, quantile, Error};

/// How many partials a combining node merges by default (Dask's `split_every` default).
pub(crate) const SPLIT_EVERY: usize = 8;

/// A step on one (concatenated) frame: a combine or a finish.
pub(crate) type Step = Arc<dyn Fn(DataFrame) -> Result<DataFrame, TaskError> + Send + Sync>;

/// Concatenates `parts` (of `schema` when there are none) and runs `step` on the result.
pub(crate) fn merge(
    parts: Vec<DataFrame>,
    schema: &SchemaRef,
    step: &Step,
) -> Result<DataFrame, TaskError> {
    step(concat_frames(parts, schema)?)
}

/// Merges `level` `k` at a time with `combine` until one node is left, then `finish`es it.
fn tree(
    g: &Graph,
    mut level: Vec<Delayed<DataFrame>>,
    k: usize,
    schema: SchemaRef,
    combine: Step,
    finish: Step,
) -> Delayed<DataFrame> {
    let k = k.max(2);
    while level.len() > k {
        level = level
            .chunks(k)
            .map(|group| {
                let (schema, combine) = (schema.clone(), combine.clone());
                g.try_local_all(
                    "combine",
                    move |parts: Vec<DataFrame>| merge(parts, &schema, &combine),
                    group.to_vec(),
                )
            })
            .collect();
    }
    g.try_local_all(
        "finish",
        move |parts: Vec<DataFrame>| {
            let merged = merge(parts, &schema, &combine)?;
            finish(merged)
        },
        level,
    )
}

/// Runs `f` on `df` as a lazy frame.
fn lazy(what: &'static str, f: impl Fn(LazyFrame) -> LazyFrame + Send + Sync + 'static) -> Step {
    Arc::new(move |df: DataFrame| f(df.lazy()).collect().map_err(|e| polars_error(what, e)))
}

/// The schema `step` gives a frame of `schema` (checked on an empty frame, so bad column
/// names and types are errors when the graph is built).
pub(crate) fn schema_after(step: &Step, schema: &SchemaRef) -> Result<SchemaRef, Error> {
    step(DataFrame::empty_with_schema(schema))
        .map(|df| df.schema().clone())
        .map_err(|e| Error::Input(e.message.to_string()))
}

impl<'g> Frame<'g> {
    /// Aggregations over whole columns: a one-row frame with a column per aggregation.
    pub fn reduce<A: AsRef<[Agg]>>(&self, aggs: A) -> Result<Delayed<DataFrame>, Error> {
        self.group_by(Vec::<PlSmallStr>::new()).agg(aggs)
    }

    /// The number of distinct values of `column` (null counts as a value, as in Polars).
    pub fn n_unique(&self, column: &str) -> Result<Delayed<usize>, Error> {
        let c: PlSmallStr = column.into();
        let uniq = {
            let c = c.clone();
            lazy("n_unique", move |lf| {
                lf.select([col(c.clone())])
                    .unique(None, UniqueKeepStrategy::Any)
            })
        };
        let schema = schema_after(&uniq, &self.schema)?;
        let partial = uniq.clone();
        let parts = self.map_parts("n_unique", move |df| partial(df));
        let last = tree(self.g, parts, SPLIT_EVERY, schema, uniq.clone(), uniq);
        Ok(self.g.try_local_all(
            "n_unique",
            |v: Vec<DataFrame>| Ok(v.first().map_or(0, DataFrame::height)),
            vec![last],
        ))
    }

    /// The distinct rows (of the `subset` columns' values; all columns when `None`), one
    /// of each kept, in no particular order.
    pub fn drop_duplicates(
        &self,
        subset: Option<Vec<PlSmallStr>>,
    ) -> Result<Delayed<DataFrame>, Error> {
        let uniq = lazy("drop_duplicates", move |lf| {
            lf.unique(subset.clone().map(cols), UniqueKeepStrategy::Any)
        });
        schema_after(&uniq, &self.schema)?;
        let partial = uniq.clone();
        let parts = self.map_parts("drop_duplicates", move |df| partial(df));
        Ok(tree(
            self.g,
            parts,
            SPLIT_EVERY,
            self.schema.clone(),
            uniq.clone(),
            uniq,
        ))
    }

    /// The `n` rows with the largest values of `column` (nulls last), largest first.
    pub fn nlargest(&self, n: usize, column: &str) -> Result<Delayed<DataFrame>, Error> {
        self.top(n, column, true)
    }

    /// The `n` rows with the smallest values of `column` (nulls last), smallest first.
    pub fn nsmallest(&self, n: usize, column: &str) -> Result<Delayed<DataFrame>, Error> {
        self.top(n, column, false)
    }

    fn top(&self, n: usize, column: &str, descending: bool) -> Result<Delayed<DataFrame>, Error> {
        let c: PlSmallStr = column.into();
        let top = lazy("nlargest", move |lf| {
            lf.sort(
                [c.clone()],
                SortMultipleOptions::default()
                    .with_order_descending(descending)
                    .with_nulls_last(true)
                    .with_maintain_order(true),
            )
            .limit(n as IdxSize)
        });
        schema_after(&top, &self.schema)?;
        let partial = top.clone();
        let parts = self.map_parts("nlargest", move |df| partial(df));
        Ok(tree(
            self.g,
            parts,
            SPLIT_EVERY,
            self.schema.clone(),
            top.clone(),
            top,
        ))
    }

    /// How many rows hold each value of `column` (nulls included), most frequent first:
    /// columns `column` and `count`.
    pub fn value_counts(&self, column: &str) -> Result<Delayed<DataFrame>, Error> {
        let counts = self
            .group_by([column])
            .agg([crate::agg::len().alias("count")])?;
        Ok(self.g.try_local_all(
            "value_counts",
            |v: Vec<DataFrame>| {
                let df = v.into_iter().next().unwrap_or_default();
                df.sort(
                    ["count"],
                    SortMultipleOptions::default()
                        .with_order_descending(true)
                        .with_maintain_order(true),
                )
                .map_err(|e| polars_error("value_counts", e))
            },
            vec![counts],
        ))
    }

    /// Count, mean, std, min and max of every numeric column, one row per statistic (a
    /// `statistic` column names them). Quantiles are not offered.
    pub fn describe(&self) -> Result<Delayed<DataFrame>, Error> {
        let numeric: Vec<PlSmallStr> = self
            .schema
            .iter()
            .filter(|(_, d)| d.is_primitive_numeric())
            .map(|(n, _)| n.clone())
            .collect();
        if numeric.is_empty() {
            return Err(Error::Input(
                "describe: the frame has no numeric column".into(),
            ));
        }
        // pandas' and Dask's rows, in their order; the quartiles are t-digest estimates.
        let stats = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"];
        let aggs: Vec<Agg> = numeric
            .iter()
            .flat_map(|c| {
                [
                    crate::agg::count(c.clone()),
                    crate::agg::mean(c.clone()),
                    crate::agg::std(c.clone()),
                    crate::agg::min(c.clone()),
                    crate::agg::quantile(c.clone(), 0.25),
                    crate::agg::quantile(c.clone(), 0.5),
                    crate::agg::quantile(c.clone(), 0.75),
                    crate::agg::max(c.clone()),
                ]
                .into_iter()
                .zip(stats)
                .map(move |(a, s)| a.alias(format!("{s}:{c}")))
            })
            .collect();
        let one_row = self.reduce(aggs)?;
        Ok(self.g.try_local_all(
            "describe",
            move |v: Vec<DataFrame>| {
                let row = v.into_iter().next().unwrap_or_default();
                let fail = |e| polars_error("describe", e);
                let mut columns = vec![Column::new("statistic".into(), stats)];
                for c in &numeric {
                    let values: Vec<Option<f64>> = stats
                        .iter()
                        .map(|s| {
                            let col = row.column(&format!("{s}:{c}"))?.cast(&DataType::Float64)?;
                            Ok(col.f64()?.get(0))
                        })
                        .collect::<PolarsResult<_>>()
                        .map_err(fail)?;
                    columns.push(Column::new(c.clone(), values));
                }
                DataFrame::new_infer_height(columns).map_err(fail)
            },
            vec![one_row],
        ))
    }
}

/// An aggregation's three steps: per partition, merging partials, and finishing.
pub(crate) struct AggSteps {
    pub(crate) partial: Step,
    pub(crate) combine: Step,
    pub(crate) finish: Step,
}

/// The steps of `aggs` grouped by `keys` (over the whole frame when there are none).
pub(crate) fn agg_steps(keys: &[PlSmallStr], aggs: &[Agg]) -> AggSteps {
    let key_exprs: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
    let quantiles = aggs.iter().any(|a| a.kind == Kind::Quantile);
    let by = |exprs: Vec<Expr>, name: &'static str| {
        let key_exprs = key_exprs.clone();
        lazy(name, move |lf| {
            if key_exprs.is_empty() {
                // Polars' common subexpression elimination breaks a `select` of several
                // `implode`s of one column (a column of height 1 beside the whole column).
                let mut opts = lf.get_current_optimizations();
                opts.set(OptFlags::COMM_SUBEXPR_ELIM, !quantiles);
                lf.with_optimizations(opts).select(exprs.clone())
            } else {
                lf.group_by(key_exprs.clone()).agg(exprs.clone())
            }
        })
    };
    // A quantile's partial and combine gather a list per group, which a `select` (no keys)
    // only does with `implode`.
    let gathered = |a: &Agg, exprs: Vec<Expr>| -> Vec<Expr> {
        if a.kind == Kind::Quantile && key_exprs.is_empty() {
            exprs.into_iter().map(|e| e.implode(false)).collect()
        } else {
            exprs
        }
    };
    let partial = by(
        aggs.iter()
            .enumerate()
            .flat_map(|(i, a)| gathered(a, a.partial(i)))
            .collect(),
        "partial aggregation",
    );
    let combine = by(
        aggs.iter()
            .enumerate()
            .flat_map(|(i, a)| gathered(a, a.combine(i)))
            .collect(),
        "combining partials",
    );
    let exprs: Vec<Expr> = key_exprs
        .iter()
        .cloned()
        .chain(aggs.iter().enumerate().map(|(i, a)| a.finish(i)))
        .collect();
    let finish = lazy("finishing an aggregation", move |lf| {
        lf.select(exprs.clone())
    });
    if !quantiles {
        return AggSteps {
            partial,
            combine,
            finish,
        };
    }
    // Quantiles: the lists Polars gathered become digests, merged digests, estimates.
    let (a, b, c) = (aggs.to_vec(), aggs.to_vec(), aggs.to_vec());
    AggSteps {
        partial: Arc::new(move |df| quantile::digest_values(partial(df)?, &a)),
        combine: Arc::new(move |df| quantile::merge_digests(combine(df)?, &b)),
        finish: Arc::new(move |df| finish(quantile::estimate(df, &c)?)),
    }
}

/// A clear error for a quantile aggregation of a column that is not numeric or missing, or
/// of a `q` outside 0..=1 (the others are checked as the steps are built).
fn check_quantiles(aggs: &[Agg], schema: &Schema) -> Result<(), Error> {
    for a in aggs.iter().filter(|a| a.kind == Kind::Quantile) {
        let c = &a.column;
        match schema.get(c) {
            Some(t) if t.is_primitive_numeric() => {}
            Some(t) => {
                return Err(Error::Input(format!(
                    "agg quantile: column {c} is {t}, not numeric"
                )))
            }
            None => return Err(Error::Input(format!("agg quantile: no column {c}"))),
        }
        if !(0.0..=1.0).contains(&a.q) {
            return Err(Error::Input(format!(
                "agg quantile of {c}: q = {} is not in 0..=1",
                a.q
            )));
        }
    }
    Ok(())
}

impl<'g> GroupBy<'g> {
    /// Runs `aggs` per group: each partition is aggregated by Polars, the partials are
    /// merged `split_every` at a time (or, with `split_out(n)`, split by key hash into `n`
    /// parts merged independently), and the result is finished (mean = sum / count,
    /// variance from count, mean and M2; a quantile from merged t-digests). One row per group, in no particular order; with
    /// no keys, one row.
    pub fn agg<A: AsRef<[Agg]>>(&self, aggs: A) -> Result<Delayed<DataFrame>, Error> {
        let aggs = aggs.as_ref().to_vec();
        if aggs.is_empty() {
            return Err(Error::Input("agg: no aggregation given".into()));
        }
        check_quantiles(&aggs, &self.frame.schema)?;
        let keys = self.keys.clone();
        let AggSteps {
            partial,
            combine,
            finish,
        } = agg_steps(&keys, &aggs);
        let frame = &self.frame;
        let partial_schema = schema_after(&partial, &frame.schema)?;
        let final_schema = schema_after(&finish, &schema_after(&combine, &partial_schema)?)?;
        let g = frame.g;
        // Data all the way: registered tasks, so any scheduler runs it. A tree only: a broker
        // cannot run the in-process exchange. So an unset split_out merges in a tree for a
        // frame of files; a frame in memory keeps the run-time choice (its local schedulers'
        // figures rely on it) unless split_out(1) is asked for.
        let tree_only = keys.is_empty()
            || frame.npartitions() <= 1
            || self.split_out == Some(1)
            || (self.split_out.is_none() && !frame.in_memory());
        if let (true, Some(parts)) = (tree_only, frame.data_parts()) {
            return Ok(crate::tasks::agg_tree(
                g,
                parts,
                keys,
                aggs,
                self.split_every,
                &partial_schema,
            ));
        }
        // A fixed split_out of a frame of data: the exchange as registered tasks.
        if let (Some(n), Some(parts)) = (self.split_out, frame.data_parts()) {
            return Ok(crate::shuffle_tasks::agg_shuffle(
                g,
                parts,
                keys,
                aggs,
                n,
                &partial_schema,
                &final_schema,
            ));
        }
        let n_parts = frame.npartitions();
        let fixed = match self.split_out {
            _ if keys.is_empty() || n_parts <= 1 => Some(1),
            Some(n) => Some(n),
            None => None,
        };
        if fixed.is_none() {
            return Ok(auto_exchange(
                frame,
                keys,
                AggSteps {
                    partial,
                    combine,
                    finish,
                },
                partial_schema,
                final_schema,
            ));
        }
        let partials = {
            let partial = partial.clone();
            frame.map_parts("partial", move |df| partial(df))
        };
        if fixed == Some(1) {
            return Ok(tree(
                g,
                partials,
                self.split_every,
                partial_schema,
                combine,
                finish,
            ));
        }
        // A fixed split_out: every partial is split by key hash into `n` parts and part j of
        // every partial is merged in a node of its own, so no node holds all the groups.
        let n = fixed.unwrap_or(1);
        let split: Splitter = Arc::new(move |df: DataFrame| hash_split(&df, &keys, n));
        let outs = exchange(g, partials, n, split, partial_schema)
            .into_iter()
            .map(|p| {
                let (combine, finish) = (combine.clone(), finish.clone());
                g.try_local_all(
                    "finish",
                    move |v: Vec<DataFrame>| {
                        finish(combine(v.into_iter().next().unwrap_or_default())?)
                    },
                    vec![p],
                )
            })
            .collect();
        Ok(g.try_local_all(
            "concat",
            move |parts: Vec<DataFrame>| concat_frames(parts, &final_schema),
            outs,
        ))
    }
}

/// What partition 0's partial aggregation decided for an exchange with `split_out` unset.
#[derive(Clone, Default)]
struct Choice {
    /// Outputs that receive rows (of the exchange's `most`).
    n: usize,
    /// Send rows, not partials: the partial barely shrank partition 0.
    skip_partial: bool,
    /// Partition 0's partial (its map sends it on when the partials are kept).
    partial0: DataFrame,
}

/// A group-by with `split_out` unset on the local schedulers, decided at run time from
/// partition 0 (as DataFusion decides from its first batches): its partial aggregation gives
/// the group count, hence the outputs (`auto_split_out`), and, when the partial kept more
/// than half of the rows (`skip_partial`), the other partitions skip their partial step:
/// their rows go straight to the hash exchange and each output aggregates its rows once
/// (partial then finish), instead of aggregating nearly every row twice.
fn auto_exchange<'g>(
    frame: &Frame<'g>,
    keys: Vec<PlSmallStr>,
    steps: AggSteps,
    partial_schema: SchemaRef,
    final_schema: SchemaRef,
) -> Delayed<DataFrame> {
    let g = frame.g;
    let n_parts = frame.npartitions();
    let most = n_parts.min(AUTO_SPLIT_OUT_MAX);
    let AggSteps {
        partial,
        combine,
        finish,
    } = steps;
    let rows = frame.partitions();
    let choice: Delayed<Choice> = {
        let partial = partial.clone();
        g.try_local_all(
            "choose split_out",
            move |v: Vec<DataFrame>| {
                let df = v.into_iter().next().unwrap_or_default();
                let rows = df.height();
                let partial0 = partial(df)?;
                let groups = partial0.height();
                Ok(Choice {
                    n: auto_split_out(groups, Some(rows), n_parts, most),
                    skip_partial: skip_partial(groups, rows),
                    partial0,
                })
            },
            vec![rows[0]],
        )
    };
    let maps: Vec<Delayed<Arc<Vec<DataFrame>>>> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (keys, partial) = (keys.clone(), partial.clone());
            g.try_local_all(
                "shuffle split",
                move |v: Vec<(DataFrame, Choice)>| {
                    let (df, c) = v.into_iter().next().unwrap_or_default();
                    let sent = match (c.skip_partial, i) {
                        (true, _) => df,
                        (false, 0) => c.partial0,
                        (false, _) => partial(df)?,
                    };
                    let mut pieces = hash_split(&sent, &keys, c.n.clamp(1, most))?;
                    pieces.resize_with(most, || sent.clear());
                    Ok(Arc::new(pieces))
                },
                vec![g.tuple((*r, choice))],
            )
        })
        .collect();
    let maps = g.collect(maps);
    let row_schema = frame.schema.clone();
    let outs = (0..most)
        .map(|j| {
            let (partial, combine, finish) = (partial.clone(), combine.clone(), finish.clone());
            let (row_schema, partial_schema) = (row_schema.clone(), partial_schema.clone());
            g.try_local_all(
                "finish",
                move |v: Vec<(Vec<Arc<Vec<DataFrame>>>, Choice)>| {
                    let (maps, c) = v.into_iter().next().unwrap_or_default();
                    let pieces = maps.iter().map(|m| m[j].clone()).collect();
                    if c.skip_partial {
                        finish(partial(concat_frames(pieces, &row_schema)?)?)
                    } else {
                        finish(combine(concat_frames(pieces, &partial_schema)?)?)
                    }
                },
                vec![g.tuple((maps, choice))],
            )
        })
        .collect();
    g.try_local_all(
        "concat",
        move |parts: Vec<DataFrame>| concat_frames(parts, &final_schema),
        outs,
    )
}

/// Whether a partial aggregation that left `groups` of `rows` rows shrank them too little to
/// be worth its cost (more than half kept): DataFusion's test for skipping it.
fn skip_partial(groups: usize, rows: usize) -> bool {
    rows > 0 && groups * 2 > rows
}

/// The most output partitions an unset `split_out` chooses.
const AUTO_SPLIT_OUT_MAX: usize = 16;

/// Groups per output partition an unset `split_out` aims at: below it, one tree-like
/// merge is cheaper than an exchange.
const GROUPS_PER_SPLIT: usize = 100_000;

/// `split_out` from partition 0's group count: when most of its rows are distinct groups,
/// other partitions likely hold other groups, so the total is estimated as `groups` times
/// the partitions; otherwise as `groups`. One output per `GROUPS_PER_SPLIT` groups.
fn auto_split_out(groups: usize, rows: Option<usize>, partitions: usize, most: usize) -> usize {
    let mostly_distinct = rows.is_none_or(|r| groups * 2 > r);
    let total = if mostly_distinct {
        groups.saturating_mul(partitions)
    } else {
        groups
    };
    total.div_ceil(GROUPS_PER_SPLIT).clamp(1, most.max(1))
}

#[cfg(test)]
mod tests {
    use super::{auto_split_out, skip_partial};

    #[test]
    fn the_partial_is_skipped_when_it_keeps_most_rows() {
        assert!(skip_partial(390_000, 500_000));
        assert!(!skip_partial(10, 500_000));
        assert!(!skip_partial(250_000, 500_000));
        assert!(!skip_partial(0, 0));
    }

    #[test]
    fn auto_split_out_grows_with_the_measured_groups() {
        // Few groups in a partition of many rows: one output, whatever the partitions.
        assert_eq!(auto_split_out(10, Some(1_000_000), 50, 16), 1);
        assert_eq!(auto_split_out(5, None, 50, 16), 1);
        // Most rows distinct: groups scale with the partitions, capped at `most`.
        assert_eq!(auto_split_out(632_000, Some(1_000_000), 10, 10), 10);
        assert_eq!(auto_split_out(60_000, Some(100_000), 4, 16), 3);
        // Many groups that repeat across partitions: counted once.
        assert_eq!(auto_split_out(300_000, Some(10_000_000), 50, 16), 3);
        assert_eq!(auto_split_out(0, Some(0), 8, 16), 1);
    }
}
