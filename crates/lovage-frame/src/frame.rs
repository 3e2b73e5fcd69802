//! `Frame`: partitions (a source and a lazy plan each) and the element-wise steps on them.

use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph};
use polars::prelude::*;

use crate::data::{DataSource, Ipc, PartData, TaskPart};
use crate::{csv::CsvRange, json::JsonlFile, parquet::RowGroup, polars_error, Error};

/// Where a partition's rows come from.
#[derive(Clone)]
pub(crate) enum Source {
    /// A frame already in memory (`from_polars`, `from_partitions`).
    Memory(DataFrame),
    /// The result of another graph node (a persisted partition).
    Node(Delayed<DataFrame>),
    /// A byte range of a CSV file.
    Csv(Arc<CsvRange>),
    /// One row group of a Parquet file.
    Parquet(Arc<RowGroup>),
    /// Partition `i` of a generating function (`from_fn`), with the schema it must have.
    Generated(Arc<Generator>, usize),
    /// A JSON Lines file, read whole.
    Jsonl(Arc<JsonlFile>),
    /// The rows a registered task made (a join's output partition), as Arrow IPC: data, so
    /// the tasks that read it run on every scheduler.
    Rows(Delayed<Ipc>),
}

/// A function making a partition from its index (`Frame::from_fn`).
pub(crate) struct Generator {
    make: Box<dyn Fn(usize) -> PolarsResult<DataFrame> + Send + Sync>,
    schema: SchemaRef,
}

impl Source {
    /// What the partition is, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Source::Memory(_) => "an in-memory partition".into(),
            Source::Node(_) => "a persisted partition".into(),
            Source::Csv(r) => r.describe(),
            Source::Parquet(r) => r.describe(),
            Source::Generated(_, i) => format!("generated partition {i}"),
            Source::Jsonl(f) => f.describe(),
            Source::Rows(_) => "a partition of another task's rows".into(),
        }
    }

    /// The partition's rows (a `Node` source gets its value as `input`).
    fn load(&self, input: Option<DataFrame>) -> Result<DataFrame, TaskError> {
        match self {
            Source::Memory(df) => Ok(df.clone()),
            Source::Node(_) | Source::Rows(_) => input
                .ok_or_else(|| crate::data_error("internal: a persisted partition lost its input")),
            Source::Csv(r) => r.read(),
            Source::Parquet(r) => r.read(),
            Source::Jsonl(f) => f.read(),
            Source::Generated(gen, i) => {
                let df = (gen.make)(*i).map_err(|e| polars_error(self.describe(), e))?;
                if **df.schema() != *gen.schema {
                    return Err(crate::data_error(format!(
                        "{}: schema {:?} differs from the declared {:?}",
                        self.describe(),
                        df.schema(),
                        gen.schema
                    )));
                }
                Ok(df)
            }
        }
    }

    /// The source as data, when it is data (not a closure or another node's result).
    fn data(&self) -> Option<DataSource> {
        match self {
            Source::Memory(df) => Some(DataSource::Memory(df.clone())),
            Source::Csv(r) => Some(DataSource::Csv((**r).clone())),
            Source::Parquet(r) => Some(DataSource::Parquet((**r).clone())),
            Source::Jsonl(f) => Some(DataSource::Jsonl((**f).clone())),
            Source::Rows(_) => Some(DataSource::Input),
            Source::Node(_) | Source::Generated(..) => None,
        }
    }

    /// The number of rows when the metadata knows it without reading the data.
    fn known_rows(&self) -> Option<usize> {
        match self {
            Source::Memory(df) => Some(df.height()),
            Source::Parquet(r) => Some(r.rows),
            Source::Node(_)
            | Source::Csv(_)
            | Source::Generated(..)
            | Source::Jsonl(_)
            | Source::Rows(_) => None,
        }
    }
}

/// Whether `e` is a column, maybe renamed: selecting it keeps every row (an aggregation
/// inside the expression would not).
fn is_plain_column(e: &Expr) -> bool {
    match e {
        Expr::Column(_) => true,
        Expr::Alias(inner, _) => is_plain_column(inner),
        _ => false,
    }
}

/// One step of a partition's lazy plan (Polars runs it). Serializable (Polars' own serde
/// of `Expr`), so a plan travels to a process pool or a broker's workers.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Op {
    Select(Vec<Expr>),
    WithColumns(Vec<Expr>),
    Filter(Expr),
}

