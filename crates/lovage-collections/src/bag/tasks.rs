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
//!
//! Items cross as JSON values (`serde_json::Value`) between the steps: a float item that is
//! NaN or infinite is not representable (it becomes `null`).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lovage_core::{Codec, Registry, TaskEntry, TaskError};
use lovage_graph::{Arg, Delayed, Graph, TaskGraph};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::text::{json_lines, text_lines, OnError, TextRange};
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
}

/// One element-wise step: a registered task called with the item as its only argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) kind: StepKind,
    pub(crate) task: String,
}

/// Which reduction a `partial`/`combine`/`finish` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Agg {
    /// Every item, in order (`compute`).
    Items,
    Count,
    Sum,
    Min,
    Max,
    Mean,
    Frequencies,
    Distinct,
    /// Words of string items (`word_frequencies`).
    Words,
}

/// A sum so far: exact while every item is an integer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Num {
    Int(i64),
    /// An `f64`'s bits (JSON carries neither NaN nor infinities).
    Float(u64),
}

/// A reduction's partial result: small, and JSON-safe (floats as bits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Partial {
    Items(Vec<Value>),
    Count(u64),
    Sum(Num),
    /// The smallest or largest item so far.
    Best(Option<Value>),
    /// Count and the sum's bits.
    Mean(u64, u64),
    /// Count per item, keyed by the item's JSON text (or per word for `Words`).
    Counts(HashMap<String, u64>),
    /// Distinct items in order of first appearance.
    Distinct(Vec<Value>),
}

/// What `finish` answers, encoded as the caller's type would be (a MessagePack map keyed by
/// the items themselves for the frequencies).
pub(crate) enum Wire {
    Value(Value),
    U64(u64),
    I64(i64),
    F64(f64),
    Pairs(Vec<(Value, u64)>),
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

/// The state of a reduction inside one task.
struct Acc {
    agg: Agg,
    part: Partial,
    /// The JSON text of the distinct items kept so far.
    seen: HashSet<String>,
}

impl Acc {
    fn new(agg: Agg) -> Acc {
        let part = match agg {
            Agg::Items => Partial::Items(Vec::new()),
            Agg::Count => Partial::Count(0),
            Agg::Sum => Partial::Sum(Num::Int(0)),
            Agg::Min | Agg::Max => Partial::Best(None),
            Agg::Mean => Partial::Mean(0, 0f64.to_bits()),
            Agg::Frequencies | Agg::Words => Partial::Counts(HashMap::new()),
            Agg::Distinct => Partial::Distinct(Vec::new()),
        };
        Acc {
            agg,
            part,
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, x: Value) -> Result<(), TaskError> {
        match (&mut self.part, self.agg) {
            (Partial::Items(v), _) => v.push(x),
            (Partial::Count(n), _) => *n += 1,
            (Partial::Sum(s), _) => *s = add_num(*s, number(&x, "sum")?)?,
            (Partial::Best(b), agg) => {
                let better = match b {
                    None => true,
                    Some(cur) => {
                        let o = compare(&x, cur)?;
                        if agg == Agg::Min {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    }
                };
                if better {
                    *b = Some(x);
                }
            }
            (Partial::Mean(n, sum), _) => {
                let v = match number(&x, "mean")? {
                    Num::Int(i) => i as f64,
                    Num::Float(bits) => f64::from_bits(bits),
                };
                *n += 1;
                *sum = (f64::from_bits(*sum) + v).to_bits();
            }
            (Partial::Counts(m), Agg::Words) => match &x {
                Value::String(line) => {
                    for w in line.split_ascii_whitespace() {
                        match m.get_mut(w) {
                            Some(n) => *n += 1,
                            None => {
                                m.insert(w.to_owned(), 1);
                            }
                        }
                    }
                }
                other => {
                    return Err(data_error(format!(
                        "word_frequencies: an item is not a string: {other}"
                    )))
                }
            },
            (Partial::Counts(m), _) => *m.entry(x.to_string()).or_insert(0) += 1,
            (Partial::Distinct(v), _) => {
                if self.seen.insert(x.to_string()) {
                    v.push(x);
                }
            }
        }
        Ok(())
    }

    fn merge(&mut self, other: Partial) -> Result<(), TaskError> {
        match (&mut self.part, other) {
            (Partial::Items(v), Partial::Items(o)) => v.extend(o),
            (Partial::Count(n), Partial::Count(o)) => *n += o,
            (Partial::Sum(s), Partial::Sum(o)) => *s = add_num(*s, o)?,
            (Partial::Best(_), Partial::Best(o)) => {
                if let Some(x) = o {
                    self.add(x)?;
                }
            }
            (Partial::Mean(n, sum), Partial::Mean(on, osum)) => {
                *n += on;
                *sum = (f64::from_bits(*sum) + f64::from_bits(osum)).to_bits();
            }
            (Partial::Counts(m), Partial::Counts(o)) => {
                if m.is_empty() {
                    *m = o;
                } else {
                    for (k, v) in o {
                        *m.entry(k).or_insert(0) += v;
                    }
                }
            }
            (Partial::Distinct(_), Partial::Distinct(o)) => {
                for x in o {
                    self.add(x)?;
                }
            }
            _ => return Err(internal("a bag's partials of two different reductions")),
        }
        Ok(())
    }
}

/// An item as a number, for `sum` and `mean`.
fn number(x: &Value, what: &str) -> Result<Num, TaskError> {
    match x {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Num::Int(i)),
            (None, Some(f)) if !n.is_u64() => Ok(Num::Float(f.to_bits())),
            _ => Err(data_error(format!(
                "{what}: the item {n} is above i64::MAX"
            ))),
        },
        other => Err(data_error(format!(
            "{what}: an item is not a number: {other}"
        ))),
    }
}

/// `a + b`, in integers while both are (an overflow fails, as it would panic in Rust).
fn add_num(a: Num, b: Num) -> Result<Num, TaskError> {
    let f = |n: Num| match n {
        Num::Int(i) => i as f64,
        Num::Float(bits) => f64::from_bits(bits),
    };
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x
            .checked_add(y)
            .map(Num::Int)
            .ok_or_else(|| data_error("sum: the integers overflow i64")),
        _ => Ok(Num::Float((f(a) + f(b)).to_bits())),
    }
}

