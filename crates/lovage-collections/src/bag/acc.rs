//! What a data bag's reduction computes inside its tasks: which reduction ([`Agg`]), its
//! partial result ([`Partial`], what travels between `partial`, `combine` and `finish`), and the
//! accumulator that folds items and partials into one ([`Acc`]). Every scheduler runs these.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use lovage_core::TaskError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tasks::Task;
use super::values::{add_num, compare, incomparable, number, write_line, Num};
use crate::{data_error, internal, io_error};

/// Which reduction a `partial`/`combine`/`finish` computes. The registered tasks it names are
/// called in process, one call per item (or per partial), as the step tasks are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Dask's `fold`: each partition folds its items from `initial` with `binop(acc, item)`,
    /// each combining node folds its partials from `initial` with `combine(acc, partial)`.
    Fold {
        binop: String,
        combine: String,
        initial: Value,
    },
    /// `fold` without an initial value: the first item (or partial) starts; nothing at all
    /// gives no value.
    Reduce {
        binop: String,
        combine: String,
    },
    /// The `k` largest items by the answer of the task `key` (by the items themselves without
    /// one), largest first, ties in order of appearance.
    TopK {
        k: usize,
        key: Option<String>,
    },
    /// The first `n` items, in order.
    Take(usize),
    /// The items grouped by the answer of the task `key`, each group in order.
    GroupBy {
        key: String,
    },
    /// Dask's `foldby`: per key (the task `key`'s answer), items fold from `initial` with
    /// `binop`; a key's per-partition results combine with `combine`.
    FoldBy {
        key: String,
        binop: String,
        combine: String,
        initial: Value,
    },
    /// Writes the partition's items to the file, one per line (`to_textfiles`); the partial is
    /// the file's path, as an `Items` partial (so `combine` and `finish` are `Items`').
    Write(PathBuf),
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
    /// A fold's accumulator: at most one value (a list, as JSON would read a null
    /// accumulator in an `Option` back as none).
    Fold(Vec<Value>),
    /// `(key, item)` of the largest so far, largest first.
    Top(Vec<(Value, Value)>),
    /// `(key, items)` per key, in order of the keys' first appearance.
    Groups(Vec<(Value, Vec<Value>)>),
    /// `(key, accumulator)` per key, in order of the keys' first appearance.
    ByKey(Vec<(Value, Value)>),
}

/// The tasks a reduction calls, found in this process's registry.
#[derive(Default)]
struct Tasks {
    key: Option<Task>,
    binop: Option<Task>,
    combine: Option<Task>,
}

/// The state of a reduction inside one task.
pub(crate) struct Acc {
    agg: Agg,
    part: Partial,
    /// The JSON text of the distinct items kept so far.
    seen: HashSet<String>,
    /// Where each key (by its JSON text) is in a `Groups` or `ByKey` partial.
    index: HashMap<String, usize>,
    tasks: Tasks,
    /// The file a `Write` partition goes to.
    out: Option<BufWriter<File>>,
}

/// The error that stops a partition early (`take` has its items): never seen by a caller.
const ENOUGH: &str = "lovage.bag.Enough";