impl Op {
    fn apply(&self, lf: LazyFrame) -> LazyFrame {
        match self {
            Op::Select(e) => lf.select(e.clone()),
            Op::WithColumns(e) => lf.with_columns(e.clone()),
            Op::Filter(e) => lf.filter(e.clone()),
        }
    }

    /// Whether the step runs in one Polars query with what follows it (`run_plan_then`):
    /// a filter or a step that keeps every row.
    fn fuses(&self) -> bool {
        matches!(self, Op::Filter(_)) || self.keeps_rows()
    }

    /// Whether the step keeps every row (so a row count from metadata still holds).
    fn keeps_rows(&self) -> bool {
        match self {
            Op::WithColumns(_) => true,
            Op::Select(e) => e.iter().all(is_plain_column),
            Op::Filter(_) => false,
        }
    }
}

/// A partition: its source and the steps applied to it so far.
#[derive(Clone)]
pub(crate) struct Part {
    pub(crate) source: Source,
    pub(crate) ops: Arc<Vec<Op>>,
}

impl Part {
    /// The partition's row count when the source's metadata knows it and no step drops rows.
    pub(crate) fn known_rows(&self) -> Option<usize> {
        self.ops
            .iter()
            .all(Op::keeps_rows)
            .then(|| self.source.known_rows())
            .flatten()
    }

    /// The partition as a task's arguments, when its source is data.
    pub(crate) fn data(&self) -> Option<TaskPart> {
        let data = PartData {
            source: self.source.data()?,
            ops: (*self.ops).clone(),
        };
        let input = match &self.source {
            Source::Rows(d) => vec![*d],
            _ => Vec::new(),
        };
        Some(TaskPart { data, input })
    }

    /// Loads the partition and runs its plan.
    pub(crate) fn run(&self, input: Option<DataFrame>) -> Result<DataFrame, TaskError> {
        let df = self.source.load(input)?;
        run_plan(df, &self.ops, self.source.describe())
    }

    /// Loads the partition and runs its plan followed by `then` (a partial aggregation) as
    /// one Polars query, so Polars optimizes them together: a column of the plan that `then`
    /// does not read is never computed, and no intermediate frame of every row is made.
    pub(crate) fn run_then(
        &self,
        input: Option<DataFrame>,
        then: &LazyPlan,
    ) -> Result<DataFrame, TaskError> {
        let df = self.source.load(input)?;
        run_plan_then(df, &self.ops, then, self.source.describe())
    }
}

/// The last steps of a Polars query added after a partition's plan, and the query's run
/// (see [`Part::run_then`]): a partial aggregation, which picks its engine
/// ([`collect_grouped`] for a group-by).
pub(crate) type LazyPlan = Arc<dyn Fn(LazyFrame) -> PolarsResult<DataFrame> + Send + Sync>;

/// Runs a query that ends in a group-by on Polars' streaming engine. Its hash aggregation
/// (partitioned tables with a small table of hot groups in front) beats the in-memory
/// engine's (a list of row indices per group, then a gather per aggregation) as groups grow:
/// on this 2-core machine, `lovage bench frames --only groupby`, 1e7 rows, 1e6 groups,
/// 0.415 s against 0.240 s; 10 groups unchanged (0.044 s against 0.042 s); docs/benchmarks.md.
pub(crate) fn collect_grouped(lf: LazyFrame) -> PolarsResult<DataFrame> {
    // One query (no `SinkMultiple`) gives one frame: Polars' own `collect` relies on it.
    Ok(lf.collect_with_engine(Engine::Streaming)?.unwrap_single())
}

/// Runs the steps `ops` and then `then` on `df` as one Polars query (`what` names the
/// partition in an error).
pub(crate) fn run_plan_then(
    df: DataFrame,
    ops: &[Op],
    then: &LazyPlan,
    what: impl std::fmt::Display,
) -> Result<DataFrame, TaskError> {
    // A select of aggregates (one row per partition) is run on its own first: Polars'
    // optimizer counts the rows of such a plan followed by `len` as the source's rows.
    if !ops.iter().all(Op::fuses) {
        return then(run_plan(df, ops, &what)?.lazy()).map_err(|e| polars_error(what, e));
    }
    let lf = ops.iter().fold(df.lazy(), |lf, op| op.apply(lf));
    then(lf).map_err(|e| polars_error(what, e))
}

/// Runs the steps `ops` on `df` in Polars (`what` names the partition in an error).
pub(crate) fn run_plan(
    df: DataFrame,
    ops: &[Op],
    what: impl std::fmt::Display,
) -> Result<DataFrame, TaskError> {
    if ops.is_empty() {
        return Ok(df);
    }
    let lf = ops.iter().fold(df.lazy(), |lf, op| op.apply(lf));
    lf.collect().map_err(|e| polars_error(what, e))
}

