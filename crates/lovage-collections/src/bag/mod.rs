//! `Bag<T>`: a lazy collection of items in partitions (Dask's `dask.bag`).
//!
//! Each partition is a source (a list of items, a byte range of a text file) and the chain of
//! element-wise steps applied to it so far, composed into one function that pushes items into a
//! sink. Steps add no nodes; a reduction (or `compute`) adds one node per partition running
//! the whole chain, then a tree of combining nodes.
//!
//! A bag whose sources are data and whose steps are registered tasks (`map_task`,
//! `filter_task`, `flat_map_task`) also keeps itself as data (`tasks::Plan`); its reductions
//! are then the registered tasks of `tasks.rs`, which run on a process pool and on a broker's
//! workers as well as locally, with the same results. Reductions that would take closures have
//! forms naming registered tasks instead (`by_task.rs`: `fold_task`, `group_by_task`, …).

mod acc;
mod by_task;
mod reduce;
mod tasks;
mod text;
mod values;

use std::any::Any;
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph, Picture, Scheduler};

use crate::{internal, Error};

pub use tasks::Data;
pub use text::{read_jsonl, read_text, OnError};

use tasks::{Plan, Source, StepKind};

/// The names of the built-in bag tasks (`lovage.bag.partial`, `.combine`, `.finish`).
pub(crate) const TASKS: [&str; 3] = tasks::NAMES;

/// Keeps the built-in bag tasks linked and checks that they are registered.
pub(crate) fn register() -> Result<(), TaskError> {
    tasks::keep_linked();
    let registry = lovage_core::Registry::global();
    for name in TASKS {
        registry.get(name)?;
    }
    Ok(())
}

/// What a bag holds: any `Clone + Send + Sync` value.
pub trait Item: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Item for T {}

/// A materialised partition's items, type-erased so sources of any type share one node type.
pub(crate) type Chunk = Arc<dyn Any + Send + Sync>;

/// Where items go: an `Err` stops the partition's task with that error.
pub(crate) type Sink<'a, T> = &'a mut dyn FnMut(T) -> Result<(), TaskError>;

/// A partition's composed steps: reads its input (if any) and pushes every item into the sink.
pub(crate) type Pipe<T> =
    Arc<dyn Fn(Option<&Chunk>, Sink<'_, T>) -> Result<(), TaskError> + Send + Sync>;

/// One partition: its input node (none for a source that reads files itself) and its steps.
pub(crate) struct Part<T> {
    pub(crate) input: Option<Delayed<Chunk>>,
    pub(crate) pipe: Pipe<T>,
}

impl<T> Clone for Part<T> {
    fn clone(&self) -> Self {
        Part {
            input: self.input,
            pipe: self.pipe.clone(),
        }
    }
}

impl<T: Item> Part<T> {
    /// Runs the partition's steps on its input value, pushing items into `sink`.
    pub(crate) fn run(&self, inputs: &[Chunk], sink: Sink<'_, T>) -> Result<(), TaskError> {
        (self.pipe)(inputs.first(), sink)
    }

    fn inputs(&self) -> Vec<Delayed<Chunk>> {
        self.input.into_iter().collect()
    }
}

/// A lazy, partitioned collection of `T` in a [`Graph`]. Cheap to clone (steps are shared).
pub struct Bag<'g, T> {
    pub(crate) g: &'g Graph,
    pub(crate) parts: Vec<Part<T>>,
    /// The bag as data while its sources are and every step is a registered task: its
    /// reductions are then registered tasks too (`lovage.bag.*`) and run on every scheduler.
    pub(crate) data: Option<Plan<T>>,
    /// The items of each partition (`Vec<T>`) while the bag is exactly what `from_iter` or
    /// `from_partitions` was given: a task step turns them into data (it knows `T: Data`).
    pub(crate) raw: Option<Vec<Chunk>>,
}

impl<T> Clone for Bag<'_, T> {
    fn clone(&self) -> Self {
        Bag {
            g: self.g,
            parts: self.parts.clone(),
            data: self.data.clone(),
            raw: self.raw.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Bag<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bag({} partitions)", self.parts.len())
    }
}

/// The steps of a materialised partition: push clones of its items.
fn emit_vec<T: Item>() -> Pipe<T> {
    Arc::new(|input: Option<&Chunk>, sink: Sink<'_, T>| {
        let items = input
            .and_then(|c| c.downcast_ref::<Vec<T>>())
            .ok_or_else(|| internal("a bag partition holds items of another type"))?;
        for x in items {
            sink(x.clone())?;
        }
        Ok(())
    })
}

