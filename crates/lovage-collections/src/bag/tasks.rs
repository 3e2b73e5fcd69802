//! A bag as data (`lovage.bag.*`), so it runs on a process pool and on a broker's workers as on
//! the local schedulers, with the same results: every scheduler runs these same functions (the
//! local ones call them directly, without encoding anything).
//!
//! A bag is data when its sources are (items given as data, byte ranges of files that a worker
//! on the same host reads itself) and each of its element-wise steps is a registered task
//! (`map_task`, `filter_task`, `flat_map_task`). A reduction is then one `partial` task per
//! partition that reads the source and runs every item through the steps' task bodies in
//! process (through the registry: one call per item and step, no message), folding into a
//! small accumulator; a tree of `combine` tasks `split_every` wide; and one `finish` task that
//! answers in MessagePack, decoded as the caller's type (so NaN and infinities travel too).
//! What they compute (the reduction, its partial, its accumulator) is `acc.rs`.
//!
//! Items cross as JSON values (`serde_json::Value`) between the steps: a float item that is
//! NaN or infinite is not representable (it becomes `null`).

use std::collections::HashMap;
use std::sync::Arc;

use lovage_core::{Codec, Registry, TaskEntry, TaskError};
use lovage_graph::{Arg, Delayed, Graph, TaskGraph};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

pub(crate) use super::acc::Agg;
use super::acc::{fold_items, Acc, Partial};
use super::text::{json_lines, text_lines, OnError, TextRange};
use super::values::Num;
use crate::combine::SPLIT_EVERY;
use crate::{data_error, internal};

/// An item that can travel between processes as data: what a bag that runs on a process pool or
/// a broker holds (every `Serialize + DeserializeOwned` [`Item`](super::Item)).
pub trait Data: super::Item + Serialize + DeserializeOwned {}
impl<T: super::Item + Serialize + DeserializeOwned> Data for T {}

/// Where a partition's items come from, as data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Source {
    /// The items themselves (from `from_iter`, `from_partitions`, `from_data`).
    Items(Vec<Value>),
    /// The lines of a byte range of a file (`read_text`).
    Lines(TextRange),
    /// One JSON value per non-blank line of a byte range (`read_jsonl`).
    Json {
        /// The range.
        range: TextRange,
        /// What a malformed line does.
        on_error: OnError,
    },
}

/// What an element-wise step does with its task's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StepKind {
    /// The answer replaces the item.
    Map,
    /// The item stays when the answer is `true`.
    Filter,
    /// The answer's items (a list) replace the item.
    FlatMap,
    /// The task is called once per partition with the partition's items (a list) and its
    /// answer (a list) replaces them (`map_partitions_task`).
    Partitions,
}

/// One element-wise step: a registered task called with the item as its only argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) kind: StepKind,
    pub(crate) task: String,
}

/// What `finish` answers, encoded as the caller's type would be (a MessagePack map keyed by
/// the items themselves for the frequencies).
pub(crate) enum Wire {
    Value(Value),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A map keyed by values (counts, groups, folds by key).
    Pairs(Vec<(Value, Value)>),
    Words(HashMap<String, u64>),
}

/// Only so the task has a typed signature (`finish::s`): a caller decodes its own type.
impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Wire::Value)
    }
}

impl Serialize for Wire {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Wire::Value(v) => v.serialize(s),
            Wire::U64(n) => s.serialize_u64(*n),
            Wire::I64(n) => s.serialize_i64(*n),
            Wire::F64(x) => s.serialize_f64(*x),
            Wire::Pairs(pairs) => {
                let mut m = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Wire::Words(words) => words.serialize(s),
        }
    }
}

/// A registered task found in this process's registry.
pub(crate) struct Task {
    name: String,
    entry: &'static TaskEntry,
}

impl Task {
    /// Looks `name` up (an unknown one fails, listing the registered names).
    pub(crate) fn find(name: &str) -> Result<Task, TaskError> {
        Ok(Task {
            name: name.to_owned(),
            entry: Registry::global().get(name)?,
        })
    }

