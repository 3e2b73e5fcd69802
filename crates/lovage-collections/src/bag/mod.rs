//! `Bag<T>`: a lazy collection of items in partitions (Dask's `dask.bag`).
//!
//! Each partition is a source (a list of items, a byte range of a text file) and the chain of
//! element-wise steps applied to it so far, composed into one function that pushes items into a
//! sink. Steps add no nodes; a reduction (or `compute`) adds one node per partition running
//! the whole chain, then a tree of combining nodes.

mod reduce;
mod text;

use std::any::Any;
use std::sync::Arc;

use lovage_core::TaskError;
use lovage_graph::{Delayed, Graph, Scheduler};

use crate::{internal, Error};

pub use text::{read_jsonl, read_text, OnError};

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
    /// Set by `read_text` while the bag is exactly the files' lines: `word_frequencies` then
    /// counts over the raw bytes instead of building a `String` per line.
    pub(crate) text: Option<Arc<Vec<text::TextRange>>>,
}

impl<T> Clone for Bag<'_, T> {
    fn clone(&self) -> Self {
        Bag {
            g: self.g,
            parts: self.parts.clone(),
            text: self.text.clone(),
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
        let parts = partitions
            .into_iter()
            .map(|p| Part {
                input: Some(g.value(Arc::new(p) as Chunk)),
                pipe: emit_vec::<T>(),
            })
            .collect();
        Bag {
            g,
            parts,
            text: None,
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
            text: None,
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
            text: None,
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

    /// Every item, in partition order.
    pub fn compute(&self, scheduler: Scheduler<'_>) -> Result<Vec<T>, Error> {
        let parts = crate::compute(self.g, scheduler, self.partitions())?;
        Ok(parts.iter().flat_map(|p| p.iter().cloned()).collect())
    }
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