impl Acc {
    /// An empty accumulator; finds the tasks the reduction names (an unknown one fails,
    /// listing those registered) and opens a `Write`'s file.
    pub(crate) fn new(agg: Agg) -> Result<Acc, TaskError> {
        let find = |name: &str| Task::find(name).map(Some);
        let mut tasks = Tasks::default();
        let mut out = None;
        let part = match &agg {
            Agg::Items | Agg::Take(_) | Agg::Write(_) => Partial::Items(Vec::new()),
            Agg::Count => Partial::Count(0),
            Agg::Sum => Partial::Sum(Num::Int(0)),
            Agg::Min | Agg::Max => Partial::Best(None),
            Agg::Mean => Partial::Mean(0, 0f64.to_bits()),
            Agg::Frequencies | Agg::Words => Partial::Counts(HashMap::new()),
            Agg::Distinct => Partial::Distinct(Vec::new()),
            Agg::Fold {
                binop,
                combine,
                initial,
            } => {
                (tasks.binop, tasks.combine) = (find(binop)?, find(combine)?);
                Partial::Fold(vec![initial.clone()])
            }
            Agg::Reduce { binop, combine } => {
                (tasks.binop, tasks.combine) = (find(binop)?, find(combine)?);
                Partial::Fold(Vec::new())
            }
            Agg::TopK { key, .. } => {
                tasks.key = key.as_deref().map(Task::find).transpose()?;
                Partial::Top(Vec::new())
            }
            Agg::GroupBy { key } => {
                tasks.key = find(key)?;
                Partial::Groups(Vec::new())
            }
            Agg::FoldBy {
                key,
                binop,
                combine,
                ..
            } => {
                tasks = Tasks {
                    key: find(key)?,
                    binop: find(binop)?,
                    combine: find(combine)?,
                };
                Partial::ByKey(Vec::new())
            }
        };
        if let Agg::Write(path) = &agg {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io_error(dir.display(), e))?;
            }
            let f = File::create(path).map_err(|e| io_error(path.display(), e))?;
            out = Some(BufWriter::new(f));
        }
        Ok(Acc {
            agg,
            part,
            seen: HashSet::new(),
            index: HashMap::new(),
            tasks,
            out,
        })
    }

    /// Folds one item in.
    pub(crate) fn add(&mut self, x: Value) -> Result<(), TaskError> {
        match (&mut self.part, &self.agg) {
            (Partial::Items(v), Agg::Take(n)) => {
                if v.len() < *n {
                    v.push(x);
                }
            }
            (Partial::Items(_), Agg::Write(path)) => {
                let out = self
                    .out
                    .as_mut()
                    .ok_or_else(|| internal("no file to write"))?;
                write_line(out, &x).map_err(|e| io_error(path.display(), e))?;
            }
            (Partial::Items(v), _) => v.push(x),
            (Partial::Count(n), _) => *n += 1,
            (Partial::Sum(s), _) => *s = add_num(*s, number(&x, "sum")?)?,
            (Partial::Best(b), agg) => {
                let better = match b {
                    None => true,
                    Some(cur) => {
                        let o = compare(&x, cur).ok_or_else(|| incomparable("min/max", &x, cur))?;
                        if *agg == Agg::Min {
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
            (Partial::Fold(v), _) => {
                let next = match v.pop() {
                    Some(a) => need(&self.tasks.binop)?.call(&[&a, &x])?,
                    None => x,
                };
                v.push(next);
            }
            (Partial::Top(v), Agg::TopK { k, .. }) => {
                let key = match &self.tasks.key {
                    Some(t) => t.call(&[&x])?,
                    None => x.clone(),
                };
                v.push((key, x));
                if v.len() >= 2 * (*k).max(1) {
                    keep_top(v, *k)?;
                }
            }
            (Partial::Groups(v), _) => {
                let key = need(&self.tasks.key)?.call(&[&x])?;
                match self.index.get(&key.to_string()) {
                    Some(&i) => v[i].1.push(x),
                    None => {
                        self.index.insert(key.to_string(), v.len());
                        v.push((key, vec![x]));
                    }
                }
            }
            (Partial::ByKey(v), Agg::FoldBy { initial, .. }) => {
                let key = need(&self.tasks.key)?.call(&[&x])?;
                let binop = need(&self.tasks.binop)?;
                match self.index.get(&key.to_string()) {
                    Some(&i) => v[i].1 = binop.call(&[&v[i].1, &x])?,
                    None => {
                        let a = binop.call(&[initial, &x])?;
                        self.index.insert(key.to_string(), v.len());
                        v.push((key, a));
                    }
                }
            }
            _ => return Err(internal("a bag's partial of another reduction")),
        }
        Ok(())
    }

    /// True once more items cannot change the partial (`take` has its items).
    fn full(&self) -> bool {
        matches!((&self.part, &self.agg), (Partial::Items(v), Agg::Take(n)) if v.len() >= *n)
    }

    /// Merges a partial of the same reduction in (the partials of earlier items first).
    pub(crate) fn merge(&mut self, other: Partial) -> Result<(), TaskError> {
        match (&mut self.part, other) {
            (Partial::Items(v), Partial::Items(o)) => {
                v.extend(o);
                if let Agg::Take(n) = self.agg {
                    v.truncate(n);
                }
            }
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
            (Partial::Fold(v), Partial::Fold(o)) => {
                for b in o {
                    let next = match v.pop() {
                        Some(a) => need(&self.tasks.combine)?.call(&[&a, &b])?,
                        None => b,
                    };
                    v.push(next);
                }
            }
            (Partial::Top(v), Partial::Top(o)) => {
                v.extend(o);
                if let Agg::TopK { k, .. } = self.agg {
                    keep_top(v, k)?;
                }
            }
            (Partial::Groups(v), Partial::Groups(o)) => {
                for (key, items) in o {
                    match self.index.get(&key.to_string()) {
                        Some(&i) => v[i].1.extend(items),
                        None => {
                            self.index.insert(key.to_string(), v.len());
                            v.push((key, items));
                        }
                    }
                }
            }
            (Partial::ByKey(v), Partial::ByKey(o)) => {
                for (key, b) in o {
                    match self.index.get(&key.to_string()) {
                        Some(&i) => v[i].1 = need(&self.tasks.combine)?.call(&[&v[i].1, &b])?,
                        None => {
                            self.index.insert(key.to_string(), v.len());
                            v.push((key, b));
                        }
                    }
                }
            }
            _ => return Err(internal("a bag's partials of two different reductions")),
        }
        Ok(())
    }

    /// The partial result: a `Write`'s file flushed (its path), a `top_k`'s list cut to `k`.
    pub(crate) fn into_partial(mut self) -> Result<Partial, TaskError> {
        if let (Some(mut out), Agg::Write(path)) = (self.out.take(), &self.agg) {
            out.flush().map_err(|e| io_error(path.display(), e))?;
            let path = path.to_string_lossy().into_owned();
            return Ok(Partial::Items(vec![Value::String(path)]));
        }
        if let (Partial::Top(v), Agg::TopK { k, .. }) = (&mut self.part, &self.agg) {
            keep_top(v, *k)?;
        }
        Ok(self.part)
    }
}

/// Folds the items `run` pushes into a partial of `agg`, stopping `run` early (with an error
/// only this function sees) once more items cannot change the result.
pub(crate) fn fold_items(
    agg: Agg,
    run: impl FnOnce(&mut dyn FnMut(Value) -> Result<(), TaskError>) -> Result<(), TaskError>,
) -> Result<Partial, TaskError> {
    let mut acc = Acc::new(agg)?;
    if !acc.full() {
        let ran = run(&mut |x| {
            acc.add(x)?;
            if acc.full() {
                Err(TaskError::new(
                    ENOUGH,
                    "the partition has given enough items",
                ))
            } else {
                Ok(())
            }
        });
        match ran {
            Err(e) if e.kind != ENOUGH => return Err(e),
            _ => {}
        }
    }
    acc.into_partial()
}

/// A task the reduction needs (found by `Acc::new`).
fn need(task: &Option<Task>) -> Result<&Task, TaskError> {
    task.as_ref()
        .ok_or_else(|| internal("a bag reduction's task was not looked up"))
}

/// Keeps the `k` entries with the largest keys, largest first; the sort is stable, so among
/// equal keys the earlier item (the list is in order of appearance between sorts) stays first.
fn keep_top(v: &mut Vec<(Value, Value)>, k: usize) -> Result<(), TaskError> {
    let mut failed = None;
    v.sort_by(|a, b| {
        compare(&b.0, &a.0).unwrap_or_else(|| {
            failed.get_or_insert_with(|| incomparable("top_k", &a.0, &b.0));
            Ordering::Equal
        })
    });
    v.truncate(k);
    failed.map_or(Ok(()), Err)
}
