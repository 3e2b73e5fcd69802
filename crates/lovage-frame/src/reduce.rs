//! Reductions and group-by: a partial step per partition, a tree of combining nodes
//! (`split_every` partials each) or a hash split into `split_out` parts, and a finish.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::agg::{Agg, Kind};
use crate::data::{Ipc, PartData};
use crate::frame::{collect_grouped, stack_frames, Frame, GroupBy, LazyPlan, Part};
use crate::key_ranges::KeyRanges;
use crate::shuffle::hash_split;
use crate::{kernel, polars_error, quantile, Error};

/// How many partials a combining node merges by default (Dask's `split_every` default).
pub(crate) const SPLIT_EVERY: usize = 8;

/// A step on one (concatenated) frame: a combine or a finish.
pub(crate) type Step = Arc<dyn Fn(DataFrame) -> Result<DataFrame, TaskError> + Send + Sync>;

/// Stacks `parts` (of `schema` when there are none) and runs `step` on the result.
pub(crate) fn merge(
    parts: Vec<DataFrame>,
    schema: &SchemaRef,
    step: &Step,
) -> Result<DataFrame, TaskError> {
    step(stack_frames(parts, schema)?)
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
#[derive(Clone)]
pub(crate) struct AggSteps {
    pub(crate) partial: Step,
    /// The partial step as a lazy plan, to run in one Polars query with a partition's own
    /// plan (`Part::run_then`); `None` when the step does more than a query (quantiles'
    /// digests): then the partition's rows are made first and `partial` runs on them.
    pub(crate) partial_plan: Option<LazyPlan>,
    pub(crate) combine: Step,
    pub(crate) finish: Step,
}

impl AggSteps {
    /// A partition's partial: its plan and the partial step in one Polars query where they
    /// can be, else its rows and then the step.
    pub(crate) fn partial_of(
        &self,
        part: &Part,
        input: Option<DataFrame>,
    ) -> Result<DataFrame, TaskError> {
        match &self.partial_plan {
            Some(plan) => part.run_then(input, plan),
            None => (self.partial)(part.run(input)?),
        }
    }

    /// [`partial_of`](AggSteps::partial_of) for a partition as data (a task's arguments).
    pub(crate) fn partial_of_data(
        &self,
        part: PartData,
        input: Vec<Ipc>,
    ) -> Result<DataFrame, TaskError> {
        match &self.partial_plan {
            Some(plan) => part.rows_then(input, Some(plan)),
            None => (self.partial)(part.rows(input)?),
        }
    }
}

/// The steps of `aggs` grouped by `keys` (over the whole frame when there are none).
pub(crate) fn agg_steps(keys: &[PlSmallStr], aggs: &[Agg]) -> AggSteps {
    let key_exprs: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
    let quantiles = aggs.iter().any(|a| a.kind == Kind::Quantile);
    let by_plan = |exprs: Vec<Expr>| -> LazyPlan {
        let key_exprs = key_exprs.clone();
        Arc::new(move |lf: LazyFrame| {
            if key_exprs.is_empty() {
                // Polars' common subexpression elimination breaks a `select` of several
                // `implode`s of one column (a column of height 1 beside the whole column).
                let mut opts = lf.get_current_optimizations();
                opts.set(OptFlags::COMM_SUBEXPR_ELIM, !quantiles);
                lf.with_optimizations(opts).select(exprs.clone()).collect()
            } else {
                collect_grouped(lf.group_by(key_exprs.clone()).agg(exprs.clone()))
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
    let by = |exprs: Vec<Expr>, what: &'static str| -> Step {
        let plan = by_plan(exprs);
        Arc::new(move |df: DataFrame| plan(df.lazy()).map_err(|e| polars_error(what, e)))
    };
    let partial_plan = with_kernel(
        keys,
        aggs,
        by_plan(
            aggs.iter()
                .enumerate()
                .flat_map(|(i, a)| gathered(a, a.partial(i)))
                .collect(),
        ),
    );
    let partial = {
        let plan = partial_plan.clone();
        Arc::new(move |df: DataFrame| {
            plan(df.lazy()).map_err(|e| polars_error("partial aggregation", e))
        }) as Step
    };
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
    let finish = match renames(keys, aggs) {
        Some(columns) => renaming(columns),
        None => lazy("finishing an aggregation", move |lf| {
            lf.select(exprs.clone())
        }),
    };
    if !quantiles {
        return AggSteps {
            partial,
            partial_plan: Some(partial_plan),
            combine,
            finish,
        };
    }
    // Quantiles: the lists Polars gathered become digests, merged digests, estimates. The
    // digests are made after the query, so the partial step is not one Polars query with a
    // partition's plan.
    let (a, b, c) = (aggs.to_vec(), aggs.to_vec(), aggs.to_vec());
    AggSteps {
        partial: Arc::new(move |df| quantile::digest_values(partial(df)?, &a)),
        partial_plan: None,
        combine: Arc::new(move |df| quantile::merge_digests(combine(df)?, &b)),
        finish: Arc::new(move |df| finish(quantile::estimate(df, &c)?)),
    }
}

/// The finish of `aggs` by `keys` as the columns it keeps, each with its new name (the keys
/// keep theirs), when every aggregation's finish is one of its partial columns renamed
/// (`Agg::finish_slot`); `None` otherwise.
fn renames(keys: &[PlSmallStr], aggs: &[Agg]) -> Option<Vec<(PlSmallStr, PlSmallStr)>> {
    let keys = keys.iter().map(|k| (k.clone(), k.clone()));
    let slots = aggs
        .iter()
        .enumerate()
        .map(|(i, a)| Some((Agg::slot(i, a.finish_slot()?), a.name.clone())));
    keys.map(Some).chain(slots).collect()
}

/// A finish that only picks and renames columns (`renames`): done on the frame, not as a
/// Polars query, whose planning costs more than the renaming (the outputs of an exchange
/// each finish one). Duplicate names are an error, as in the query.
fn renaming(columns: Vec<(PlSmallStr, PlSmallStr)>) -> Step {
    Arc::new(move |df: DataFrame| {
        let picked = columns
            .iter()
            .map(|(from, to)| {
                let mut c = df.column(from)?.clone();
                c.rename(to.clone());
                Ok(c)
            })
            .collect::<PolarsResult<Vec<Column>>>()
            .and_then(|picked| DataFrame::new(df.height(), picked));
        picked.map_err(|e| polars_error("finishing an aggregation", e))
    })
}

/// `polars_plan`, the partial step as a Polars query, tried first with lovage's kernels
/// (`crate::kernel`) when `aggs` by `keys` may be theirs and the columns' types fit: the
/// partition's columns they read are made by Polars, then a kernel aggregates them, or, for
/// values it does not cover (a key range too wide, a long string), the query runs on those
/// columns.
fn with_kernel(keys: &[PlSmallStr], aggs: &[Agg], polars_plan: LazyPlan) -> LazyPlan {
    if !kernel::covers(keys, aggs) {
        return polars_plan;
    }
    let (keys, aggs) = (keys.to_vec(), aggs.to_vec());
    let columns: Vec<Expr> = kernel::columns(&keys, &aggs).into_iter().map(col).collect();
    if columns.is_empty() {
        return polars_plan;
    }
    Arc::new(move |mut lf: LazyFrame| {
        let schema = lf.collect_schema()?;
        if !kernel::types_fit(&schema, &keys, &aggs) {
            return polars_plan(lf);
        }
        let df = lf.select(columns.clone()).collect()?;
        match kernel::partial(&df, &keys, &aggs) {
            Some(partial) => Ok(partial),
            None => polars_plan(df.lazy()),
        }
    })
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
        let steps = agg_steps(&keys, &aggs);
        let frame = &self.frame;
        let partial_schema = schema_after(&steps.partial, &frame.schema)?;
        let final_schema = schema_after(
            &steps.finish,
            &schema_after(&steps.combine, &partial_schema)?,
        )?;
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
        if keys.is_empty() || frame.npartitions() <= 1 || self.split_out == Some(1) {
            let partial = steps.clone();
            let partials = frame.map_parts_with("partial", move |part, input| {
                partial.partial_of(part, input)
            });
            return Ok(tree(
                g,
                partials,
                self.split_every,
                partial_schema,
                steps.combine,
                steps.finish,
            ));
        }
        Ok(run_time_exchange(
            frame,
            keys,
            steps,
            partial_schema,
            final_schema,
            self.split_out,
        ))
    }
}

/// What partition 0's partial aggregation decided for a group-by's exchange.
#[derive(Clone, Default)]
struct Choice {
    /// Outputs that receive rows (of the exchange's `most`).
    n: usize,
    /// Send rows, not partials: the partial barely shrank partition 0.
    skip_partial: bool,
    /// What partition 0's map sends on: its partial, or its rows when the partials are
    /// skipped.
    sent0: DataFrame,
    /// The outputs as ranges of one integer key (from partition 0's keys), else by hash.
    ranges: Option<Arc<KeyRanges>>,
}

/// A group-by through a hash exchange on the local schedulers, decided at run time from
/// partition 0 (as DataFusion decides from its first batches): its partial aggregation gives
/// the group count, hence the outputs when `split_out` is unset (`auto_split_out`; `fixed`
/// otherwise), and, when the partial kept more than half of the rows (`skip_partial`), the
/// other partitions skip their partial step: their rows go straight to the hash exchange
/// and each output aggregates its rows once (partial then finish), instead of aggregating
/// nearly every row twice. A kept partial runs in one Polars query with the partition's
/// plan (`Part::run_then`).
fn run_time_exchange<'g>(
    frame: &Frame<'g>,
    keys: Vec<PlSmallStr>,
    steps: AggSteps,
    partial_schema: SchemaRef,
    final_schema: SchemaRef,
    fixed: Option<usize>,
) -> Delayed<DataFrame> {
    let g = frame.g;
    let n_parts = frame.npartitions();
    let most = fixed.unwrap_or(n_parts.min(AUTO_SPLIT_OUT_MAX)).max(1);
    let (partial, combine, finish) = (
        steps.partial.clone(),
        steps.combine.clone(),
        steps.finish.clone(),
    );
    let choice: Delayed<Choice> = {
        let (partial, keys0) = (partial.clone(), keys.clone());
        frame.part_node(&frame.parts[0], "choose split_out", move |part, input| {
            let df = part.run(input)?;
            let rows = df.height();
            // Mostly distinct keys in a prefix: the partial would keep most rows, so it is
            // skipped without being run (the groups estimated); else it is run and counted.
            let (groups, sent0, skip) = match distinct_in_prefix(&df, &keys0)? {
                Some(groups) => (groups, df.clone(), true),
                None => {
                    let partial0 = partial(df.clone())?;
                    let groups = partial0.height();
                    let skip = skip_partial(groups, rows);
                    (groups, if skip { df.clone() } else { partial0 }, skip)
                }
            };
            let n = fixed.unwrap_or_else(|| auto_split_out(groups, Some(rows), n_parts, most));
            let n = n.clamp(1, most);
            Ok(Choice {
                n,
                skip_partial: skip,
                ranges: KeyRanges::sample(&df, &keys0, n).map(Arc::new),
                sent0,
            })
        })
    };
    let maps: Vec<Delayed<Arc<Vec<DataFrame>>>> = frame
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let (keys, steps) = (keys.clone(), steps.clone());
            let split = move |part: &Part, input: Option<DataFrame>, c: Choice| {
                let sent = match (c.skip_partial, i) {
                    (_, 0) => c.sent0,
                    (true, _) => {
                        note_skipped_partial();
                        part.run(input)?
                    }
                    (false, _) => steps.partial_of(part, input)?,
                };
                let mut pieces = match &c.ranges {
                    Some(ranges) => ranges.split(&sent, &keys)?,
                    None => hash_split(&sent, &keys, c.n.clamp(1, most))?,
                };
                pieces.resize_with(most, || sent.clear());
                Ok(Arc::new(pieces))
            };
            let part = part.clone();
            match frame.input_of(&part) {
                Some(input) => g.try_local_all(
                    "shuffle split",
                    move |v: Vec<(DataFrame, Choice)>| {
                        let (df, c) = v.into_iter().next().unwrap_or_default();
                        split(&part, Some(df), c)
                    },
                    vec![g.tuple((input, choice))],
                ),
                None => g.try_local_all(
                    "shuffle split",
                    move |v: Vec<Choice>| {
                        split(&part, None, v.into_iter().next().unwrap_or_default())
                    },
                    vec![choice],
                ),
            }
        })
        .collect();
    let maps = g.collect(maps);
    let row_schema = frame.schema.clone();
    let outs = (0..most)
        .map(|j| {
            let (partial, combine, finish) = (partial.clone(), combine.clone(), finish.clone());
            let (row_schema, partial_schema) = (row_schema.clone(), partial_schema.clone());
            let final_schema = final_schema.clone();
            g.try_local_all(
                "finish",
                move |v: Vec<(Vec<Arc<Vec<DataFrame>>>, Choice)>| {
                    let (maps, c) = v.into_iter().next().unwrap_or_default();
                    if j >= c.n.clamp(1, most) {
                        // An output past the `n` chosen at run time: no piece has rows.
                        return Ok(DataFrame::empty_with_schema(&final_schema));
                    }
                    let pieces = maps.iter().map(|m| m[j].clone()).collect();
                    if c.skip_partial {
                        finish(partial(stack_frames(pieces, &row_schema)?)?)
                    } else {
                        finish(combine(stack_frames(pieces, &partial_schema)?)?)
                    }
                },
                vec![g.tuple((maps, choice))],
            )
        })
        .collect();
    // The outputs' chunks are kept (as Polars' own `concat` does by default): one chunk
    // would be a copy of every group's row.
    g.try_local_all(
        "concat",
        move |parts: Vec<DataFrame>| stack_frames(parts, &final_schema),
        outs,
    )
}