    /// Calls the task here with `args` (as `task::s(args..)` would encode them); its own error
    /// comes back as it is.
    pub(crate) fn call(&self, args: &[&Value]) -> Result<Value, TaskError> {
        let args = serde_json::to_vec(args)
            .map_err(|e| internal(&format!("an item cannot be written as JSON: {e}")))?;
        let out = self.entry.call_blocking(&args, Codec::Json)?;
        serde_json::from_slice(&out).map_err(|e| {
            data_error(format!(
                "the task {} answered what is not JSON: {e}",
                self.name
            ))
        })
    }
}

/// A step with its registered body found.
struct Resolved<'a> {
    step: &'a Step,
    task: Task,
}

/// Finds every step's task in this process's registry.
fn resolve(steps: &[Step]) -> Result<Vec<Resolved<'_>>, TaskError> {
    steps
        .iter()
        .map(|step| {
            Ok(Resolved {
                step,
                task: Task::find(&step.task)?,
            })
        })
        .collect()
}

/// Runs `item` through `steps`, pushing what comes out into `sink`.
fn push(
    steps: &[Resolved<'_>],
    item: Value,
    sink: &mut dyn FnMut(Value) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    let Some((first, rest)) = steps.split_first() else {
        return sink(item);
    };
    if first.step.kind == StepKind::Partitions {
        return Err(internal("a partition step met item by item"));
    }
    let out = first.task.call(&[&item])?;
    match (first.step.kind, out) {
        (StepKind::Map, y) => push(rest, y, sink),
        (StepKind::Filter, Value::Bool(keep)) => {
            if keep {
                push(rest, item, sink)
            } else {
                Ok(())
            }
        }
        (StepKind::FlatMap, Value::Array(ys)) => {
            ys.into_iter().try_for_each(|y| push(rest, y, &mut *sink))
        }
        (kind, other) => Err(data_error(format!(
            "{} {}: the task answered {other}, not {}",
            match kind {
                StepKind::Filter => "filter_task",
                _ => "flat_map_task",
            },
            first.step.task,
            if kind == StepKind::Filter {
                "a bool"
            } else {
                "a list"
            }
        ))),
    }
}

/// Where a partition's items go.
type Sink<'a> = &'a mut dyn FnMut(Value) -> Result<(), TaskError>;

/// Runs the items `feed` pushes into the sink it is given through `steps`, into `sink`. The
/// steps up to a partition step run item by item into a list; the partition step's answer
/// feeds the steps after it.
fn drive(
    steps: &[Resolved<'_>],
    feed: &mut dyn FnMut(Sink<'_>) -> Result<(), TaskError>,
    sink: Sink<'_>,
) -> Result<(), TaskError> {
    let Some(p) = steps
        .iter()
        .position(|r| r.step.kind == StepKind::Partitions)
    else {
        return feed(&mut |x| push(steps, x, &mut *sink));
    };
    let mut items = Vec::new();
    feed(&mut |x| {
        push(&steps[..p], x, &mut |y| {
            items.push(y);
            Ok(())
        })
    })?;
    let mut answer = Some(call_partition(&steps[p].task, items)?);
    drive(
        &steps[p + 1..],
        &mut |s| {
            answer
                .take()
                .unwrap_or_default()
                .into_iter()
                .try_for_each(&mut *s)
        },
        sink,
    )
}

/// Calls a partition step's task with the partition's items; it must answer a list.
fn call_partition(task: &Task, items: Vec<Value>) -> Result<Vec<Value>, TaskError> {
    match task.call(&[&Value::Array(items)])? {
        Value::Array(ys) => Ok(ys),
        other => Err(data_error(format!(
            "map_partitions_task {}: the task answered {other}, not a list",
            task.name
        ))),
    }
}

/// A partition's items through the registered task `task`: the local schedulers' form of a
/// partition step, the same call as in a worker.
pub(crate) fn run_partition_step(task: &str, items: Vec<Value>) -> Result<Vec<Value>, TaskError> {
    call_partition(&Task::find(task)?, items)
}

/// Runs one item through the steps into `sink`: the local schedulers' form of a task step,
/// the same calls as in a worker.
pub(crate) fn run_steps(
    steps: &[Step],
    item: Value,
    sink: &mut dyn FnMut(Value) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    push(&resolve(steps)?, item, sink)
}

/// Every item of a source, in order.
fn for_each_item(
    source: &Source,
    f: &mut dyn FnMut(Value) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    match source {
        Source::Items(items) => items.iter().try_for_each(|x| f(x.clone())),
        Source::Lines(r) => text_lines(r, &mut |s| f(Value::String(s.to_owned()))),
        Source::Json { range, on_error } => json_lines(range, *on_error, f),
    }
}

/// One partition's partial: its source's items through the steps, folded.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.bag.partial")]
pub(crate) fn partial(source: Source, steps: Vec<Step>, agg: Agg) -> Result<Partial, TaskError> {
    // The word count of plain lines counts over the raw bytes, as the local fast path does.
    if let (Agg::Words, Source::Lines(r), true) = (&agg, &source, steps.is_empty()) {
        let bytes = r.read()?;
        return super::reduce::count_words(&bytes.bytes)
            .map(Partial::Counts)
            .map_err(|at| {
                data_error(format!(
                    "{}:{}: not UTF-8 text",
                    r.path.display(),
                    r.line_number(&bytes, at)
                ))
            });
    }
    let steps = resolve(&steps)?;
    fold_items(agg, |sink| {
        drive(&steps, &mut |s| for_each_item(&source, s), sink)
    })
}

/// Partials merged into one, in order.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.bag.combine")]
pub(crate) fn combine(agg: Agg, parts: Vec<Partial>) -> Result<Partial, TaskError> {
    let mut acc = Acc::new(agg)?;
    for p in parts {
        acc.merge(p)?;
    }
    acc.into_partial()
}

/// The reduction's answer from the merged partial. MessagePack, so NaN, infinities and maps
/// keyed by non-strings travel as themselves.
#[lovage_macros::task(
    crate = lovage_core,
    graph = lovage_graph,
    name = "lovage.bag.finish",
    codec = "msgpack"
)]
pub(crate) fn finish(agg: Agg, acc: Partial) -> Result<Wire, TaskError> {
    Ok(match (agg, acc) {
        (_, Partial::Items(v)) | (_, Partial::Distinct(v)) => Wire::Value(Value::Array(v)),
        (_, Partial::Count(n)) => Wire::U64(n),
        (_, Partial::Fold(mut v)) => Wire::Value(v.pop().unwrap_or(Value::Null)),
        (_, Partial::Top(v)) => Wire::Value(Value::Array(v.into_iter().map(|(_, x)| x).collect())),
        (_, Partial::Groups(v)) => Wire::Pairs(
            v.into_iter()
                .map(|(k, items)| (k, Value::Array(items)))
                .collect(),
        ),
        (_, Partial::ByKey(v)) => Wire::Pairs(v),
        (_, Partial::Sum(Num::Int(i))) => Wire::I64(i),
        (_, Partial::Sum(Num::Float(bits))) => Wire::F64(f64::from_bits(bits)),
        (_, Partial::Best(b)) => Wire::Value(b.unwrap_or(Value::Null)),
        (_, Partial::Mean(n, sum)) => Wire::F64(f64::from_bits(sum) / n as f64),
        (Agg::Words, Partial::Counts(m)) => Wire::Words(m),
        (_, Partial::Counts(m)) => Wire::Pairs(
            m.into_iter()
                .map(|(k, n)| {
                    serde_json::from_str(&k)
                        .map(|v| (v, Value::from(n)))
                        .map_err(|e| internal(&format!("a counted item's key: {e}")))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// `finish` as the local schedulers call it: through the same encoding a worker's answer
/// takes, so the caller's type is decoded alike everywhere.
fn finish_as<R: DeserializeOwned>((agg, acc): (Agg, Partial)) -> Result<R, TaskError> {
    let bytes = Codec::Msgpack.encode(&finish(agg, acc)?, "a bag's result")?;
    Ok(Codec::Msgpack.decode(&bytes, "a bag's result")?)
}

/// Adds the `finish` node of a reduction, typed as the caller's result.
pub(crate) fn finish_node<R>(g: &Graph, agg: Agg, acc: Delayed<Partial>) -> Delayed<R>
where
    R: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    TaskGraph::task(
        g,
        finish::NAME,
        false,
        Codec::Msgpack,
        (Arg::Value(agg), Arg::Node(acc)),
        finish_as::<R>,
    )
}

/// Builds a `finish` node for one result type.
type Builder<R> = fn(&Graph, Agg, Delayed<Partial>) -> Delayed<R>;

/// The `finish` builders for results of the item type, made where the item type is known to be
/// [`Data`] (reductions such as `sum` have no such bound of their own).
pub(crate) struct Typed<T> {
    pub(crate) one: Builder<T>,
    pub(crate) opt: Builder<Option<T>>,
    pub(crate) all: Builder<Vec<T>>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Typed {
            one: self.one,
            opt: self.opt,
            all: self.all,
        }
    }
}

/// A bag as data: its partitions' sources and its steps.
pub(crate) struct Plan<T> {
    pub(crate) sources: Arc<Vec<Source>>,
    pub(crate) steps: Arc<Vec<Step>>,
    pub(crate) typed: Typed<T>,
}

impl<T> Clone for Plan<T> {
    fn clone(&self) -> Self {
        Plan {
            sources: self.sources.clone(),
            steps: self.steps.clone(),
            typed: self.typed.clone(),
        }
    }
}

impl<T: Data> Plan<T> {
    /// Sources with no step yet.
    pub(crate) fn new(sources: Vec<Source>) -> Plan<T> {
        Plan {
            sources: Arc::new(sources),
            steps: Arc::new(Vec::new()),
            typed: Typed {
                one: finish_node::<T>,
                opt: finish_node::<Option<T>>,
                all: finish_node::<Vec<T>>,
            },
        }
    }

    /// The same sources and steps and one more step, whose items are `U`.
    pub(crate) fn then<U: Data>(&self, kind: StepKind, task: &str) -> Plan<U> {
        let mut steps = (*self.steps).clone();
        steps.push(Step {
            kind,
            task: task.to_owned(),
        });
        Plan {
            sources: self.sources.clone(),
            steps: Arc::new(steps),
            typed: Plan::<U>::new(Vec::new()).typed,
        }
    }
}

impl<T> Plan<T> {
    /// One `partial` task per partition, then `combine` tasks 8 wide until one partial is left.
    pub(crate) fn reduce(&self, g: &Graph, agg: Agg) -> Delayed<Partial> {
        let partials = self.partials(g, |_| agg.clone());
        combine_tree(g, partials, &agg, SPLIT_EVERY)
    }

    /// One `partial` task per partition, partition `i` computing `agg(i)`.
    pub(crate) fn partials(&self, g: &Graph, agg: impl Fn(usize) -> Agg) -> Vec<Delayed<Partial>> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| partial::delayed(g, s.clone(), (*self.steps).clone(), agg(i)))
            .collect()
    }

    /// The same bag cut to its first `n` partitions.
    pub(crate) fn first(&self, n: usize) -> Plan<T> {
        Plan {
            sources: Arc::new(self.sources.iter().take(n).cloned().collect()),
            steps: self.steps.clone(),
            typed: self.typed.clone(),
        }
    }
}

/// `combine` tasks merging `split_every` partials at a time until one is left (one with no
/// partial at all: the reduction's empty value).
pub(crate) fn combine_tree(
    g: &Graph,
    mut level: Vec<Delayed<Partial>>,
    agg: &Agg,
    split_every: usize,
) -> Delayed<Partial> {
    loop {
        match level.as_slice() {
            [one] => return *one,
            [] => return combine::delayed(g, agg.clone(), Vec::<Partial>::new()),
            _ => {}
        }
        level = level
            .chunks(split_every.max(2))
            .map(|group| combine::delayed(g, agg.clone(), group.to_vec()))
            .collect();
    }
}

/// The names of the built-in bag tasks.
pub(crate) const NAMES: [&str; 3] = [partial::NAME, combine::NAME, finish::NAME];

/// Keeps the bag tasks' bodies (and their registrations) linked; see `array::tasks::register`.
pub(crate) fn keep_linked() {
    std::hint::black_box([
        partial::__invoke as *const () as usize,
        combine::__invoke as *const () as usize,
        finish::__invoke as *const () as usize,
    ]);
}