/// A lazy, partitioned data frame in a [`Graph`]: Dask's `DataFrame`. Cheap to clone.
#[derive(Clone)]
pub struct Frame<'g> {
    pub(crate) g: &'g Graph,
    pub(crate) parts: Vec<Part>,
    pub(crate) schema: SchemaRef,
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame({} partitions, {:?})",
            self.parts.len(),
            self.schema
        )
    }
}

/// A frame's `group_by(keys)`, waiting for its aggregations (see [`GroupBy::agg`]).
#[derive(Clone, Debug)]
pub struct GroupBy<'g> {
    pub(crate) frame: Frame<'g>,
    pub(crate) keys: Vec<PlSmallStr>,
    pub(crate) split_every: usize,
    pub(crate) split_out: Option<usize>,
}

impl<'g> GroupBy<'g> {
    /// How many partials a combining node merges (default 8, at least 2).
    pub fn split_every(mut self, k: usize) -> Self {
        self.split_every = k.max(2);
        self
    }

    /// Hashes the keys into `n` output partitions combined independently, instead of one
    /// tree: for many groups, where one combining node would hold them all. When not set,
    /// chosen from the first partition's partial (see [`GroupBy::agg`]); `split_out(1)`
    /// always merges in a tree.
    pub fn split_out(mut self, n: usize) -> Self {
        self.split_out = Some(n.max(1));
        self
    }
}

fn polars_input(what: &str, e: PolarsError) -> Error {
    Error::Input(format!("{what}: {e}"))
}

impl<'g> Frame<'g> {
    pub(crate) fn new(g: &'g Graph, sources: Vec<Source>, schema: SchemaRef) -> Self {
        let ops = Arc::new(Vec::new());
        let parts = sources
            .into_iter()
            .map(|source| Part {
                source,
                ops: ops.clone(),
            })
            .collect();
        Frame { g, parts, schema }
    }

    /// A frame of `df` cut into `npartitions` partitions of nearly equal height (at least
    /// one; some are empty when there are fewer rows than partitions).
    pub fn from_polars(g: &'g Graph, df: DataFrame, npartitions: usize) -> Result<Self, Error> {
        let n = npartitions.max(1);
        let h = df.height();
        let mut offset = 0;
        let parts = (0..n)
            .map(|i| {
                let len = h / n + usize::from(i < h % n);
                let p = df.slice(offset as i64, len);
                offset += len;
                p
            })
            .collect();
        Self::from_partitions(g, parts)
    }

    /// A frame of `npartitions` partitions made by `make(i)` when the partition is computed
    /// (Dask's `from_map`): data that never exists in one place. Each partition must have
    /// `schema` (checked when it is made).
    pub fn from_fn(
        g: &'g Graph,
        schema: Schema,
        npartitions: usize,
        make: impl Fn(usize) -> PolarsResult<DataFrame> + Send + Sync + 'static,
    ) -> Self {
        let schema = Arc::new(schema);
        let gen = Arc::new(Generator {
            make: Box::new(make),
            schema: schema.clone(),
        });
        let sources = (0..npartitions)
            .map(|i| Source::Generated(gen.clone(), i))
            .collect();
        Self::new(g, sources, schema)
    }

    /// A frame whose partitions are exactly `partitions` (empty ones allowed). They must
    /// all have the schema of the first.
    pub fn from_partitions(g: &'g Graph, partitions: Vec<DataFrame>) -> Result<Self, Error> {
        let schema = partitions
            .first()
            .map(|p| p.schema().clone())
            .ok_or_else(|| Error::Input("from_partitions: no partition given".into()))?;
        for (i, p) in partitions.iter().enumerate() {
            if **p.schema() != *schema {
                return Err(Error::Input(format!(
                    "from_partitions: partition {i} has schema {:?}, partition 0 has {:?}",
                    p.schema(),
                    schema
                )));
            }
        }
        let sources = partitions.into_iter().map(Source::Memory).collect();
        Ok(Self::new(g, sources, schema))
    }

    /// The number of partitions.
    pub fn npartitions(&self) -> usize {
        self.parts.len()
    }