/// `df`'s rows as partials of `aggs` by `keys` of one row each (`Agg::row_partial`), with
/// the columns and types of `partial_schema`: what a partition sends when its partial
/// aggregation is skipped, merged by the combining step like any partial. `None` when an
/// aggregation has no such form (the caller then runs the partial step).
pub(crate) fn row_partials(
    df: &DataFrame,
    keys: &[PlSmallStr],
    aggs: &[Agg],
    partial_schema: &Schema,
) -> Result<Option<DataFrame>, TaskError> {
    let mut exprs: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
    for (i, a) in aggs.iter().enumerate() {
        match a.row_partial(i) {
            Some(e) => exprs.extend(e),
            None => return Ok(None),
        }
    }
    note_skipped_partial();
    if df.height() == 0 {
        // A literal (`len`'s 1) would make one row of nothing.
        return Ok(Some(DataFrame::empty_with_schema(partial_schema)));
    }
    let fail = |e| polars_error("a skipped partial aggregation", e);
    let rows = df.clone().lazy().select(exprs).collect().map_err(fail)?;
    let columns = partial_schema
        .iter()
        .map(|(name, dtype)| {
            let c = rows.column(name)?;
            if c.dtype() == dtype {
                Ok(c.clone())
            } else {
                c.cast(dtype)
            }
        })
        .collect::<PolarsResult<Vec<Column>>>()
        .map_err(fail)?;
    DataFrame::new(df.height(), columns).map(Some).map_err(fail)
}