impl<'g, T: Item> Bag<'g, T> {
    /// A bag of `items` cut into `npartitions` partitions of nearly equal length (at least one
    /// partition; some are empty when there are fewer items than partitions).
    pub fn from_iter(g: &'g Graph, items: impl IntoIterator<Item = T>, npartitions: usize) -> Self {
        let items: Vec<T> = items.into_iter().collect();
        let n = npartitions.max(1);
        let (len, mut it) = (items.len(), items.into_iter());
        let parts = (0..n)
            .map(|i| {
                let take = len / n + usize::from(i < len % n);
                it.by_ref().take(take).collect::<Vec<T>>()
            })
            .collect();
        Self::from_partitions(g, parts)
    }

    /// A bag whose partitions are exactly `partitions` (empty ones allowed).
    pub fn from_partitions(g: &'g Graph, partitions: Vec<Vec<T>>) -> Self {
        let raw: Vec<Chunk> = partitions
            .into_iter()
            .map(|p| Arc::new(p) as Chunk)
            .collect();
        let parts = raw
            .iter()
            .map(|p| Part {
                input: Some(g.value(p.clone())),
                pipe: emit_vec::<T>(),
            })
            .collect();
        Bag {
            g,
            parts,
            data: None,
            raw: Some(raw),
        }
    }

    /// The number of partitions.
    pub fn npartitions(&self) -> usize {
        self.parts.len()
    }

    /// The graph the bag adds its nodes to.
    pub fn graph(&self) -> &'g Graph {
        self.g
    }

    /// A bag whose partitions are this one's with one more step (no node is added).
    fn step<U: Item>(&self, wrap: impl Fn(&Pipe<T>) -> Pipe<U>) -> Bag<'g, U> {
        Bag {
            g: self.g,
            parts: self
                .parts
                .iter()
                .map(|p| Part {
                    input: p.input,
                    pipe: wrap(&p.pipe),
                })
                .collect(),
            data: None,
            raw: None,
        }
    }

    /// Applies `f` to every item.
    pub fn map<U: Item>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Bag<'g, U> {
        let f = Arc::new(f);
        self.step(move |prev| {
            let (prev, f) = (prev.clone(), f.clone());
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                prev(input, &mut |x| sink(f(x)))
            })
        })
    }

    /// Applies `f` to every item; an `Err` fails the partition's task with that message.
    pub fn try_map<U: Item, E: std::fmt::Display>(
        &self,
        f: impl Fn(T) -> Result<U, E> + Send + Sync + 'static,
    ) -> Bag<'g, U> {
        let f = Arc::new(f);
        self.step(move |prev| {
            let (prev, f) = (prev.clone(), f.clone());
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                prev(input, &mut |x| match f(x) {
                    Ok(y) => sink(y),
                    Err(e) => Err(crate::data_error(e.to_string())),
                })
            })
        })
    }

    /// Keeps the items for which `keep` is true.
    pub fn filter(&self, keep: impl Fn(&T) -> bool + Send + Sync + 'static) -> Bag<'g, T> {
        let keep = Arc::new(keep);
        self.step(move |prev| {
            let (prev, keep) = (prev.clone(), keep.clone());
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, T>| {
                prev(input, &mut |x| if keep(&x) { sink(x) } else { Ok(()) })
            })
        })
    }

    /// Replaces every item by the items `f` returns (Dask's `map(f).flatten()`).
    pub fn flat_map<U: Item, I: IntoIterator<Item = U>>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Bag<'g, U> {
        let f = Arc::new(f);
        self.step(move |prev| {
            let (prev, f) = (prev.clone(), f.clone());
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                prev(input, &mut |x| f(x).into_iter().try_for_each(&mut *sink))
            })
        })
    }

    /// Replaces each partition by what `f` makes of its items (the partition's items are
    /// gathered into a `Vec` for it).
    pub fn map_partitions<U: Item>(
        &self,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> Bag<'g, U> {
        let f = Arc::new(f);
        self.step(move |prev| {
            let (prev, f) = (prev.clone(), f.clone());
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                let mut items = Vec::new();
                prev(input, &mut |x| {
                    items.push(x);
                    Ok(())
                })?;
                f(items).into_iter().try_for_each(&mut *sink)
            })
        })
    }

    /// One node per partition holding its items (the steps run once), for a bag reused by
    /// several computations (Dask's `persist` without the compute: the nodes run when first
    /// needed and their values are shared by every reader in that run).
    pub fn materialize(&self) -> Bag<'g, T> {
        let parts = self
            .parts
            .iter()
            .map(|p| {
                let part = p.clone();
                let node = self.g.try_local_all(
                    "bag-partition",
                    move |inputs: Vec<Chunk>| {
                        let mut items = Vec::new();
                        part.run(&inputs, &mut |x| {
                            items.push(x);
                            Ok(())
                        })?;
                        Ok(Arc::new(items) as Chunk)
                    },
                    p.inputs(),
                );
                Part {
                    input: Some(node),
                    pipe: emit_vec::<T>(),
                }
            })
            .collect();
        Bag {
            g: self.g,
            parts,
            data: None,
            raw: None,
        }
    }

    /// One handle per partition, each to that partition's items.
    pub fn partitions(&self) -> Vec<Delayed<Arc<Vec<T>>>> {
        self.parts
            .iter()
            .map(|p| {
                let part = p.clone();
                self.g.try_local_all(
                    "bag-partition",
                    move |inputs: Vec<Chunk>| {
                        let mut items = Vec::new();
                        part.run(&inputs, &mut |x| {
                            items.push(x);
                            Ok(())
                        })?;
                        Ok(Arc::new(items))
                    },
                    p.inputs(),
                )
            })
            .collect()
    }

    /// Every item, in partition order. A bag that is data (see [`map_task`](Self::map_task))
    /// gathers them with registered tasks, so it computes on every scheduler.
    pub fn compute(&self, scheduler: Scheduler<'_>) -> Result<Vec<T>, Error> {
        if let Some(plan) = &self.data {
            let acc = plan.reduce(self.g, tasks::Agg::Items);
            return crate::compute(
                self.g,
                scheduler,
                (plan.typed.all)(self.g, tasks::Agg::Items, acc),
            );
        }
        let parts = crate::compute(self.g, scheduler, self.partitions())?;
        Ok(parts.iter().flat_map(|p| p.iter().cloned()).collect())
    }

    /// A picture of the graph [`compute`](Self::compute) runs, one box per operation whatever
    /// the size: `bag-partition` (a partition's source and its fused element-wise steps) or
    /// `lovage.bag.partial`, `lovage.bag.combine`, `lovage.bag.finish` for a bag that is
    /// data, each labelled with its node count, and one edge per pair of operations carrying
    /// its count. It adds the nodes `compute` would (as a reduction does); to draw a
    /// reduction instead, pass its handle to [`Graph::grouped_picture`].
    pub fn picture(&self) -> Result<Picture, Error> {
        if let Some(plan) = &self.data {
            let acc = plan.reduce(self.g, tasks::Agg::Items);
            let all = (plan.typed.all)(self.g, tasks::Agg::Items, acc);
            return Ok(self.g.grouped_picture(&all)?);
        }
        Ok(self.g.grouped_picture(&self.partitions())?)
    }

    /// [`picture`](Self::picture) in Graphviz's DOT language.
    pub fn to_dot(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_dot())
    }

    /// [`picture`](Self::picture) as SVG, laid out here (no Graphviz needed).
    pub fn to_svg(&self) -> Result<String, Error> {
        Ok(self.picture()?.to_svg())
    }
}