    /// The columns and their types after the steps so far (known without reading data).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The graph the frame adds its nodes to.
    pub fn graph(&self) -> &'g Graph {
        self.g
    }

    /// This frame with one more step; the step is checked against the schema now, so a
    /// missing column is an error here rather than in every partition later.
    fn step(&self, op: Op) -> Result<Self, Error> {
        let probe = op.apply(DataFrame::empty_with_schema(&self.schema).lazy());
        let schema = probe
            .clone()
            .collect_schema()
            .map_err(|e| polars_input("invalid step", e))?;
        let parts = self
            .parts
            .iter()
            .map(|p| {
                let mut ops = (*p.ops).clone();
                ops.push(op.clone());
                Part {
                    source: p.source.clone(),
                    ops: Arc::new(ops),
                }
            })
            .collect();
        Ok(Frame {
            g: self.g,
            parts,
            schema,
        })
    }

    /// Keeps the columns `exprs` compute (Polars' `select`); row-wise expressions only.
    pub fn select<E: AsRef<[Expr]>>(&self, exprs: E) -> Result<Self, Error> {
        self.step(Op::Select(exprs.as_ref().to_vec()))
    }

    /// Adds or replaces the columns `exprs` compute (Polars' `with_columns`; Dask's
    /// `df["total"] = df["quantity"] * df["price"]`).
    pub fn with_columns<E: AsRef<[Expr]>>(&self, exprs: E) -> Result<Self, Error> {
        self.step(Op::WithColumns(exprs.as_ref().to_vec()))
    }

    /// Keeps the rows where `predicate` is true. On a Parquet frame with no step before,
    /// row groups whose footer min/max statistics rule the predicate out are dropped
    /// without being read.
    pub fn filter(&self, predicate: Expr) -> Result<Self, Error> {
        let mut out = self.step(Op::Filter(predicate.clone()))?;
        out.parts.retain(|p| match &p.source {
            Source::Parquet(rg) if p.ops.len() == 1 => rg.may_match(&predicate),
            _ => true,
        });
        Ok(out)
    }

    /// Every partition as data, when every source is data: the frame can then run as
    /// registered tasks (`lovage.frame.*`) on any scheduler.
    pub(crate) fn data_parts(&self) -> Option<Vec<TaskPart>> {
        self.parts.iter().map(Part::data).collect()
    }

    /// Whether some partition's rows are given in memory (`from_polars`, `from_partitions`).
    pub(crate) fn in_memory(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p.source, Source::Memory(_)))
    }

    /// One node per partition running its plan and then `f` on the rows (the node's name
    /// is `name`). A reduction's partial step runs in the same node as the plan.
    pub(crate) fn map_parts<R, F>(&self, name: &'static str, f: F) -> Vec<Delayed<R>>
    where
        R: Send + Sync + 'static,
        F: Fn(DataFrame) -> Result<R, TaskError> + Send + Sync + Clone + 'static,
    {
        self.map_parts_with(name, move |part, input| f(part.run(input)?))
    }

    /// One node per partition running `f` on the partition (its source and plan, unread)
    /// and its input rows when its source is another node's result: for a step that runs
    /// the plan itself, e.g. fused with what follows (`Part::run_then`).
    pub(crate) fn map_parts_with<R, F>(&self, name: &'static str, f: F) -> Vec<Delayed<R>>
    where
        R: Send + Sync + 'static,
        F: Fn(&Part, Option<DataFrame>) -> Result<R, TaskError> + Send + Sync + Clone + 'static,
    {
        self.parts
            .iter()
            .map(|part| self.part_node(part, name, f.clone()))
            .collect()
    }

    /// One node running `f` on `part` (see [`Frame::map_parts_with`]).
    pub(crate) fn part_node<R, F>(&self, part: &Part, name: &'static str, f: F) -> Delayed<R>
    where
        R: Send + Sync + 'static,
        F: Fn(&Part, Option<DataFrame>) -> Result<R, TaskError> + Send + Sync + 'static,
    {
        let inputs: Vec<_> = self.input_of(part).into_iter().collect();
        let part = part.clone();
        self.g.try_local_all(
            name,
            move |v: Vec<DataFrame>| f(&part, v.into_iter().next()),
            inputs,
        )
    }

    /// The node whose result holds `part`'s rows, when its source is another node's.
    pub(crate) fn input_of(&self, part: &Part) -> Option<Delayed<DataFrame>> {
        match &part.source {
            Source::Node(d) => Some(*d),
            // The task's rows, decoded for a closure (local schedulers only).
            Source::Rows(d) => Some(self.g.try_local_all(
                "rows",
                |v: Vec<Ipc>| {
                    Ok(v.into_iter()
                        .next()
                        .map(Ipc::into_inner)
                        .unwrap_or_default())
                },
                vec![*d],
            )),
            _ => None,
        }
    }

    /// One node per partition whose result is the partition's rows.
    pub fn partitions(&self) -> Vec<Delayed<DataFrame>> {
        self.map_parts("partition", Ok)
    }

    /// A frame whose partitions are computed once (by the nodes of [`partitions`]) and
    /// shared by every later step in this graph, instead of each reduction reading and
    /// planning its sources again.
    ///
    /// [`partitions`]: Frame::partitions
    pub fn persist(&self) -> Self {
        let sources = self.partitions().into_iter().map(Source::Node).collect();
        Self::new(self.g, sources, self.schema.clone())
    }

    /// All partitions concatenated, in order, into one Polars frame. For a frame of data
    /// (see [`compute`](crate::compute)) with the `lovage.frame.part` and `concat` tasks, so
    /// on every scheduler.
    pub fn collect(&self) -> Delayed<DataFrame> {
        if let Some(parts) = self.data_parts() {
            return crate::row_tasks::gather(self.g, parts, &self.schema, None);
        }
        let schema = self.schema.clone();
        self.g.try_local_all(
            "collect",
            move |parts: Vec<DataFrame>| concat_frames(parts, &schema),
            self.partitions(),
        )
    }

    /// The first `n` rows (in partition order): the first `n` of every partition, then the
    /// first `n` of those. For a frame of data with registered tasks, so on every scheduler.
    pub fn head(&self, n: usize) -> Delayed<DataFrame> {
        if let Some(parts) = self.data_parts() {
            return crate::row_tasks::gather(self.g, parts, &self.schema, Some(n));
        }
        let schema = self.schema.clone();
        let parts = self.map_parts("head", move |df| Ok(df.head(Some(n))));
        self.g.try_local_all(
            "head",
            move |parts: Vec<DataFrame>| Ok(concat_frames(parts, &schema)?.head(Some(n))),
            parts,
        )
    }

    /// The number of rows. From the metadata when every source knows its row count
    /// (in-memory partitions, Parquet footers) and no step drops rows; otherwise each
    /// partition is computed and counted (with the `lovage.frame.*` tasks when every
    /// partition is data, so on every scheduler).
    pub fn len(&self) -> Delayed<usize> {
        if let Some(n) = self.known_len() {
            return self.g.value(n);
        }
        // A frame of data counts with registered tasks, so on any scheduler.
        let counted = self
            .data_parts()
            .and_then(|parts| crate::tasks::count_rows(self.g, parts, &self.schema).ok());
        match counted {
            Some(d) => d,
            None => {
                let counts = self.map_parts("len", |df| Ok(df.height()));
                self.g
                    .try_local_all("len", |v: Vec<usize>| Ok(v.iter().sum()), counts)
            }
        }
    }

    /// The number of rows when the metadata knows it without reading data (see
    /// [`len`](Frame::len)).
    pub(crate) fn known_len(&self) -> Option<usize> {
        self.parts.iter().map(Part::known_rows).sum()
    }

    /// Whether the frame has no partition at all (a frame of empty partitions is not
    /// empty in this sense: use [`len`](Frame::len)).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Groups rows by the `keys` columns, for [`GroupBy::agg`].
    pub fn group_by<I, S>(&self, keys: I) -> GroupBy<'g>
    where
        I: IntoIterator<Item = S>,
        S: Into<PlSmallStr>,
    {
        GroupBy {
            frame: self.clone(),
            keys: keys.into_iter().map(Into::into).collect(),
            split_every: crate::reduce::SPLIT_EVERY,
            split_out: None,
        }
    }
}

/// Concatenates frames vertically into one chunk per column (an empty list gives an empty
/// frame of `schema`).
pub(crate) fn concat_frames(
    parts: Vec<DataFrame>,
    schema: &SchemaRef,
) -> Result<DataFrame, TaskError> {
    let mut acc = stack_frames(parts, schema)?;
    acc.rechunk_mut();
    Ok(acc)
}

/// Concatenates frames vertically, each keeping its own chunks: for the input of a step that
/// reads it once (an aggregation), where one chunk would cost a copy of every row.
pub(crate) fn stack_frames(
    parts: Vec<DataFrame>,
    schema: &SchemaRef,
) -> Result<DataFrame, TaskError> {
    let mut it = parts.into_iter();
    let Some(mut acc) = it.next() else {
        return Ok(DataFrame::empty_with_schema(schema));
    };
    for p in it {
        acc.vstack_mut(&p)
            .map_err(|e| polars_error("concatenating partitions", e))?;
    }
    Ok(acc)
}