#[cfg(test)]
thread_local! {
    /// Partitions whose partial aggregation this thread skipped (tests count them).
    pub(crate) static SKIPPED_PARTIALS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts a skipped partial aggregation for the tests; nothing otherwise.
fn note_skipped_partial() {
    #[cfg(test)]
    SKIPPED_PARTIALS.with(|c| c.set(c.get() + 1));
}

/// Rows of partition 0 whose distinct keys `distinct_in_prefix` counts.
const PREFIX_ROWS: usize = 1 << 16;

/// When the keys of `df`'s first `PREFIX_ROWS` rows are mostly distinct (by a HyperLogLog
/// sketch, ~6.5% off): the estimated groups of all of `df`, scaled from the prefix, which
/// `skip_partial` would skip. `None` when the prefix has few enough groups that the partial
/// is worth running (and counting exactly). Saves partition 0's partial, which the other
/// partitions wait for, when it would be thrown away.
fn distinct_in_prefix(df: &DataFrame, keys: &[PlSmallStr]) -> Result<Option<usize>, TaskError> {
    let rows = df.height();
    let prefix = rows.min(PREFIX_ROWS);
    if prefix == 0 {
        return Ok(None);
    }
    let fail = |e| polars_error("counting partition 0's keys", e);
    let mut key_frame = df
        .slice(0, prefix)
        .select(keys.iter().cloned())
        .map_err(fail)?;
    let hashes = key_frame
        .hash_rows(Some(PlSeedableRandomStateQuality::fixed()))
        .map_err(fail)?;
    let mut sketch = polars::polars_utils::cardinality_sketch::CardinalitySketch::new();
    for h in hashes.into_no_null_iter() {
        sketch.insert(h);
    }
    let distinct = sketch.estimate().min(prefix);
    if !skip_partial(distinct, prefix) {
        return Ok(None);
    }
    Ok(Some(
        ((distinct as u128 * rows as u128) / prefix as u128) as usize,
    ))
}

/// Whether a partial aggregation that left `groups` of `rows` rows shrank them too little to
/// be worth its cost (more than half kept): DataFusion's test for skipping it.
pub(crate) fn skip_partial(groups: usize, rows: usize) -> bool {
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
    use super::{
        agg_steps, auto_split_out, distinct_in_prefix, renames, skip_partial, SKIPPED_PARTIALS,
    };
    use crate::agg::Agg;
    use crate::{agg, compute, Frame};
    use lovage_graph::{Graph, Inline};
    use polars::prelude::*;

    /// 4 partitions of 500 rows with nulls in keys and values: every key distinct (the
    /// partial keeps every row) or 3 keys.
    fn partitions(distinct: bool) -> Vec<DataFrame> {
        (0..4i64)
            .map(|p| {
                let k: Vec<Option<i64>> = (0..500)
                    .map(|r| match (r % 97, distinct) {
                        (0, _) => None,
                        (_, true) => Some(p * 500 + r),
                        (_, false) => Some(r % 3),
                    })
                    .collect();
                let v: Vec<Option<i64>> = (0..500)
                    .map(|r| (r % 11 != 0).then_some(r * 7 - p))
                    .collect();
                df!("k" => k, "v" => v).unwrap()
            })
            .collect()
    }

    /// `parts` one after the other.
    fn stacked(parts: &[DataFrame]) -> DataFrame {
        let mut whole = parts[0].clone();
        for p in &parts[1..] {
            whole.vstack_mut(p).unwrap();
        }
        whole
    }

    /// `got` has `want`'s rows and, in `columns`, exactly its values (as `Int64`).
    fn exact(got: &DataFrame, want: &DataFrame, columns: &[&str], what: &str) {
        assert_eq!(got.height(), want.height(), "{what}");
        for &c in columns {
            let (a, b) = (got.column(c).unwrap(), want.column(c).unwrap());
            let (a, b) = (
                a.cast(&DataType::Int64).unwrap(),
                b.cast(&DataType::Int64).unwrap(),
            );
            assert!(
                a.as_materialized_series()
                    .equals_missing(b.as_materialized_series()),
                "{what}: {c}"
            );
        }
    }

    fn close(a: &Column, b: &Column) -> bool {
        let (a, b) = (
            a.cast(&DataType::Float64).unwrap(),
            b.cast(&DataType::Float64).unwrap(),
        );
        let (a, b) = (a.f64().unwrap(), b.f64().unwrap());
        a.len() == b.len()
            && a.iter().zip(b.iter()).all(|(x, y)| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                (None, None) => true,
                _ => false,
            })
    }

    #[test]
    fn a_group_by_skips_partials_when_partition_0_barely_shrinks_with_split_out_fixed_or_not() {
        for (distinct, skipped) in [(true, 3), (false, 0)] {
            let parts = partitions(distinct);
            let want = stacked(&parts)
                .lazy()
                .group_by([col("k")])
                .agg([
                    col("v").sum().alias("sum"),
                    col("v").mean().alias("mean"),
                    col("v").min().alias("min"),
                    col("v").max().alias("max"),
                    col("v").count().alias("count"),
                    len().alias("len"),
                    col("v").std(1).alias("std"),
                    col("v").var(1).alias("var"),
                ])
                .sort(["k"], Default::default())
                .collect()
                .unwrap();
            for split_out in [Some(3), None] {
                let g = Graph::new();
                let f = Frame::from_partitions(&g, parts.clone()).unwrap();
                let mut by = f.group_by(["k"]);
                if let Some(n) = split_out {
                    by = by.split_out(n);
                }
                let out = by
                    .agg([
                        agg::sum("v").alias("sum"),
                        agg::mean("v").alias("mean"),
                        agg::min("v").alias("min"),
                        agg::max("v").alias("max"),
                        agg::count("v").alias("count"),
                        agg::len(),
                        agg::std("v").alias("std"),
                        agg::var("v").alias("var"),
                    ])
                    .unwrap();
                SKIPPED_PARTIALS.with(|c| c.set(0));
                let got = compute(&g, Inline, out).unwrap();
                let what = format!("distinct keys {distinct}, split_out {split_out:?}");
                assert_eq!(SKIPPED_PARTIALS.with(|c| c.get()), skipped, "{what}");
                let got = got.sort(["k"], Default::default()).unwrap();
                exact(
                    &got,
                    &want,
                    &["k", "sum", "min", "max", "count", "len"],
                    &what,
                );
                for c in ["mean", "std", "var"] {
                    assert!(
                        close(got.column(c).unwrap(), want.column(c).unwrap()),
                        "{what}: {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn integer_keys_cut_by_ranges_random_sorted_or_skewed_match_polars() {
        use crate::key_ranges::RANGE_SPLITS;
        // 4 partitions of 60k rows, mostly distinct keys: the unset split_out chooses 2–4
        // outputs at run time, cut by ranges of partition 0's keys.
        const ROWS: i64 = 60_000;
        for layout in ["random", "sorted", "skewed"] {
            let mut rng = fastrand::Rng::with_seed(5);
            let parts: Vec<DataFrame> = (0..4i64)
                .map(|p| {
                    let k: Vec<Option<i64>> = (0..ROWS)
                        .map(|r| match layout {
                            _ if r % 101 == 0 => None,
                            "random" => Some(rng.i64(0..5 * ROWS)),
                            // Each partition a range of its own: 1..3 beyond partition 0's
                            // go by hash.
                            "sorted" => Some(p * ROWS + r),
                            _ if r % 3 == 0 => Some(42),
                            _ => Some(rng.i64(-1_000_000..1_000_000)),
                        })
                        .collect();
                    let v: Vec<Option<i64>> = (0..ROWS)
                        .map(|r| (r % 7 != 0).then(|| rng.i64(-1000..1000)))
                        .collect();
                    df!("k" => k, "v" => v).unwrap()
                })
                .collect();
            let want = stacked(&parts)
                .lazy()
                .group_by([col("k")])
                .agg([col("v").sum().alias("sum"), len().alias("len")])
                .sort(["k"], Default::default())
                .collect()
                .unwrap();
            let g = Graph::new();
            let f = Frame::from_partitions(&g, parts).unwrap();
            let out = f
                .group_by(["k"])
                .agg([agg::sum("v").alias("sum"), agg::len()])
                .unwrap();
            RANGE_SPLITS.with(|c| c.set(0));
            let got = compute(&g, Inline, out).unwrap();
            assert_eq!(RANGE_SPLITS.with(|c| c.get()), 4, "{layout}");
            let got = got.sort(["k"], Default::default()).unwrap();
            exact(&got, &want, &["k", "sum", "len"], layout);
        }
    }

    #[test]
    fn partition_0s_partial_is_not_run_when_its_first_keys_are_mostly_distinct() {
        let distinct = df!("k" => (0..100_000i64).collect::<Vec<_>>()).unwrap();
        let keys = [PlSmallStr::from("k")];
        let est = distinct_in_prefix(&distinct, &keys).unwrap().unwrap();
        // The sketch is ~6.5% off; scaled from 65,536 rows to 100,000.
        assert!((85_000..=100_000).contains(&est), "{est}");
        let few = df!("k" => (0..100_000i64).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
        assert_eq!(distinct_in_prefix(&few, &keys).unwrap(), None);
        let empty = distinct.clear();
        assert_eq!(distinct_in_prefix(&empty, &keys).unwrap(), None);
        let strings = df!("k" => (0..1000).map(|i| format!("s{i}")).collect::<Vec<_>>()).unwrap();
        assert!(distinct_in_prefix(&strings, &keys).unwrap().is_some());
    }

    #[test]
    fn a_finish_that_only_renames_equals_polars_query_and_refuses_duplicate_names() {
        let keys = [PlSmallStr::from("k")];
        let aggs = [
            agg::sum("v"),
            agg::len().alias("rows"),
            agg::max("v").alias("top"),
            agg::count("v").alias("n_v"),
        ];
        let partial = df!(
            "k" => [Some(1i64), None, Some(3)],
            Agg::slot(0, "s").as_str() => [1.5, 2.0, -1.0],
            Agg::slot(1, "n").as_str() => [1i64, 2, 3],
            Agg::slot(2, "hi").as_str() => [Some(1.5), None, Some(0.0)],
            Agg::slot(3, "n").as_str() => [1i64, 0, 3]
        )
        .unwrap();
        let exprs: Vec<Expr> = std::iter::once(col("k"))
            .chain(aggs.iter().enumerate().map(|(i, a)| a.finish(i)))
            .collect();
        let want = partial.clone().lazy().select(exprs).collect().unwrap();
        let got = (agg_steps(&keys, &aggs).finish)(partial.clone()).unwrap();
        assert!(got.equals_missing(&want), "{got} != {want}");
        assert_eq!(got.get_column_names(), ["k", "v", "rows", "top", "n_v"]);
        // A result column named like a key: an error, as Polars' query gives.
        let clash = [agg::sum("k")];
        let partial = df!("k" => [1i64], Agg::slot(0, "s").as_str() => [1i64]).unwrap();
        let err = (agg_steps(&keys, &clash).finish)(partial).unwrap_err();
        assert!(
            err.to_string().contains("finishing an aggregation"),
            "{err}"
        );
        // A finish that computes is left to the query.
        assert!(renames(&keys, &[agg::mean("v")]).is_none());
        assert!(renames(&keys, &[agg::sum("v"), agg::std("v")]).is_none());
    }

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