impl<'g, T: Data> Bag<'g, T> {
    /// A bag of `items` in `npartitions` partitions, as [`from_iter`](Self::from_iter), whose
    /// items travel as data: its reductions run on every scheduler (a process pool, a broker's
    /// workers) even before any task step.
    pub fn from_data(
        g: &'g Graph,
        items: impl IntoIterator<Item = T>,
        npartitions: usize,
    ) -> Result<Self, Error> {
        let mut bag = Self::from_iter(g, items, npartitions);
        bag.data = Some(Plan::new(bag.sources()?.ok_or_else(|| {
            Error::Input("from_data: the partitions are not the given items".into())
        })?));
        Ok(bag)
    }

    /// The partitions' items as data sources while the bag is exactly what `from_iter` or
    /// `from_partitions` was given (`None` otherwise).
    fn sources(&self) -> Result<Option<Vec<Source>>, Error> {
        let Some(raw) = &self.raw else {
            return Ok(None);
        };
        raw.iter()
            .map(|chunk| {
                let items = chunk.downcast_ref::<Vec<T>>().ok_or_else(|| {
                    Error::Input("a bag partition holds items of another type".into())
                })?;
                items
                    .iter()
                    .map(|x| {
                        serde_json::to_value(x).map_err(|e| {
                            Error::Input(format!("a bag item cannot be written as JSON: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Source::Items)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A bag with one more step, the registered task `task`, as data when this bag is.
    fn task_step<U: Data>(&self, kind: StepKind, task: &str) -> Bag<'g, U> {
        let plan = match (&self.data, self.sources()) {
            (Some(plan), _) => Some(plan.then::<U>(kind, task)),
            (None, Ok(Some(sources))) => Some(Plan::<T>::new(sources).then::<U>(kind, task)),
            // Items that cannot be written as JSON: the step runs locally and fails there.
            (None, _) => None,
        };
        let steps = vec![tasks::Step {
            kind,
            task: task.to_owned(),
        }];
        let mut bag = self.step(move |prev| -> Pipe<U> {
            let (prev, steps) = (prev.clone(), steps.clone());
            if kind == StepKind::Partitions {
                return Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                    let mut items = Vec::new();
                    prev(input, &mut |x: T| {
                        items.push(to_json(&x)?);
                        Ok(())
                    })?;
                    for y in tasks::run_partition_step(&steps[0].task, items)? {
                        sink(from_json(&steps[0].task, y)?)?;
                    }
                    Ok(())
                });
            }
            Arc::new(move |input: Option<&Chunk>, sink: Sink<'_, U>| {
                prev(input, &mut |x: T| {
                    tasks::run_steps(&steps, to_json(&x)?, &mut |y| {
                        sink(from_json(&steps[0].task, y)?)
                    })
                })
            })
        });
        bag.data = plan;
        bag
    }

    /// Applies the registered task `task` (its name, `my_task::NAME`: a `#[lovage::task]`
    /// with one argument, a `T`, answering a `U`) to every item. Unlike [`map`](Self::map),
    /// this runs on every scheduler: on a bag that is data (from `from_iter`,
    /// `from_partitions`, `from_data`, `read_text` or `read_jsonl`, and task steps only), the
    /// reductions are registered tasks too, one per partition running every item through the
    /// task bodies in process (no message per item). Items cross as JSON values between steps.
    pub fn map_task<U: Data>(&self, task: &str) -> Bag<'g, U> {
        self.task_step(StepKind::Map, task)
    }

    /// Replaces each partition's items by what the registered task `task` (one argument, the
    /// partition's items as a `Vec<T>`; answering a `Vec<U>`) makes of them (Dask's
    /// `map_partitions`). Runs on every scheduler, as [`map_task`](Self::map_task): in the
    /// partition's task, the steps before it item by item, the steps after it on its answer.
    pub fn map_partitions_task<U: Data>(&self, task: &str) -> Bag<'g, U> {
        self.task_step(StepKind::Partitions, task)
    }

    /// Keeps the items for which the registered task `task` (one argument, a `T`; answering a
    /// `bool`) answers `true`. Runs on every scheduler, as [`map_task`](Self::map_task).
    pub fn filter_task(&self, task: &str) -> Bag<'g, T> {
        self.task_step(StepKind::Filter, task)
    }

    /// Replaces every item by the items the registered task `task` (one argument, a `T`;
    /// answering a list of `U`) answers. Runs on every scheduler, as
    /// [`map_task`](Self::map_task).
    pub fn flat_map_task<U: Data>(&self, task: &str) -> Bag<'g, U> {
        self.task_step(StepKind::FlatMap, task)
    }
}

/// An item as a task step's argument.
fn to_json<T: Data>(x: &T) -> Result<serde_json::Value, TaskError> {
    serde_json::to_value(x)
        .map_err(|e| crate::data_error(format!("a bag item cannot be written as JSON: {e}")))
}

/// A task step's answer as the next step's item.
fn from_json<U: Data>(task: &str, y: serde_json::Value) -> Result<U, TaskError> {
    serde_json::from_value(y).map_err(|e| {
        crate::data_error(format!(
            "{task}: its answer is not a bag item of the expected type: {e}"
        ))
    })
}

impl<'g> Bag<'g, serde_json::Value> {
    /// The value under `key` of every item (an object); an item without it fails the task,
    /// naming the key.
    pub fn pluck(&self, key: &str) -> Bag<'g, serde_json::Value> {
        let key = key.to_string();
        self.try_map(move |mut v: serde_json::Value| match v.get_mut(&key) {
            Some(x) => Ok(x.take()),
            None => Err(format!("pluck: an item has no key {key:?}: {v}")),
        })
    }

    /// The value under `key` of every item, or `default` where it is missing.
    pub fn pluck_or(&self, key: &str, default: serde_json::Value) -> Bag<'g, serde_json::Value> {
        let key = key.to_string();
        self.map(move |mut v: serde_json::Value| match v.get_mut(&key) {
            Some(x) => x.take(),
            None => default.clone(),
        })
    }
}