/// The order of two items as Rust orders the types they come from: numbers by value, strings
/// by bytes, lists (tuples, `Vec`s) element by element, `false < true`.
fn compare(a: &Value, b: &Value) -> Result<Ordering, TaskError> {
    let fail = || {
        data_error(format!(
            "min/max: the items {a} and {b} do not compare (numbers, strings, booleans and lists do)"
        ))
    };
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i.cmp(&j),
                _ => {
                    let (Some(p), Some(q)) = (x.as_f64(), y.as_f64()) else {
                        return Err(fail());
                    };
                    p.partial_cmp(&q).ok_or_else(fail)?
                }
            },
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                match compare(p, q)? {
                    Ordering::Equal => {}
                    o => return Ok(o),
                }
            }
            x.len().cmp(&y.len())
        }
        _ => return Err(fail()),
    })
}

/// A step with its registered body found.
struct Resolved<'a> {
    step: &'a Step,
    entry: &'static TaskEntry,
}

/// Finds every step's task in this process's registry (an unknown one fails, listing those
/// that are registered).
fn resolve(steps: &[Step]) -> Result<Vec<Resolved<'_>>, TaskError> {
    let registry = Registry::global();
    steps
        .iter()
        .map(|step| {
            Ok(Resolved {
                step,
                entry: registry.get(&step.task)?,
            })
        })
        .collect()
}

/// Calls a step's task with one item, here (as `task::s(item)` would encode it).
fn call(r: &Resolved<'_>, item: &Value) -> Result<Value, TaskError> {
    let args = serde_json::to_vec(&[item])
        .map_err(|e| internal(&format!("an item cannot be written as JSON: {e}")))?;
    let out = r.entry.call_blocking(&args, Codec::Json)?;
    serde_json::from_slice(&out).map_err(|e| {
        data_error(format!(
            "the task {} answered what is not JSON: {e}",
            r.step.task
        ))
    })
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
    let out = call(first, &item)?;
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
    if let (Agg::Words, Source::Lines(r), true) = (agg, &source, steps.is_empty()) {
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
    let mut acc = Acc::new(agg);
    for_each_item(&source, &mut |x| push(&steps, x, &mut |y| acc.add(y)))?;
    Ok(acc.part)
}

/// Partials merged into one, in order.
#[lovage_macros::task(crate = lovage_core, graph = lovage_graph, name = "lovage.bag.combine")]
pub(crate) fn combine(agg: Agg, parts: Vec<Partial>) -> Result<Partial, TaskError> {
    let mut acc = Acc::new(agg);
    for p in parts {
        acc.merge(p)?;
    }
    Ok(acc.part)
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
        (_, Partial::Sum(Num::Int(i))) => Wire::I64(i),
        (_, Partial::Sum(Num::Float(bits))) => Wire::F64(f64::from_bits(bits)),
        (_, Partial::Best(b)) => Wire::Value(b.unwrap_or(Value::Null)),
        (_, Partial::Mean(n, sum)) => Wire::F64(f64::from_bits(sum) / n as f64),
        (Agg::Words, Partial::Counts(m)) => Wire::Words(m),
        (_, Partial::Counts(m)) => Wire::Pairs(
            m.into_iter()
                .map(|(k, n)| {
                    serde_json::from_str(&k)
                        .map(|v| (v, n))
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
    /// One `partial` task per partition, then `combine` tasks `split_every` wide until one
    /// partial is left.
    pub(crate) fn reduce(&self, g: &Graph, agg: Agg) -> Delayed<Partial> {
        let mut level: Vec<Delayed<Partial>> = self
            .sources
            .iter()
            .map(|s| partial::delayed(g, s.clone(), (*self.steps).clone(), agg))
            .collect();
        loop {
            match level.as_slice() {
                [one] => return *one,
                [] => return combine::delayed(g, agg, Vec::<Partial>::new()),
                _ => {}
            }
            level = level
                .chunks(SPLIT_EVERY)
                .map(|group| combine::delayed(g, agg, group.to_vec()))
                .collect();
        }
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
